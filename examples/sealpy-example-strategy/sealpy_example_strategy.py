"""An example third-party caching strategy for sealpy: ``serial``.

It caches one image at a time, each image's blobs one after the other — the way Sealos's
sync saver behaves behind its mutex — using sealpy's public building blocks: the registry
client, the distribution layout and the copy engine. It is a baseline for benchmarks and
a template for plugin authors: register a :class:`CacheStrategy` subclass through the
``sealpy_register_strategies`` hook, and declare the module in the ``sealpy`` entry-point
group (see this package's pyproject.toml).

Check it with the conformance suite (see ``sealpy.core.testing.conformance``)::

    from sealpy.core.testing.conformance import StrategyConformance

    class TestSerial(StrategyConformance):
        strategy = "serial"
"""

from __future__ import annotations

import time
from pathlib import Path

from sealpy.core.cache.failures import cache_error
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.errors import SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import CachedImage, CacheOptions, CacheReport, ImageSet
from sealpy.core.transport.archive import archive_job
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.distribution import DistributionLayout


class SerialStrategy(CacheStrategy):
    name = "serial"
    description = "example plugin: one image at a time, one blob at a time (a Sealos-like baseline)"

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        started = time.monotonic()
        layout = DistributionLayout(registry_dir)
        cached: list[CachedImage] = []
        errors: list[SealpyError] = []
        with options.transport.client() as client:
            jobs = [
                (
                    CopyJob(
                        label=str(ref),
                        source=client.repository(ref),
                        reference=ref.reference,
                        destination=layout.repository(ref.cache_repository),
                        tag=ref.tag,
                        # Jobs with one target are checked against each other (conflicts).
                        target=f"{ref.cache_repository}:{ref.tag}" if ref.tag else None,
                    ),
                    ref.cache_repository,
                    ref.tag,
                )
                for ref in images.references
            ]
            for entry in images.archives:
                job = archive_job(entry, layout, options.progress)
                jobs.append((job, entry.destination.cache_repository, entry.destination.tag))
            # Jobs that would land on one repository:tag go to the copy engine together:
            # it checks they agree before writing (two sources, one tag = a conflict).
            groups: dict[tuple, list[tuple[CopyJob, str, str | None]]] = {}
            for index, (job, repository, tag) in enumerate(jobs):
                key = (repository, tag) if tag is not None else (index,)
                groups.setdefault(key, []).append((job, repository, tag))
            for group in groups.values():
                targets = {job.label: (repository, tag) for job, repository, tag in group}
                outcome = copy_images(
                    [job for job, _, _ in group],
                    platforms=options.platforms,
                    all_platforms=options.all_platforms,
                    max_parallel=1,
                    progress=options.progress,
                )
                errors.extend(f.error for f in outcome.failures)
                cached.extend(r.cached_as(*targets[r.label]) for r in outcome.results)
            requests = client.requests_sent
        report = CacheReport(self.name, tuple(cached), time.monotonic() - started, requests)
        if errors:  # one line naming each failed image (a conflict once), as built-ins do
            raise cache_error(errors, len(jobs), report)
        return report


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(SerialStrategy)
