"""Signing as cosign does: a signature manifest (``sha256-<hex>.sig``) for a manifest digest.

:func:`signature_image` makes what ``cosign sign --key`` pushes, byte for byte in layout:

- the layer: the simple-signing payload (:class:`~sealpy.core.supplychain.cosign.
  SimpleSigningPayload`), media type ``application/vnd.dev.cosign.simplesigning.v1+json``,
  annotated ``dev.cosignproject.cosign/signature`` = base64 ECDSA-SHA256 signature;
- the config: ``{"architecture":"","created":…,"history":[{"created":…}],"os":"",
  "rootfs":{"type":"layers","diff_ids":[<payload digest>]},"config":{}}`` (go-containerregistry's
  empty image with the layer appended: one history entry and one diff_id per layer);
- the manifest: OCI, keys in Go's field order (``schemaVersion``, ``mediaType``, ``config``,
  ``layers``; descriptors ``mediaType``, ``size``, ``digest``, ``annotations``).

A second signature of the same digest is appended to the existing ``.sig`` manifest (pass
it as ``existing``), as cosign does. ``sealpy push --sign-by-sigstore-private-key`` and the
test kit's signer (:mod:`sealpy.core.testing.signing`) both build signatures here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, Manifest, sha256_digest
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import (
    MAX_PAYLOAD_BYTES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SimpleSigningPayload,
)
from sealpy.core.supplychain.errors import SignatureFormatError

# go-containerregistry's zero time: what cosign writes unless asked to record a timestamp.
ZERO_TIME = "0001-01-01T00:00:00Z"


def _go_json(document: Any) -> bytes:
    """Compact JSON in the key order given (Go marshals struct fields in declaration
    order, map keys sorted: callers build dicts in that order)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class AttachmentLayer:
    """One layer of an attachment image: its bytes, media type and annotations."""

    media_type: str
    data: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": len(self.data),
            "digest": self.digest,
        }
        if self.annotations:
            entry["annotations"] = dict(sorted(self.annotations.items()))
        return entry


@dataclass(frozen=True)
class AttachmentImage:
    """A small image attached to another (signatures, attestations, SBOMs, referrers):
    the manifest and every blob it needs, in memory (they are a few KiB)."""

    manifest: Manifest
    blobs: Mapping[str, bytes]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def config(self) -> bytes:
        return self.blobs[self.manifest.config.digest]

    def layer_data(self) -> list[bytes]:
        return [self.blobs[d.digest] for d in self.manifest.layers]

    def layers(self) -> list[AttachmentLayer]:
        entries = self.manifest.json["layers"]
        return [
            AttachmentLayer(d.media_type, self.blobs[d.digest], dict(e.get("annotations") or {}))
            for d, e in zip(self.manifest.layers, entries, strict=True)
        ]

    @classmethod
    def read(cls, manifest: Manifest, read_blob: Callable[[Descriptor], bytes]) -> AttachmentImage:
        """An attachment image from its manifest and a blob reader (each blob checked
        against its descriptor; none may exceed the payload size limit)."""
        blobs = {}
        for descriptor in manifest.blobs:
            if descriptor.size > MAX_PAYLOAD_BYTES:
                raise SignatureFormatError(
                    f"attachment blob {descriptor.digest} is {descriptor.size} bytes; "
                    f"at most {MAX_PAYLOAD_BYTES} are read"
                )
            data = read_blob(descriptor)
            if sha256_digest(data) != descriptor.digest:
                raise SignatureFormatError(
                    f"attachment blob {descriptor.digest}: content does not match"
                )
            blobs[descriptor.digest] = data
        return cls(manifest, blobs)


def cosign_config(layers: Sequence[AttachmentLayer], *, created: str = ZERO_TIME) -> bytes:
    """The config cosign writes for an attachment image over ``layers``."""
    return _go_json(
        {
            "architecture": "",
            "created": created,
            "history": [{"created": ZERO_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "config": {},
        }
    )


def _appended_config(existing: bytes, added: Sequence[AttachmentLayer]) -> bytes:
    """``existing`` config with a diff_id and a history entry per added layer (as
    go-containerregistry's AppendLayers does), other fields kept in their order."""
    try:
        document = json.loads(existing)
        document["rootfs"]["diff_ids"].extend(layer.digest for layer in added)
        document.setdefault("history", []).extend({"created": ZERO_TIME} for _ in added)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureFormatError(
            "the existing attachment's config is not an image config"
        ) from None
    return _go_json(document)


def attachment_image(
    layers: Sequence[AttachmentLayer],
    *,
    existing: AttachmentImage | None = None,
    created: str = ZERO_TIME,
) -> AttachmentImage:
    """A cosign-style attachment image: ``layers`` appended to ``existing`` (or to an
    empty image) with the config cosign writes."""
    if existing is not None:
        all_layers = [*existing.layers(), *layers]
        config = _appended_config(existing.config, layers)
    else:
        all_layers = list(layers)
        config = cosign_config(all_layers, created=created)
    document = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {
            "mediaType": media.OCI_CONFIG,
            "size": len(config),
            "digest": sha256_digest(config),
        },
        "layers": [layer.descriptor_json() for layer in all_layers],
    }
    manifest = Manifest.parse(_go_json(document), media.OCI_MANIFEST, what="attachment manifest")
    blobs = {sha256_digest(config): config}
    blobs.update((layer.digest, layer.data) for layer in all_layers)
    return AttachmentImage(manifest, blobs)


def sign_payload(payload: bytes, private_key: keys.PrivateKey) -> str:
    """The base64 signature annotation value for ``payload``."""
    return base64.b64encode(keys.sign(private_key, payload)).decode()


def signature_layer(
    payload: bytes, signature_b64: str, annotations: Mapping[str, str] | None = None
) -> AttachmentLayer:
    """A simple-signing layer carrying ``payload`` and its signature annotation."""
    return AttachmentLayer(
        SIMPLE_SIGNING_MEDIA_TYPE,
        payload,
        {**(annotations or {}), SIGNATURE_ANNOTATION: signature_b64},
    )


def signature_image(
    manifest_digest: str,
    docker_reference: str,
    private_key: keys.PrivateKey,
    *,
    existing: AttachmentImage | None = None,
    optional: Mapping[str, Any] | None = None,
    created: str = ZERO_TIME,
) -> AttachmentImage:
    """The signature manifest (and its blobs) signing ``manifest_digest`` as
    ``docker_reference`` — push it as ``sha256-<hex>.sig`` in the image's repository.

    ``docker_reference`` is the identity: skopeo and containers/image sign the full
    reference pushed (``registry/repo:tag``, which the default ``matchRepoDigestOrExact``
    rule checks); cosign itself signs only the repository. ``existing`` is the ``.sig``
    image already there: the new signature is appended to it, as cosign does."""
    payload = SimpleSigningPayload(docker_reference, manifest_digest, optional).to_bytes()
    layer = signature_layer(payload, sign_payload(payload, private_key))
    return attachment_image([layer], existing=existing, created=created)
