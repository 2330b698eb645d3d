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

import time
from pathlib import Path

from sealpy.core.cache.failures import cache_error
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import CacheOptions, CacheReport, ImageSet
from sealpy.core.transport.archive import archive_job
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.distribution import DistributionLayout


class ProxyStrategy(CacheStrategy):
    name = "proxy"
    description = (
        "pure Python: fetch over the registry API and write the distribution layout directly "
        "(Sealos's original proxy path; no binaries needed)"
    )

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        started = time.monotonic()
        layout = DistributionLayout(registry_dir)
        transport = options.transport
        with transport.client(max_connections=max(4, transport.max_parallel * 2)) as client:
            jobs: list[CopyJob] = []
            repositories: dict[str, tuple[str, str | None]] = {}
            for required in images.images:
                ref = required.reference
                repo = ref.cache_repository
                jobs.append(
                    CopyJob(
                        label=str(ref),
                        source=client.repository(ref),
                        reference=ref.reference,
                        destination=layout.repository(repo),
                        tag=ref.tag,
                        target=f"{repo}:{ref.tag}" if ref.tag else None,
                    )
                )
                repositories[str(ref)] = (repo, ref.tag)
            for entry in images.archives:
                job = archive_job(entry, layout, options.progress)
                jobs.append(job)
                repositories[job.label] = (
                    entry.destination.cache_repository,
                    entry.destination.tag,
                )
            outcome = copy_images(
                jobs,
                platforms=options.platforms,
                all_platforms=options.all_platforms,
                max_parallel=options.max_parallel,
                progress=options.progress,
            )
            requests = client.requests_sent
        report = CacheReport(
            strategy=self.name,
            images=tuple(r.cached_as(*repositories[r.label]) for r in outcome.results),
            seconds=time.monotonic() - started,
            requests=requests,
        )
        if outcome.failures:
            raise cache_error([f.error for f in outcome.failures], len(jobs), report)
        return report


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(ProxyStrategy)
