"""An image end held in memory, for testing the copy engine without a registry process.

:class:`MemoryRepository` is one repository — blobs, manifests and tags in dicts — that is
both an image source and an image destination (the protocols in
:mod:`sealpy.core.transport.copy`). It records what the engine does to it, so that tests can
check the engine's promises directly: each blob fetched once, manifests stored only after
their blobs and children, the tag last, nothing stored for a conflict::

    source = MemoryRepository("src")
    image = source.add_image([b"layer one", b"layer two"])
    source.tag("v1", image)
    destination = MemoryRepository("dst", scratch=tmp_path)
    copy_images([CopyJob("app:v1", source, "v1", destination, tag="v1")], platforms=[...])
    assert destination.tags["v1"] == image.digest

Blobs pass through a real :class:`~sealpy.core.transport.blobio.BlobWriter` in ``scratch``
(streamed, verified, renamed) before they are kept in memory, so a source sending wrong
bytes is refused exactly as it is by the on-disk ends.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from sealpy.core.errors import DigestMismatchError, NotFoundError, SealpyError
from sealpy.core.image.media import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    sha256_digest,
)
from sealpy.core.transport.blobio import BlobWriter, receive_into


class MemoryRepository:
    """One repository in memory; see the module docstring.

    ``events`` lists what was stored, in order: ``blob <digest>``, ``manifest <digest>``,
    ``tag <tag> <digest>``. ``blob_fetches`` counts each blob handed out as a source.
    ``failing_blobs`` are blobs whose fetch fails (a source-side error); ``lying_blobs``
    are sent with other bytes than their digest says."""

    def __init__(self, name: str, *, scratch: Path | None = None) -> None:
        self.name = name
        self.scratch = scratch
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, Manifest] = {}
        self.tags: dict[str, str] = {}
        self.events: list[str] = []
        self.blob_fetches: Counter[str] = Counter()
        self.failing_blobs: set[str] = set()
        self.lying_blobs: set[str] = set()
        self._lock = threading.Lock()
        self._partials = 0

    # --- filling a source ----------------------------------------------------------------

    def add_blob(self, data: bytes, media_type: str = OCI_LAYER_GZIP) -> Descriptor:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        return Descriptor(media_type, digest, len(data))

    def add_manifest(self, document: dict) -> Manifest:
        manifest = Manifest.parse(json.dumps(document, sort_keys=True).encode())
        self.manifests[manifest.digest] = manifest
        return manifest

    def add_image(self, layers: Sequence[bytes], *, platform: str = "linux/amd64") -> Manifest:
        """An image manifest with a small config and one blob per entry of ``layers``."""
        os_name, _, arch = platform.partition("/")
        config = self.add_blob(
            json.dumps(
                {"architecture": arch, "os": os_name, "rootfs": {"type": "layers"}}
            ).encode(),
            OCI_CONFIG,
        )
        return self.add_manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.to_json(),
                "layers": [self.add_blob(data).to_json() for data in layers],
            }
        )

    def add_index(self, children: dict[str, Manifest]) -> Manifest:
        """An index of ``children`` keyed by platform (``os/arch``)."""
        entries = []
        for platform, child in children.items():
            os_name, _, arch = platform.partition("/")
            entries.append(child.descriptor({"os": os_name, "architecture": arch}).to_json())
        return self.add_manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})

    def tag(self, tag: str, manifest: Manifest) -> None:
        self.tags[tag] = manifest.digest

    # --- source ------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> Manifest:
        digest = self.tags.get(reference, reference)
        manifest = self.manifests.get(digest)
        if manifest is None:
            raise NotFoundError("manifest unknown", subject=f"{self.name}:{reference}")
        return manifest

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        with self._lock:
            self.blob_fetches[descriptor.digest] += 1
        if descriptor.digest in self.failing_blobs:
            raise SealpyError("the source failed", subject=f"blob {descriptor.digest}")
        data = self.blobs.get(descriptor.digest)
        if data is None:
            raise NotFoundError("blob unknown", subject=f"blob {descriptor.digest}")
        if descriptor.digest in self.lying_blobs:
            data = data[::-1] + b"!"
        writer.reset()
        writer.write(data)
        if on_bytes:
            on_bytes(len(data))

    # --- destination ---------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def receive_blob(
        self,
        descriptor: Descriptor,
        source,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        if self.scratch is None:
            raise SealpyError(f"{self.name}: a destination needs a scratch directory")
        with self._lock:
            self._partials += 1
            partial = self.scratch / f"{self.name}-partial-{self._partials}"
        kept: dict[str, Path] = {}

        def final_path(digest: str) -> Path:
            kept[digest] = self.scratch / f"{self.name}-{digest.replace(':', '-')}"  # type: ignore[operator]
            return kept[digest]

        writer = BlobWriter(
            partial, final_path, digest=descriptor.digest, size=descriptor.size, durable=False
        )
        receive_into(writer, descriptor, source, on_bytes)
        path = kept.pop(descriptor.digest)
        with self._lock:
            self.blobs[descriptor.digest] = path.read_bytes()
            self.events.append(f"blob {descriptor.digest}")
        path.unlink()

    def stored_manifest(self, digest: str) -> Manifest | None:
        return self.manifests.get(digest)

    def put_manifest(self, manifest: Manifest) -> None:
        """Refuses, as a registry does, a manifest whose blobs are missing. An index may
        name children that are not stored: copying one platform keeps the whole index."""
        missing = [b.digest for b in manifest.blobs if b.digest not in self.blobs]
        if missing:
            raise DigestMismatchError(f"missing {missing}", subject=f"manifest {manifest.digest}")
        with self._lock:
            self.manifests[manifest.digest] = manifest
            self.events.append(f"manifest {manifest.digest}")

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        if manifest.digest not in self.manifests:
            raise NotFoundError(f"manifest {manifest.digest} not stored", subject=f"tag {tag}")
        with self._lock:
            self.tags[tag] = manifest.digest
            self.events.append(f"tag {tag} {manifest.digest}")
