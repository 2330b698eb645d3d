"""cosign's registry layout: the simple-signing payload, the attachment tags, and the
signature manifest.

What cosign (and containers/image's sigstore support) write, and what in-cluster verifiers
(cosign, sigstore policy-controller, Kyverno) read:

- a signature of manifest ``sha256:<hex>`` is stored in the image's own repository under
  the tag ``sha256-<hex>.sig`` (attestations ``.att``, SBOMs ``.sbom``);
- that tag names an OCI image manifest with one layer per signature, each of media type
  :data:`SIMPLE_SIGNING_MEDIA_TYPE`, whose bytes are the payload
  ``{"critical":{"identity":{"docker-reference":REF},"image":{"docker-manifest-digest":D},
  "type":"cosign container image signature"},"optional":...}`` and whose annotation
  :data:`SIGNATURE_ANNOTATION` holds the base64 ASN.1 DER ECDSA-SHA256 signature of
  exactly those bytes.

Parsing is strict, as containers/image's is: a payload with unknown or missing critical
fields, a wrong type or a malformed digest is refused, never half-read. Payloads are
parsed only after their signature verified (see :mod:`~sealpy.core.supplychain.policy`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sealpy.core.image.media import (
    Descriptor,
    JSONTooDeepError,
    Manifest,
    load_json,
    sha256_digest,
)
from sealpy.core.reference import SHA256_RE
from sealpy.core.supplychain.errors import SignatureFormatError

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
# Keyless (Fulcio/Rekor) material cosign may add next to the signature; sealpy's verifier
# ignores it (a policy that asks for it is refused, see policy.py).
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"

SIGNATURE_SUFFIX = "sig"
ATTESTATION_SUFFIX = "att"
SBOM_SUFFIX = "sbom"
ATTACHMENT_SUFFIXES = (SIGNATURE_SUFFIX, ATTESTATION_SUFFIX, SBOM_SUFFIX)

# A signature payload is a few hundred bytes; a layer claiming more is not one (and is not
# read into memory).
MAX_PAYLOAD_BYTES = 1 << 20

_ATTACHMENT_TAG_RE = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?\Z")


# --- tags ----------------------------------------------------------------------------------


def _check_digest(digest: str) -> str:
    if not SHA256_RE.match(digest):
        raise SignatureFormatError(
            f"invalid manifest digest {digest[:80]!r}: expected sha256:<64 hex>"
        )
    return digest


def attachment_tag(manifest_digest: str, suffix: str) -> str:
    """cosign's tag for what is attached to ``manifest_digest``: ``sha256-<hex>.<suffix>``
    (``sig``, ``att`` or ``sbom``)."""
    if suffix not in ATTACHMENT_SUFFIXES:
        raise ValueError(f"attachment suffix must be one of {ATTACHMENT_SUFFIXES}, not {suffix!r}")
    return f"sha256-{_check_digest(manifest_digest)[7:]}.{suffix}"


def signature_tag(manifest_digest: str) -> str:
    """``sha256-<hex>.sig``: where cosign stores the signatures of ``manifest_digest``."""
    return attachment_tag(manifest_digest, SIGNATURE_SUFFIX)


def attestation_tag(manifest_digest: str) -> str:
    return attachment_tag(manifest_digest, ATTESTATION_SUFFIX)


def sbom_tag(manifest_digest: str) -> str:
    return attachment_tag(manifest_digest, SBOM_SUFFIX)


def referrers_tag(manifest_digest: str) -> str:
    """The OCI 1.1 referrers tag fallback, ``sha256-<hex>``: an index of the manifests whose
    ``subject`` is ``manifest_digest``, for registries without the referrers API."""
    return f"sha256-{_check_digest(manifest_digest)[7:]}"


def parse_attachment_tag(tag: str) -> tuple[str, str | None] | None:
    """``(manifest digest, suffix)`` for a cosign attachment tag (suffix ``None`` for the
    referrers fallback tag ``sha256-<hex>``); ``None`` for any other tag."""
    match = _ATTACHMENT_TAG_RE.match(tag)
    if not match:
        return None
    return f"sha256:{match.group(1)}", match.group(2)


# --- the simple-signing payload ----------------------------------------------------------


def _strict_object(data: bytes, what: str) -> Any:
    """JSON with duplicate keys refused (two ``docker-reference`` values must not let one
    reader see one and another the other)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise SignatureFormatError(f"{what}: duplicate field {key!r}")
            result[key] = value
        return result

    try:
        text = data.decode("utf-8")
        # load_json bounds the nesting; parsed again with the duplicate check.
        load_json(text)
        return json.loads(text, object_pairs_hook=pairs)
    except SignatureFormatError:
        raise
    except (UnicodeDecodeError, JSONTooDeepError, ValueError) as exc:
        raise SignatureFormatError(f"{what}: not valid JSON ({exc.__class__.__name__})") from None


def _exact_fields(value: Any, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SignatureFormatError(f"{what} is not a JSON object")
    missing = [f for f in fields if f not in value]
    extra = sorted(set(value) - set(fields))
    if missing:
        raise SignatureFormatError(f"{what} lacks field {missing[0]!r}")
    if extra:
        raise SignatureFormatError(f"{what} has unknown field {extra[0][:80]!r}")
    return value


@dataclass(frozen=True)
class SimpleSigningPayload:
    """What a cosign signature claims: ``docker_reference`` (the identity: cosign writes
    the repository, containers/image the full reference) signed ``manifest_digest``.
    ``optional`` is the free-form object (``None`` is written as ``null``, as cosign does)."""

    docker_reference: str
    manifest_digest: str
    optional: Mapping[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """The payload as cosign writes it: compact JSON, keys sorted (Go's encoding)."""
        if not self.docker_reference:
            raise SignatureFormatError("a signature payload needs a docker reference")
        _check_digest(self.manifest_digest)
        document = {
            "critical": {
                "identity": {"docker-reference": self.docker_reference},
                "image": {"docker-manifest-digest": self.manifest_digest},
                "type": COSIGN_SIGNATURE_TYPE,
            },
            "optional": dict(self.optional) if self.optional is not None else None,
        }
        # Go's encoding/json: keys sorted (they are, here), compact, UTF-8 kept as is.
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> SimpleSigningPayload:
        """Parse a payload strictly (as containers/image does): ``critical`` with exactly
        ``type``, ``image`` and ``identity``; the type cosign's; a sha256 digest; ``optional``
        an object, ``null`` or absent, with a string ``creator`` and an integer
        ``timestamp`` when present."""
        what = "signature payload"
        document = _strict_object(data, what)
        if not isinstance(document, dict):
            raise SignatureFormatError(f"{what} is not a JSON object")
        extra = sorted(set(document) - {"critical", "optional"})
        if extra:
            raise SignatureFormatError(f"{what} has unknown field {extra[0][:80]!r}")
        if "critical" not in document:
            raise SignatureFormatError(f"{what} lacks field 'critical'")
        critical = _exact_fields(document["critical"], ("type", "image", "identity"), "critical")
        if critical["type"] != COSIGN_SIGNATURE_TYPE:
            shown = str(critical["type"])[:80]
            raise SignatureFormatError(f"{what}: unrecognised signature type {shown!r}")
        image = _exact_fields(critical["image"], ("docker-manifest-digest",), "critical.image")
        digest = image["docker-manifest-digest"]
        if not isinstance(digest, str) or not SHA256_RE.match(digest):
            raise SignatureFormatError(
                f"{what}: docker-manifest-digest {str(digest)[:80]!r} is not sha256:<64 hex>"
            )
        identity = _exact_fields(critical["identity"], ("docker-reference",), "critical.identity")
        reference = identity["docker-reference"]
        if not isinstance(reference, str) or not reference:
            raise SignatureFormatError(f"{what}: docker-reference is not a non-empty string")
        optional = document.get("optional")
        if optional is not None:
            if not isinstance(optional, dict):
                raise SignatureFormatError(f"{what}: optional is neither an object nor null")
            if "creator" in optional and not isinstance(optional["creator"], str):
                raise SignatureFormatError(f"{what}: optional.creator is not a string")
            if "timestamp" in optional:
                stamp = optional["timestamp"]
                integral = isinstance(stamp, int) or (
                    isinstance(stamp, float) and stamp.is_integer()
                )
                if isinstance(stamp, bool) or not integral:
                    raise SignatureFormatError(f"{what}: optional.timestamp is not an integer")
        return cls(reference, digest, optional)


# --- signature manifests -------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureLayer:
    """One signature of a ``.sig`` manifest: its layer (the payload blob) and the base64
    signature from its annotation (``None`` when the annotation is missing: such a
    signature is rejected, never skipped silently)."""

    descriptor: Descriptor
    signature: str | None
    annotations: Mapping[str, str]


def _annotations(entry: Mapping[str, Any], what: str) -> dict[str, str]:
    annotations = entry.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise SignatureFormatError(f"{what}: annotations are not a string map")
    return dict(annotations)


def signature_layers(manifest: Manifest) -> list[SignatureLayer]:
    """The signatures in a cosign signature manifest: every layer of media type
    :data:`SIMPLE_SIGNING_MEDIA_TYPE`, in order. Layers of other types are not signatures
    and are left out."""
    if manifest.is_index:
        raise SignatureFormatError("a signature manifest must be an image manifest, not an index")
    entries = manifest.json["layers"]
    found = []
    for position, (descriptor, entry) in enumerate(zip(manifest.layers, entries, strict=True)):
        if descriptor.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        annotations = _annotations(entry, f"signature layer {position}")
        found.append(SignatureLayer(descriptor, annotations.get(SIGNATURE_ANNOTATION), annotations))
    return found


@dataclass(frozen=True)
class SignatureCandidate:
    """One signature to check against a policy: the payload bytes, the signature (base64
    text as in the annotation, raw DER bytes, or ``None`` when there was none) and where it
    came from (for messages: ``"docker.io/x/y:sha256-….sig layer 0"``)."""

    payload: bytes
    signature: str | bytes | None
    source: str


def read_payload(descriptor: Descriptor, read_blob: Callable[[Descriptor], bytes]) -> bytes:
    """A payload layer's bytes from ``read_blob``, checked against its descriptor (size
    first: a layer claiming more than :data:`MAX_PAYLOAD_BYTES` is not read)."""
    if descriptor.size > MAX_PAYLOAD_BYTES:
        raise SignatureFormatError(
            f"signature layer {descriptor.digest} claims {descriptor.size} bytes; "
            f"payloads are at most {MAX_PAYLOAD_BYTES}"
        )
    data = read_blob(descriptor)
    if len(data) != descriptor.size or sha256_digest(data) != descriptor.digest:
        raise SignatureFormatError(f"signature layer {descriptor.digest}: content does not match")
    return data


def candidates(
    manifest: Manifest, read_blob: Callable[[Descriptor], bytes], source: str
) -> list[SignatureCandidate]:
    """The signatures of a ``.sig`` manifest as candidates for
    :meth:`~sealpy.core.supplychain.policy.Policy.evaluate`; ``read_blob`` returns a
    layer's bytes (small: each is checked by size before it is read)."""
    return [
        SignatureCandidate(
            read_payload(layer.descriptor, read_blob), layer.signature, f"{source} layer {i}"
        )
        for i, layer in enumerate(signature_layers(manifest))
    ]
