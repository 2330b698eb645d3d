"""Signing what ``sealpy push`` ships: a cosign-style signature for each pushed manifest.

``sealpy push --sign-by-sigstore-private-key KEY [--sign-passphrase-file F]`` (skopeo's
spellings) pushes the image, then for its manifest digest — and, for a multi-platform image,
for the index and every manifest under it, as ``cosign sign --recursive`` does — a
signature under ``sha256-<hex>.sig`` in the destination repository, appended to the
signatures already there (cosign keeps every signature of a digest in one manifest).

The identity signed (``critical.identity.docker-reference``) is what cosign writes: the
destination *repository*, without tag or digest, with Docker Hub spelled
``index.docker.io`` (go-containerregistry's ``Repository.Name()``). Verifiers that check
identities against a tag (containers-policy's default ``matchRepoDigestOrExact``) need
``matchRepository`` for such signatures, exactly as for signatures made by cosign.

The key is loaded — and an encrypted one decrypted — *before* anything is pushed, so a
wrong passphrase pushes nothing. The passphrase comes from the first line of the
passphrase file, else from a prompt when stdin is a terminal; it and the key never appear
in any message (errors name files only) and no child process is involved.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.errors import SealpyError, UsageError
from sealpy.core.image.walk import walk
from sealpy.core.reference import ImageReference
from sealpy.core.store.layout import Store, StoredImage
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SimpleSigningPayload,
    signature_tag,
)
from sealpy.core.supplychain.errors import SigningKeyError
from sealpy.core.supplychain.publish import fetch_attachment, push_attachment
from sealpy.core.supplychain.sign import AttachmentImage, signature_image
from sealpy.core.transport.remote import RegistryClient

# go-containerregistry rewrites "docker.io" to this, so cosign's identities name it.
COSIGN_DOCKER_HUB = "index.docker.io"
_ENCRYPTED_LABELS = (keys.SIGSTORE_PRIVATE_KEY_LABEL, keys.COSIGN_PRIVATE_KEY_LABEL)

Prompt = Callable[[str], str]


class SigningFailedError(SealpyError):
    """The image was pushed but a signature of it was not: the message says which."""


@dataclass(frozen=True)
class Signed:
    """One manifest signed: its digest, and the ``.sig`` manifest now holding its
    signatures (``count`` of them, a new one last)."""

    manifest_digest: str
    tag: str
    signature_manifest: str
    count: int
    added: bool = True  # False: this key had signed it already; nothing was pushed


def cosign_identity(destination: ImageReference) -> str:
    """The ``docker-reference`` cosign signs for an image pushed to ``destination``: its
    repository, tag and digest left out, Docker Hub as ``index.docker.io``."""
    registry = destination.registry
    if registry == "docker.io":
        registry = COSIGN_DOCKER_HUB
    return f"{registry}/{destination.repository}"


def _is_encrypted(data: bytes) -> bool:
    """Whether the first PEM block of a key file is sigstore's encrypted key (the loader
    reports every other problem)."""
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"-----BEGIN ") and line.endswith(b"-----"):
            return line[11:-5].decode("ascii", "replace") in _ENCRYPTED_LABELS
    return False


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        return False


def load_signing_key(
    key_file: Path,
    passphrase_file: Path | None = None,
    *,
    prompt: Prompt | None = None,
    interactive: bool | None = None,
) -> keys.PrivateKey:
    """The private key of ``key_file``: an unencrypted PKCS#8 PEM as is; sigstore's
    encrypted PEM with the first line of ``passphrase_file``, else a passphrase asked on
    the terminal (only when stdin is one: ``interactive`` overrides the check, ``prompt``
    the asking), else a :class:`SigningKeyError` saying how to give it."""
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read private key {key_file}: {exc.strerror or exc}"
        ) from None
    what = f"private key {key_file}"
    if not _is_encrypted(data):
        return keys.load_private_key(data, None, what=what)
    if passphrase_file is not None:
        passphrase = keys.read_passphrase_file(passphrase_file)
    elif interactive if interactive is not None else _stdin_is_terminal():
        ask = prompt or getpass.getpass
        try:
            passphrase = ask(f"Passphrase for key {key_file}: ").encode()
        except EOFError:
            raise SigningKeyError(f"{what}: no passphrase given") from None
    else:
        raise SigningKeyError(
            f"{what} is encrypted: give its passphrase with --sign-passphrase-file "
            "(stdin is not a terminal to ask for it)"
        )
    return keys.load_private_key(data, passphrase, what=what)


def signed_digests(store: Store, image: StoredImage) -> list[str]:
    """The manifest digests a push of ``image`` signs: the top manifest first, then (for
    an index) every manifest under it, each once."""
    top = store.manifest(image)
    below = [node.manifest.digest for node in walk(top, store.manifest)]
    return [top.digest, *(d for d in dict.fromkeys(below) if d != top.digest)]


def sign_pushed(
    client: RegistryClient,
    destination: ImageReference,
    digests: list[str],
    private_key: keys.PrivateKey,
) -> list[Signed]:
    """Sign each of ``digests`` (already pushed to ``destination``'s repository) as
    cosign does, appending to an existing ``sha256-<hex>.sig`` there — unless that already
    holds this key's signature of the same payload (cosign's duplicate check)."""
    repository = destination.with_tag(None).with_digest(None)
    identity = cosign_identity(destination)
    done: list[Signed] = []
    for digest in digests:
        tag = signature_tag(digest)
        try:
            existing = fetch_attachment(client, repository, tag)
            payload = SimpleSigningPayload(identity, digest).to_bytes()
            added = not _already_signed(existing, payload, private_key.public_key())
            if added:
                image = signature_image(digest, identity, private_key, existing=existing)
                push_attachment(client, repository, image, tag)
            else:
                assert existing is not None  # (for mypy: only then already signed)
                image = existing
        except SealpyError as exc:
            raise SigningFailedError(
                f"{destination.name}@{digest} was pushed, but its signature was not "
                f"({len(done)} of {len(digests)} signed): {exc}"
            ) from exc
        done.append(Signed(digest, tag, image.digest, len(image.manifest.layers), added))
    return done


def _already_signed(
    existing: AttachmentImage | None, payload: bytes, public_key: keys.PublicKey
) -> bool:
    """Whether ``existing`` holds a signature of exactly ``payload`` that verifies with
    ``public_key``: cosign then adds nothing (so signing on every push does not grow the
    ``.sig`` manifest)."""
    if existing is None:
        return False
    for layer in existing.layers():
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or layer.data != payload:
            continue
        try:
            signature = base64.b64decode(
                layer.annotations.get(SIGNATURE_ANNOTATION, ""), validate=True
            )
        except binascii.Error:
            continue
        if signature and keys.verify(public_key, payload, signature):
            return True
    return False


def check_flags(key_file: Path | None, passphrase_file: Path | None) -> None:
    """``--sign-passphrase-file`` means nothing without a key to sign with."""
    if passphrase_file is not None and key_file is None:
        raise UsageError("--sign-passphrase-file needs --sign-by-sigstore-private-key")
