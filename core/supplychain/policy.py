"""The signature policy: containers-policy.json(5), evaluated by sealpy itself.

Debian's skopeo is built without sigstore, so sealpy reads the policy and verifies cosign
signatures on its own (with ``cryptography``), for both strategies. What it implements:

- ``default`` and ``transports.docker`` scopes (see :func:`identity.scope_candidates`:
  the most specific scope that exists applies, and only it); other transports are parsed
  and checked, not used (sealpy only pulls ``docker`` images).
- ``insecureAcceptAnything``, ``reject``, and ``sigstoreSigned`` with ``keyPath``,
  ``keyPaths``, ``keyData`` or ``keyDatas`` (ECDSA public keys) and ``signedIdentity``
  (``matchRepoDigestOrExact`` — the default —, ``matchExact``, ``matchRepository``,
  ``exactReference``, ``exactRepository``, ``remapIdentity``).

Everything else is **fail-closed**: ``signedBy`` (GPG), ``signedBaseLayer``,
``sigstoreSigned`` with ``fulcio``, ``pki`` or a Rekor key, an unknown requirement type,
identity type or field, and a key that cannot be loaded do not break the whole file (as
they do in containers/image) but reject every image of the scopes they are in, saying why.
A file that is not a policy at all (not JSON, no ``default``, an empty requirement list, a
requirement without a type, a field of the wrong type) is a :class:`PolicyFileError`.

An image is accepted when *all* requirements of its scope are; a ``sigstoreSigned``
requirement is satisfied by *one* signature that verifies with one of its keys, signs
the image's manifest digest, and claims an identity the rule accepts. The payload of a
signature is parsed only after its signature verified.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealpy.core.image.media import JSONTooDeepError, load_json
from sealpy.core.reference import ImageReference
from sealpy.core.supplychain import identity as ids
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import SignatureCandidate, SimpleSigningPayload
from sealpy.core.supplychain.errors import (
    PolicyFileError,
    PolicyRejectedError,
    SignatureFormatError,
    SigningKeyError,
)

SYSTEM_POLICY = Path("/etc/containers/policy.json")
USER_POLICY = Path(".config/containers/policy.json")  # under $HOME

# --- requirements -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One policy requirement; :meth:`check` returns ``None`` when satisfied, else why not."""

    kind: str

    def check(
        self, image: ImageReference, digest: str, signatures: Sequence[SignatureCandidate]
    ) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class AcceptAnything(Requirement):
    kind: str = "insecureAcceptAnything"

    def check(
        self, image: ImageReference, digest: str, signatures: Sequence[SignatureCandidate]
    ) -> str | None:
        return None


@dataclass(frozen=True)
class Reject(Requirement):
    kind: str = "reject"

    def check(
        self, image: ImageReference, digest: str, signatures: Sequence[SignatureCandidate]
    ) -> str | None:
        return "the policy rejects every image in this scope"


@dataclass(frozen=True)
class FailClosed(Requirement):
    """A requirement sealpy cannot evaluate (unsupported, unknown, or its key unusable):
    it rejects every image it applies to."""

    reason: str = ""

    def check(
        self, image: ImageReference, digest: str, signatures: Sequence[SignatureCandidate]
    ) -> str | None:
        return self.reason


@dataclass(frozen=True)
class SigstoreSigned(Requirement):
    kind: str = "sigstoreSigned"
    public_keys: tuple[keys.PublicKey, ...] = ()
    identity: ids.IdentityRule = field(default_factory=ids.MatchRepoDigestOrExact)

    def _reason(
        self, image: ImageReference, digest: str, candidate: SignatureCandidate
    ) -> str | None:
        signature = candidate.signature
        if signature is None:
            return "no signature annotation"
        if isinstance(signature, str):
            try:
                signature = base64.b64decode(signature, validate=True)
            except binascii.Error:
                return "the signature is not base64"
        if not any(keys.verify(key, candidate.payload, signature) for key in self.public_keys):
            return "not signed by the policy's key" + ("s" if len(self.public_keys) > 1 else "")
        try:
            payload = SimpleSigningPayload.parse(candidate.payload)
        except SignatureFormatError as exc:
            return f"malformed payload ({exc})"
        if payload.manifest_digest != digest:
            return f"signs {payload.manifest_digest}, not this manifest"
        if not self.identity.matches(image, payload.docker_reference):
            shown = payload.docker_reference[:200]
            return f"wrong identity {shown!r} (policy: {self.identity.describe()})"
        return None

    def check(
        self, image: ImageReference, digest: str, signatures: Sequence[SignatureCandidate]
    ) -> str | None:
        if not signatures:
            return "no signature found (a sigstoreSigned requirement needs one)"
        failures = []
        for candidate in signatures:
            reason = self._reason(image, digest, candidate)
            if reason is None:
                return None
            failures.append(f"{candidate.source}: {reason}")
        return f"no signature was accepted ({len(failures)} tried: {'; '.join(failures)})"


# --- parsing ------------------------------------------------------------------------------

_KEY_FIELDS = ("keyPath", "keyPaths", "keyData", "keyDatas")
_UNSUPPORTED_FIELDS = {
    "fulcio": "Fulcio (keyless) certificates",
    "pki": "X.509 certificates (pki)",
    "rekorPublicKeyPath": "Rekor transparency-log proofs",
    "rekorPublicKeyPaths": "Rekor transparency-log proofs",
    "rekorPublicKeyData": "Rekor transparency-log proofs",
    "rekorPublicKeyDatas": "Rekor transparency-log proofs",
}
_UNSUPPORTED_TYPES = {
    "signedBy": "GPG simple signing (signedBy)",
    "signedBaseLayer": "signedBaseLayer",
}


def _not_implemented(what: str) -> FailClosed:
    return FailClosed(
        kind="unsupported",
        reason=f"sealpy does not implement {what}; images in this scope are rejected",
    )


def _string(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyFileError(f"{where}: {name!r} must be a non-empty string")
    return value


def _strings(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise PolicyFileError(f"{where}: {name!r} must be a non-empty list")
    return [_string(v, name, where) for v in value]


def _identity(value: Any, where: str) -> ids.IdentityRule | FailClosed:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise PolicyFileError(f"{where}: signedIdentity must be an object with a 'type'")
    kind = value["type"]
    expected = {
        "matchRepoDigestOrExact": set(),
        "matchExact": set(),
        "matchRepository": set(),
        "exactReference": {"dockerReference"},
        "exactRepository": {"dockerRepository"},
        "remapIdentity": {"prefix", "signedPrefix"},
    }.get(kind)
    if expected is None:
        return _not_implemented(f"the signedIdentity type {kind[:60]!r}")
    fields = set(value) - {"type"}
    if fields - expected:
        return _not_implemented(f"the field {sorted(fields - expected)[0][:60]!r} of {kind}")
    if expected - fields:
        raise PolicyFileError(f"{where}: {kind} needs {sorted(expected - fields)[0]!r}")
    if kind == "matchRepoDigestOrExact":
        return ids.MatchRepoDigestOrExact()
    if kind == "matchExact":
        return ids.MatchExact()
    if kind == "matchRepository":
        return ids.MatchRepository()
    if kind == "exactReference":
        text = _string(value["dockerReference"], "dockerReference", where)
        ref = ids.parse_signed_reference(text)
        if ref is None or (ref.tag is None and ref.digest is None):
            raise PolicyFileError(f"{where}: dockerReference {text!r} needs a tag or digest")
        return ids.ExactReference(ref)
    if kind == "exactRepository":
        text = _string(value["dockerRepository"], "dockerRepository", where)
        ref = ids.parse_signed_reference(text)
        if ref is None:
            raise PolicyFileError(f"{where}: dockerRepository {text!r} is not a repository")
        return ids.ExactRepository(ref)
    prefix = _string(value["prefix"], "prefix", where)
    signed_prefix = _string(value["signedPrefix"], "signedPrefix", where)
    for text in (prefix, signed_prefix):
        if not ids.valid_remap_prefix(text):
            raise PolicyFileError(f"{where}: remapIdentity prefix {text!r} is not valid")
    return ids.RemapIdentity(prefix, signed_prefix)


def _key_data(text: str, where: str) -> keys.PublicKey:
    try:
        pem = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise SigningKeyError(f"{where}: keyData is not base64") from None
    return keys.load_public_key(pem, what=f"{where}: keyData")


def _sigstore_signed(value: dict[str, Any], where: str) -> Requirement:
    for name in value:
        if name in _UNSUPPORTED_FIELDS:
            return _not_implemented(f"sigstoreSigned with {_UNSUPPORTED_FIELDS[name]} ({name})")
        if name not in {"type", "signedIdentity", *_KEY_FIELDS}:
            return _not_implemented(f"the sigstoreSigned field {name[:60]!r}")
    present = [name for name in _KEY_FIELDS if name in value]
    if len(present) != 1:
        raise PolicyFileError(
            f"{where}: sigstoreSigned needs exactly one of {', '.join(_KEY_FIELDS)}"
        )
    name = present[0]
    rule = _identity(value["signedIdentity"], where) if "signedIdentity" in value else None
    if isinstance(rule, FailClosed):
        return rule
    try:
        if name == "keyPath":
            loaded = [keys.load_public_key_file(_string(value[name], name, where))]
        elif name == "keyPaths":
            loaded = [keys.load_public_key_file(p) for p in _strings(value[name], name, where)]
        elif name == "keyData":
            loaded = [_key_data(_string(value[name], name, where), where)]
        else:
            loaded = [_key_data(d, where) for d in _strings(value[name], name, where)]
    except SigningKeyError as exc:
        # As containers/image: a key that cannot be loaded fails the images it guards,
        # not the whole policy.
        return FailClosed(kind="unusable", reason=f"{exc}; images in this scope are rejected")
    return SigstoreSigned(public_keys=tuple(loaded), identity=rule or ids.MatchRepoDigestOrExact())


def parse_requirement(value: Any, where: str) -> Requirement:
    """One requirement object (``where`` names it in errors)."""
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise PolicyFileError(f"{where}: a requirement must be an object with a string 'type'")
    kind = value["type"]
    if kind in ("insecureAcceptAnything", "reject"):
        if set(value) != {"type"}:
            extra = sorted(set(value) - {"type"})[0][:60]
            return _not_implemented(f"the field {extra!r} of {kind}")
        return AcceptAnything() if kind == "insecureAcceptAnything" else Reject()
    if kind == "sigstoreSigned":
        return _sigstore_signed(value, where)
    if kind in _UNSUPPORTED_TYPES:
        return _not_implemented(_UNSUPPORTED_TYPES[kind])
    return _not_implemented(f"the requirement type {kind[:60]!r}")


def _requirements(value: Any, where: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyFileError(f"{where}: must be a non-empty list of requirements")
    return tuple(parse_requirement(item, f"{where}[{i}]") for i, item in enumerate(value))


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where the requirements for an image came from: a ``docker`` scope (``""`` is the
    transport default) or the global default (``transport`` ``None``)."""

    transport: str | None
    name: str = ""

    def __str__(self) -> str:
        if self.transport is None:
            return "default"
        return f'{self.transport}:"{self.name}"' if self.name else f"{self.transport} default"


@dataclass(frozen=True)
class Verdict:
    """The outcome for one image: accepted or not, the scope that applied, and why not."""

    image: ImageReference
    scope: Scope
    accepted: bool
    reasons: tuple[str, ...] = ()
    policy_file: str | None = None

    @property
    def message(self) -> str:
        if self.accepted:
            return f"image {self.image} accepted by policy scope {self.scope}"
        return (
            f"image {self.image} rejected by policy scope {self.scope}: {'; '.join(self.reasons)}"
        )

    def check(self) -> Verdict:
        """This verdict if accepted; else raise :class:`PolicyRejectedError`."""
        if not self.accepted:
            raise PolicyRejectedError(self.message, self)
        return self


def _duplicate_free(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyFileError(f"duplicate field {key[:60]!r}")
        result[key] = value
    return result


class Policy:
    """A loaded policy: see the module docstring. ``path`` is the file in force (``None``
    when none exists and every image is accepted)."""

    def __init__(
        self,
        default: tuple[Requirement, ...],
        transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]],
        path: Path | None = None,
    ) -> None:
        self.default = default
        self.transports = transports
        self.path = path

    @classmethod
    def accept_all(cls) -> Policy:
        """What applies when no policy file exists: every image accepted."""
        return cls((AcceptAnything(),), {})

    @classmethod
    def from_bytes(cls, data: bytes, path: Path | None = None) -> Policy:
        label = str(path) if path else "signature policy"
        try:
            load_json(data)  # bounds the nesting
            document = json.loads(data, object_pairs_hook=_duplicate_free)
        except PolicyFileError as exc:
            raise PolicyFileError(f"{label}: {exc}") from None
        except (JSONTooDeepError, ValueError) as exc:
            raise PolicyFileError(f"{label}: not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(document, dict):
            raise PolicyFileError(f"{label}: not a JSON object")
        extra = sorted(set(document) - {"default", "transports"})
        if extra:
            raise PolicyFileError(f"{label}: unknown top-level field {extra[0][:60]!r}")
        if "default" not in document:
            raise PolicyFileError(f"{label}: the 'default' requirements are missing")
        default = _requirements(document["default"], f"{label}: default")
        transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
        raw_transports = document.get("transports", {})
        if not isinstance(raw_transports, dict):
            raise PolicyFileError(f"{label}: 'transports' must be an object")
        for transport, scopes in raw_transports.items():
            if not isinstance(scopes, dict):
                raise PolicyFileError(f"{label}: transports.{transport} must be an object")
            transports[transport] = {
                scope: _requirements(reqs, f'{label}: transports.{transport}."{scope}"')
                for scope, reqs in scopes.items()
            }
        return cls(default, transports, path)

    @classmethod
    def load(cls, path: str | Path | None = None, *, home: str | Path | None = None) -> Policy:
        """The policy in force: ``path`` (``--signature-policy``; it must exist), else
        ``$HOME/.config/containers/policy.json``, else ``/etc/containers/policy.json`` (as
        skopeo reads them), else none: every image accepted."""
        if path is None:
            home = home if home is not None else os.environ.get("HOME") or Path.home()
            for candidate in (Path(home) / USER_POLICY, SYSTEM_POLICY):
                if candidate.exists():
                    path = candidate
                    break
            else:
                return cls.accept_all()
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PolicyFileError(
                f"cannot read signature policy {path}: {exc.strerror or exc}"
            ) from None
        return cls.from_bytes(data, path)

    def describe(self) -> str:
        """One line for ``--debug``: the file in force."""
        if self.path is None:
            return (
                f"signature policy: none ({Path('~') / USER_POLICY} and {SYSTEM_POLICY} "
                "do not exist): every image accepted"
            )
        return f"signature policy: {self.path}"

    def problems(self) -> list[str]:
        """Why each fail-closed requirement fails, with its scope (for ``--debug``)."""
        found = []
        scoped = [(Scope(None), self.default)] + [
            (Scope(t, name), reqs)
            for t, scopes in self.transports.items()
            for name, reqs in scopes.items()
        ]
        for scope, reqs in scoped:
            found += [f"{scope}: {r.reason}" for r in reqs if isinstance(r, FailClosed)]
        return found

    def requirements_for(self, image: ImageReference) -> tuple[Scope, tuple[Requirement, ...]]:
        """The scope that applies to ``image`` (its own reference, never a mirror's) and
        its requirements."""
        docker = self.transports.get("docker", {})
        for name in ids.scope_candidates(image):
            if name in docker:
                return Scope("docker", name), docker[name]
        if "" in docker:
            return Scope("docker", ""), docker[""]
        return Scope(None), self.default

    def evaluate(
        self,
        image: ImageReference,
        manifest_digest: str,
        signatures: Sequence[SignatureCandidate] = (),
    ) -> Verdict:
        """Whether ``image`` — whose manifest (or index) has ``manifest_digest`` — is
        accepted, given the signatures found for that digest."""
        scope, requirements = self.requirements_for(image)
        label = str(self.path) if self.path else None
        if image.digest and image.digest != manifest_digest:
            pinned = f"the reference pins {image.digest} but the manifest is {manifest_digest}"
            return Verdict(image, scope, False, (pinned,), label)
        reasons = []
        for requirement in requirements:
            reason = requirement.check(image, manifest_digest, signatures)
            if reason is not None:
                reasons.append(reason)
        return Verdict(image, scope, not reasons, tuple(reasons), label)
