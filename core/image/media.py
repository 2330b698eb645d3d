"""Manifests, indexes and descriptors: the OCI and Docker schema2 media types.

A :class:`Manifest` holds the exact bytes a registry served (its digest is over those bytes,
so they are never re-serialised) plus the parsed JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sealpy.core.errors import DigestMismatchError, ManifestError
from sealpy.core.reference import SHA256_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# What we ask registries for: every type we can store, most preferred first.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


# How deep a JSON document from outside (manifest, index, archive index, token or error
# answer) may nest. Real ones nest 5 deep at most (index → manifests → entry → platform →
# os.features). Deeper ones are hostile: Python's parser gives up near 1000 levels with a
# RecursionError, and documents below that still break whatever walks them recursively
# later (repr in a message, json.dumps), depending on the stack at that point.
MAX_JSON_DEPTH = 32


class JSONTooDeepError(ValueError):
    """A JSON document nested deeper than :data:`MAX_JSON_DEPTH`: a ValueError, so that
    code reading JSON from outside handles it where it handles malformed JSON."""


def load_json(data: bytes | str) -> Any:
    """``json.loads``, refusing documents nested deeper than :data:`MAX_JSON_DEPTH`
    (:class:`JSONTooDeepError`) instead of failing with a RecursionError or returning one
    that fails later."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise JSONTooDeepError(f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
    # Checked without recursion: depth-first over containers only.
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise JSONTooDeepError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
        inner = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in inner if isinstance(v, dict | list))
    return document


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data`` (small documents; blobs are hashed as they
    stream, by :class:`~sealpy.core.transport.blobio.BlobWriter`)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    return digest.split(":", 1)[1]


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size (and a platform inside an index)."""

    media_type: str
    digest: str
    size: int
    platform: dict | None = None

    @classmethod
    def from_json(cls, data: dict) -> Descriptor:
        try:
            descriptor = cls(
                str(data.get("mediaType", "")),
                str(data["digest"]),
                int(data["size"]),
                data.get("platform"),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise ManifestError(f"malformed descriptor {str(data)[:120]}") from None
        # The digest becomes a path on disk: anything but sha256 hex is refused outright.
        if not SHA256_RE.match(descriptor.digest):
            raise ManifestError(f"unsupported digest {descriptor.digest[:80]!r} in a descriptor")
        if descriptor.platform is not None and not isinstance(descriptor.platform, dict):
            kind = "a list" if isinstance(descriptor.platform, list) else "not an object"
            raise ManifestError(f"the platform of {descriptor.digest} is {kind}")
        if descriptor.size < 0:
            raise ManifestError(f"negative size for {descriptor.digest}")
        return descriptor

    def to_json(self) -> dict:
        data: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            data["platform"] = self.platform
        return data


@dataclass(frozen=True)
class Manifest:
    """An image manifest or an index, as raw bytes with their media type."""

    media_type: str
    data: bytes

    @classmethod
    def parse(
        cls,
        data: bytes,
        media_type: str | None = None,
        *,
        expected_digest: str | None = None,
        what: str = "manifest",
    ) -> Manifest:
        """Check and wrap manifest bytes. ``media_type`` (the Content-Type) falls back to the
        ``mediaType`` field, then to the shape of the document. Schema1 is refused."""
        kind = (media_type or "").split(";")[0].strip()
        try:
            doc = load_json(data)
        except JSONTooDeepError as exc:
            raise ManifestError(str(exc), subject=what) from None
        except ValueError:
            doc = None
        # Schema1 first: a signed one's digest is over the payload without its signatures,
        # so the bytes never match it, and a digest check would read as a lying source.
        declared = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(declared, str):
            declared = None  # a non-string mediaType declares nothing (refused below)
        if kind in SCHEMA1_TYPES or (
            isinstance(doc, dict) and (doc.get("schemaVersion") == 1 or declared in SCHEMA1_TYPES)
        ):
            raise ManifestError(
                "Docker schema1 manifests are not supported (deprecated since 2017); "
                "push the image again with a current client",
                subject=what,
            )
        if expected_digest is not None and sha256_digest(data) != expected_digest:
            raise DigestMismatchError(
                f"content does not match {expected_digest} (got {sha256_digest(data)})",
                subject=what,
            )
        if doc is None:
            raise ManifestError("not valid JSON", subject=what)
        if not isinstance(doc, dict):
            raise ManifestError("not a JSON object", subject=what)
        if "mediaType" in doc and declared is None and doc["mediaType"] is not None:
            raise ManifestError("mediaType is not a string", subject=what)
        if kind not in MANIFEST_TYPES:
            kind = declared or ""
        if not kind:
            if "manifests" in doc:
                kind = OCI_INDEX
            elif "config" in doc and "layers" in doc:
                kind = OCI_MANIFEST
        if kind not in MANIFEST_TYPES:
            raise ManifestError(
                f"unsupported manifest media type {kind or 'unknown'!r}", subject=what
            )
        manifest = cls(kind, data)
        manifest._validate(what)
        return manifest

    def _validate(self, what: str) -> None:
        doc = self.json
        if self.is_index:
            if not isinstance(doc.get("manifests"), list):
                raise ManifestError("index without a manifests list", subject=what)
            _ = self.children
        else:
            if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
                raise ManifestError("manifest without config or layers", subject=what)
            _ = self.config, self.layers

    @cached_property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @cached_property
    def json(self) -> dict:
        return load_json(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, platform: dict | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, platform)

    @cached_property
    def children(self) -> tuple[Descriptor, ...]:
        """An index's manifests (empty for an image manifest)."""
        if not self.is_index:
            return ()
        return tuple(Descriptor.from_json(d) for d in self.json["manifests"])

    @cached_property
    def config(self) -> Descriptor:
        if self.is_index:
            raise ManifestError("an index has no config")
        return Descriptor.from_json(self.json["config"])

    @cached_property
    def layers(self) -> tuple[Descriptor, ...]:
        if self.is_index:
            return ()
        return tuple(Descriptor.from_json(d) for d in self.json["layers"])

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The config and the layers of an image manifest."""
        return (self.config, *self.layers) if not self.is_index else ()
