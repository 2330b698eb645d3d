"""``--offline``: the proxy strategy with no network at all.

Every image is pinned by ``sealpy.lock`` (see :mod:`sealpy.core.lockfile`), so nothing
needs resolving: each manifest is read by its digest, and with the blobs it names comes
from the machine-wide blob cache (:class:`~sealpy.core.transport.blobcache.BlobCache`)
or from ``<context>/registry`` when it is there already. The copy engine runs as for
``proxy``, its source for each image an :class:`OfflineSource` that never opens a
connection: a manifest or blob neither place has is an error naming the image and the
digest — the reproducible rebuild a release process wants, or a clear list of what to
fetch first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sealpy.core.cache.engine import cache_with_engine
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.errors import SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, RequiredImage
from sealpy.core.transport.blobcache import BlobCache
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.copy import ImageDestination


class OfflineError(SealpyError):
    """Something an offline run needs is in neither the blob cache nor the registry
    directory."""


class OfflineSource:
    """An image source reading only the blob cache (manifests by digest) and the
    destination (manifests it stores already). Blobs are never read from it: the engine
    takes them from the cache itself (:meth:`BlobCache.receive`) and asks the source
    only for what the cache lacks — which offline is an error."""

    def __init__(self, blob_cache: BlobCache, destination: ImageDestination) -> None:
        self.blob_cache = blob_cache
        self.destination = destination

    def get_manifest(self, reference: str) -> Manifest:
        if not reference.startswith("sha256:"):
            raise OfflineError(f"--offline reads images by digest only, not {reference!r}")
        manifest = self.blob_cache.get_manifest(reference) or self.destination.stored_manifest(
            reference
        )
        if manifest is None:
            raise OfflineError(
                f"manifest {reference} is not in the blob cache {self.blob_cache.root} (--offline)"
            )
        return manifest

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        raise OfflineError(
            f"blob {descriptor.digest} is not in the blob cache {self.blob_cache.root} (--offline)"
        )


class OfflineProxyStrategy(CacheStrategy):
    """``proxy`` with an :class:`OfflineSource` for every image: used for ``--offline``,
    never registered (its name is the strategy it stands in for)."""

    name = "proxy"
    description = "proxy, offline: every manifest and blob from the lock and the blob cache"

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        return cache_offline(self.name, images, registry_dir, options)


def cache_offline(
    strategy: str, images: ImageSet, registry_dir: Path, options: CacheOptions
) -> CacheReport:
    """Store the pinned ``images`` (and the ``tar.txt`` archives, files in the context)
    under ``registry_dir`` with :func:`~sealpy.core.cache.engine.cache_with_engine`, every
    image's source an :class:`OfflineSource`: no request is ever sent."""
    blob_cache = options.blob_cache
    if blob_cache is None:
        raise OfflineError("--offline needs the blob cache (not --cache-dir none)")
    unpinned = [str(i.reference) for i in images.images if i.pinned is None]
    if unpinned:
        raise OfflineError(f"--offline: not pinned by a lock: {', '.join(unpinned)}")

    def offline(_required: RequiredImage, destination: ImageDestination) -> OfflineSource:
        return OfflineSource(blob_cache, destination)

    return cache_with_engine(
        strategy, images, registry_dir, options, source=offline, blob_cache=blob_cache
    )
