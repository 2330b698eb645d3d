"""The ``proxy`` strategy: Sealos's original caching path, in pure Python.

Sealos ran distribution's pull-through proxy per repository: resolve the tag and store
the manifest (saveManifestAndGetDigest), then store config and layers (saveBlobs). This
does the same with :mod:`sealpy.core.transport`: the registry client reads each image and
the copy engine writes the distribution layout under ``<context>/registry`` directly —
in parallel across images and blobs, each blob fetched once, verified before it lands,
resumable, with token authentication, and no temporary storage outside the registry root.

For a multi-platform image it stores the index unchanged (charts may pin its digest) plus
only the selected platforms' manifests and blobs, as Sealos's proxy did; a stock registry
serves such a sparse index. ``--all`` stores every platform.
"""

from __future__ import annotations

from pathlib import Path

from sealpy.core.cache.engine import cache_with_engine
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import CacheOptions, CacheReport, ImageSet


class ProxyStrategy(CacheStrategy):
    name = "proxy"
    description = (
        "pure Python: fetch over the registry API and write the distribution layout directly "
        "(Sealos's original proxy path; no binaries needed)"
    )

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        return cache_with_engine(self.name, images, registry_dir, options)


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(ProxyStrategy)
