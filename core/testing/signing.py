"""A test signer: cosign-style signatures, attestations, SBOMs and OCI 1.1 referrers.

For sealpy's tests and for plugin authors who test signature handling against a real
registry. Everything it makes has cosign's layout (see :mod:`sealpy.core.supplychain.sign`),
so a copy that rewrites a signature manifest changes its digest and is caught::

    signer = TestSigner()
    sig = signer.sign(image.digest, "127.0.0.1:5000/library/app")     # an AttachmentImage
    signer.push_signature("127.0.0.1:5000", "library/app", image.digest,
                          "127.0.0.1:5000/library/app")                # sha256-<hex>.sig
    keys = signer.write_keys(tmp_path)     # cosign.pub, cosign.key (+ passphrase), pkcs8

``tamper`` makes the classic bad signatures: ``"payload"`` (the payload changed after
signing), ``"signature"`` (the signature bytes corrupted), ``"annotation"`` (no signature
annotation). A wrong key is another :class:`TestSigner`; a wrong identity or digest is
just another argument.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, Manifest, sha256_digest
from sealpy.core.reference import ImageReference
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import (
    DSSE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SignatureCandidate,
    SimpleSigningPayload,
    attestation_tag,
    candidates,
    sbom_tag,
    signature_tag,
)
from sealpy.core.supplychain.publish import fetch_attachment, push_attachment
from sealpy.core.supplychain.sign import (
    ZERO_TIME,
    AttachmentImage,
    AttachmentLayer,
    attachment_image,
    sign_payload,
    signature_layer,
)

TEST_PASSPHRASE = b"sealpy-test-passphrase"  # a fixture secret: tests grep output for it
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v0.1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
TAMPERINGS = ("payload", "signature", "annotation")


@dataclass(frozen=True)
class KeyFiles:
    """Where :meth:`TestSigner.write_keys` put the keys."""

    public_key: Path  # cosign.pub
    encrypted_private_key: Path  # cosign.key, sigstore's encrypted PEM
    passphrase_file: Path
    pkcs8_private_key: Path  # unencrypted PKCS#8 PEM


class TestSigner:
    """An ECDSA P-256 key pair (new unless ``private_key`` is given) that signs as cosign."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, private_key: keys.PrivateKey | None = None, *, passphrase: bytes = TEST_PASSPHRASE
    ) -> None:
        self.private_key = private_key or keys.generate_private_key()
        self.passphrase = passphrase
        self._encrypted: bytes | None = None

    # --- keys ----------------------------------------------------------------------------

    @property
    def public_key(self) -> keys.PublicKey:
        return self.private_key.public_key()

    @property
    def public_key_pem(self) -> bytes:
        return keys.public_key_pem(self.private_key)

    @property
    def key_data(self) -> str:
        """The public key as a policy's ``keyData`` (base64 of the PEM)."""
        return base64.b64encode(self.public_key_pem).decode()

    @property
    def pkcs8_pem(self) -> bytes:
        return keys.unencrypted_private_key_pem(self.private_key)

    @property
    def encrypted_pem(self) -> bytes:
        """sigstore's encrypted PEM, sealed with :attr:`passphrase` (made once: scrypt is slow)."""
        if self._encrypted is None:
            self._encrypted = keys.encrypt_private_key(self.private_key, self.passphrase)
        return self._encrypted

    def write_keys(self, directory: Path) -> KeyFiles:
        directory.mkdir(parents=True, exist_ok=True)
        files = KeyFiles(
            directory / "cosign.pub",
            directory / "cosign.key",
            directory / "passphrase",
            directory / "pkcs8.key",
        )
        files.public_key.write_bytes(self.public_key_pem)
        files.encrypted_private_key.write_bytes(self.encrypted_pem)
        files.passphrase_file.write_bytes(self.passphrase + b"\n")
        files.pkcs8_private_key.write_bytes(self.pkcs8_pem)
        return files

    # --- signatures ----------------------------------------------------------------------

    def signature_layer(
        self,
        manifest_digest: str,
        docker_reference: str,
        *,
        tamper: str | None = None,
        optional: Mapping[str, Any] | None = None,
    ) -> AttachmentLayer:
        """One simple-signing layer (optionally tampered with, see the module docstring)."""
        if tamper is not None and tamper not in TAMPERINGS:
            raise ValueError(f"tamper must be one of {TAMPERINGS}, not {tamper!r}")
        payload = SimpleSigningPayload(docker_reference, manifest_digest, optional).to_bytes()
        signature = sign_payload(payload, self.private_key)
        if tamper == "payload":
            # What an attacker would do: point the signed payload at other content.
            payload = payload.replace(manifest_digest[7:].encode(), b"0" * 64, 1)
        elif tamper == "signature":
            raw = bytearray(base64.b64decode(signature))
            raw[-1] ^= 0x01
            signature = base64.b64encode(bytes(raw)).decode()
        layer = signature_layer(payload, signature)
        if tamper == "annotation":
            annotations = {k: v for k, v in layer.annotations.items() if k != SIGNATURE_ANNOTATION}
            layer = AttachmentLayer(layer.media_type, layer.data, annotations)
        return layer

    def sign(
        self,
        manifest_digest: str,
        docker_reference: str,
        *,
        tamper: str | None = None,
        existing: AttachmentImage | None = None,
        optional: Mapping[str, Any] | None = None,
        created: str = ZERO_TIME,
    ) -> AttachmentImage:
        """A cosign signature manifest signing ``manifest_digest`` as ``docker_reference``
        (appended to ``existing`` when given)."""
        layer = self.signature_layer(
            manifest_digest, docker_reference, tamper=tamper, optional=optional
        )
        return attachment_image([layer], existing=existing, created=created)

    def push_signature(
        self,
        registry: str,
        repository: str,
        manifest_digest: str,
        docker_reference: str,
        *,
        client: Any = None,
        append: bool = True,
        tamper: str | None = None,
    ) -> AttachmentImage:
        """Sign and push to ``registry/repository`` under ``sha256-<hex>.sig`` with sealpy's
        own client; with ``append`` (cosign's behaviour) the signature is added to the
        ``.sig`` manifest already there."""
        ref = ImageReference(registry, repository, None, None)
        with _client(client) as active:
            existing = (
                fetch_attachment(active, ref, signature_tag(manifest_digest)) if append else None
            )
            image = self.sign(manifest_digest, docker_reference, tamper=tamper, existing=existing)
            push_attachment(active, ref, image, signature_tag(manifest_digest))
        return image

    # --- attestations --------------------------------------------------------------------

    def attestation(
        self,
        manifest_digest: str,
        subject_name: str,
        *,
        predicate_type: str = "https://slsa.dev/provenance/v0.2",
        predicate: Mapping[str, Any] | None = None,
        existing: AttachmentImage | None = None,
    ) -> AttachmentImage:
        """A cosign attestation manifest (``.att``): a DSSE envelope over an in-toto
        statement about ``manifest_digest``, signed with this key; the layer carries the
        ``predicateType`` annotation and an empty signature annotation, as cosign writes."""
        statement = {
            "_type": IN_TOTO_STATEMENT,
            "predicateType": predicate_type,
            "subject": [{"name": subject_name, "digest": {"sha256": manifest_digest[7:]}}],
            "predicate": dict(predicate or {"builder": {"id": "sealpy-tests"}}),
        }
        body = json.dumps(statement, separators=(",", ":")).encode()
        signature = keys.sign(self.private_key, dsse_pae(IN_TOTO_PAYLOAD_TYPE, body))
        envelope = {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
        layer = AttachmentLayer(
            DSSE_MEDIA_TYPE,
            json.dumps(envelope, separators=(",", ":")).encode(),
            {"predicateType": predicate_type, SIGNATURE_ANNOTATION: ""},
        )
        return attachment_image([layer], existing=existing)


def dsse_pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def sbom_image(document: bytes, media_type: str = "text/spdx+json") -> AttachmentImage:
    """An SBOM attachment (``.sbom``) as ``cosign attach sbom`` pushes it: one layer."""
    return attachment_image([AttachmentLayer(media_type, document)])


def referrer_image(
    subject: Descriptor,
    artifact_type: str,
    blob: bytes,
    *,
    blob_media_type: str = "application/json",
    annotations: Mapping[str, str] | None = None,
) -> AttachmentImage:
    """An OCI 1.1 referrer of ``subject``: an artifact manifest with ``artifactType``, the
    empty config, one layer and ``subject``."""
    layer = AttachmentLayer(blob_media_type, blob)
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(EMPTY_CONFIG),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [{"mediaType": blob_media_type, "digest": layer.digest, "size": len(blob)}],
        "subject": subject.to_json(),
    }
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = Manifest.parse(
        json.dumps(document, separators=(",", ":")).encode(), media.OCI_MANIFEST, what="referrer"
    )
    return AttachmentImage(
        manifest, {sha256_digest(EMPTY_CONFIG): EMPTY_CONFIG, layer.digest: blob}
    )


def referrers_index(referrers: Sequence[AttachmentImage]) -> Manifest:
    """The OCI 1.1 referrers tag fallback (``sha256-<hex>``): an index listing each
    referrer with its ``artifactType`` and annotations."""
    entries = []
    for referrer in referrers:
        entry = referrer.manifest.descriptor().to_json()
        entry["artifactType"] = referrer.manifest.json.get("artifactType", "")
        if referrer.manifest.json.get("annotations"):
            entry["annotations"] = referrer.manifest.json["annotations"]
        entries.append(entry)
    document = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
    return Manifest.parse(json.dumps(document, separators=(",", ":")).encode(), media.OCI_INDEX)


def signature_candidates(
    image: AttachmentImage, source: str = "signature"
) -> list[SignatureCandidate]:
    """The signatures of a ``.sig`` attachment image, ready for ``Policy.evaluate``."""
    return candidates(image.manifest, lambda d: image.blobs[d.digest], source)


def push_attachments(
    registry: str,
    repository: str,
    manifest_digest: str,
    *,
    attestation: AttachmentImage | None = None,
    sbom: AttachmentImage | None = None,
    client: Any = None,
) -> None:
    """Push an attestation (``.att``) and/or an SBOM (``.sbom``) for ``manifest_digest``."""
    ref = ImageReference(registry, repository, None, None)
    with _client(client) as active:
        if attestation is not None:
            push_attachment(active, ref, attestation, attestation_tag(manifest_digest))
        if sbom is not None:
            push_attachment(active, ref, sbom, sbom_tag(manifest_digest))


def push_referrer(
    registry: str,
    repository: str,
    referrer: AttachmentImage,
    *,
    fallback_tag: bool = True,
    client: Any = None,
) -> None:
    """Push ``referrer`` by digest and, with ``fallback_tag`` (registries without the
    referrers API, such as distribution 2.8), an index of it under ``sha256-<hex>`` of its
    subject."""
    from sealpy.core.supplychain.cosign import referrers_tag

    ref = ImageReference(registry, repository, None, None)
    with _client(client) as active:
        push_attachment(active, ref, referrer, None)
        if fallback_tag:
            subject = referrer.manifest.json["subject"]["digest"]
            index = referrers_index([referrer])
            repo = active.repository(ref.with_tag(referrers_tag(subject)))
            repo.put_manifest(referrers_tag(subject), index)


class _client:
    """The given client, or a new one closed at the end."""

    def __init__(self, client: Any) -> None:
        self.given = client
        self.own: Any = None

    def __enter__(self) -> Any:
        if self.given is not None:
            return self.given
        from sealpy.core.transport.remote import RegistryClient

        self.own = RegistryClient()
        return self.own

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.close()
