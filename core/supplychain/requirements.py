"""Policy requirements: what each one checks, and how each is read from the file.

See :mod:`sealpy.core.supplychain.policy` for what is implemented and what fails closed.
A requirement's :meth:`Requirement.check` returns ``None`` when an image satisfies it,
else one line saying why not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sealpy.core.reference import ImageReference
from sealpy.core.supplychain import identity as ids
from sealpy.core.supplychain.cosign import SignatureCandidate, SimpleSigningPayload
from sealpy.core.supplychain.errors import PolicyFileError, SignatureFormatError, SigningKeyError

if TYPE_CHECKING:
    from sealpy.core.supplychain import keys

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
        from sealpy.core.supplychain import keys  # (cryptography: only when verifying)

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
    from sealpy.core.supplychain import keys

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
    from sealpy.core.supplychain import keys

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


def parse_requirements(value: Any, where: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyFileError(f"{where}: must be a non-empty list of requirements")
    return tuple(parse_requirement(item, f"{where}[{i}]") for i, item in enumerate(value))
