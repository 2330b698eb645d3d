"""New image documents: canonical JSON, an image manifest from a config and layers, an
index from manifests and their platforms.

Everything sealpy writes itself (built and merged images, the store's records, converted
manifests) goes through :func:`canonical_json`, so the same input always gives the same
bytes and digest — the builders' images are reproducible, and tests compare their digests
with buildah's and between runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from sealpy.core.image import media
from sealpy.core.image.config import platform
from sealpy.core.image.media import Descriptor, Manifest


def canonical_json(document: Mapping) -> bytes:
    """JSON with sorted keys and no spaces: the same document always gives the same digest."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def parse_document(document: Mapping) -> Manifest:
    """A manifest or index document (with its ``mediaType``) as canonical bytes."""
    return Manifest.parse(canonical_json(document), document["mediaType"])


def new_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    media_type: str = media.OCI_MANIFEST,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    """An image manifest over ``config`` and ``layers`` (descriptors as given: media
    types are the caller's choice), with ``annotations`` if any."""
    document: dict = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return parse_document(document)


def new_index(
    entries: Iterable[tuple[Manifest, Mapping | None]], *, media_type: str = media.OCI_INDEX
) -> Manifest:
    """An index (or a Docker manifest list) over ``(manifest, platform)`` pairs, in order."""
    manifests = [
        manifest.descriptor(dict(platform) if platform else None).to_json()
        for manifest, platform in entries
    ]
    return parse_document({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})


def platform_index(
    manifests: Iterable[Manifest],
    read_config: Callable[[Manifest], Mapping],
    *,
    media_type: str = media.OCI_INDEX,
) -> Manifest:
    """An index over image manifests, each entry's platform taken from its config
    (:func:`sealpy.core.image.config.platform`), as buildah writes a manifest list."""
    return new_index(((m, platform(read_config(m))) for m in manifests), media_type=media_type)
