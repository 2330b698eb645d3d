"""Caching with the copy engine: the whole of a strategy that writes the registry directory
itself, for the ``proxy`` strategy and for plugins that change one part of it.

:func:`cache_with_engine` reads every image of an :class:`ImageSet` from its registry (and
every ``tar.txt`` archive from the context), lets the copy engine store them in the
distribution layout under ``registry_dir`` — in parallel, each blob once, children before
indexes before tags, conflicts found before anything lands — and turns the engine's
outcome into the strategy's :class:`CacheReport`, or its :class:`CacheError`.

A plugin changes what it needs through keyword arguments: ``destination`` to wrap or
replace the repository each registry image is written to (a blob cache of its own, see
the example plugin), ``max_parallel`` to change the parallelism, ``blob_cache`` to choose
the machine-wide blob cache blobs go through (default: ``options.blob_cache`` with the
default destination, none with a destination of the plugin's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sealpy.core.cache.attach import AttachmentPass, AttachTarget
from sealpy.core.cache.failures import cache_error
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, RequiredImage
from sealpy.core.transport.copy import (
    CopyJob,
    CopyResult,
    ImageDestination,
    ImageSource,
    copy_images,
)
from sealpy.core.transport.distribution import DistributionLayout

if TYPE_CHECKING:
    from sealpy.core.transport.blobcache import BlobCache

DestinationFactory = Callable[[DistributionLayout, str], ImageDestination]
"""``(layout, repository name) -> destination`` for one registry image."""
SourceFactory = Callable[[RequiredImage, ImageDestination], ImageSource]
"""``(image, its destination) -> source`` for one registry image (default: its registry,
through the run's client; ``--offline`` reads the blob cache instead)."""


def layout_repository(layout: DistributionLayout, repository: str) -> ImageDestination:
    """The default destination: the repository of the registry directory itself."""
    return layout.repository(repository)


def cache_with_engine(
    strategy: str,
    images: ImageSet,
    registry_dir: Path,
    options: CacheOptions,
    *,
    destination: DestinationFactory = layout_repository,
    max_parallel: int | None = None,
    blob_cache: BlobCache | Literal["default"] | None = "default",
    source: SourceFactory | None = None,
) -> CacheReport:
    """Store ``images`` under ``registry_dir`` and report it as strategy ``strategy``.

    Every image and archive is one copy job; jobs that land on one ``repository:tag`` are
    checked against each other. Then, unless ``options.copy_signatures`` is off, what is
    attached to every manifest stored (signatures, attestations, SBOMs, referrers) is
    copied into the same repository (:mod:`sealpy.core.cache.attach`); an attachment that
    fails fails its image. Counts come from the engine: a blob is *fetched* when this
    run read it from the image's source (a registry, or an archive in the context), and
    *reused* when the destination already had it, took it from a cache of its own, or
    another image of the run fetched it. Raises the :class:`CacheError` naming each failed
    image, carrying the report of those that were cached.
    """
    started = time.monotonic()
    if blob_cache == "default":
        # A destination of the plugin's own receives every blob itself (its receive_blob
        # is what it wants called); it asks for the machine-wide cache by passing it.
        blob_cache = options.blob_cache if destination is layout_repository else None
    layout = DistributionLayout(registry_dir)
    transport = options.transport
    parallel = options.max_parallel if max_parallel is None else max_parallel
    places: dict[str, tuple[str, str | None]] = {}  # job label -> (repository, tag)
    jobs: list[CopyJob] = []
    with transport.client(max_connections=max(4, transport.max_parallel * 2)) as client:
        for required in images.images:
            ref = required.reference
            repository = ref.cache_repository
            into = destination(layout, repository)
            jobs.append(
                CopyJob(
                    label=str(ref),
                    source=source(required, into) if source else client.repository(ref),
                    reference=required.pinned or ref.reference,  # a lock pins it
                    destination=into,
                    tag=ref.tag,
                    target=f"{repository}:{ref.tag}" if ref.tag else None,
                )
            )
            places[str(ref)] = (repository, ref.tag)
        for entry in images.archives:
            from sealpy.core.transport.archive import archive_job  # only for tar.txt entries

            job = archive_job(entry, layout, options.progress)
            jobs.append(job)
            places[job.label] = (entry.destination.cache_repository, entry.destination.tag)
        attach = AttachmentPass(max_parallel=parallel, blob_cache=blob_cache)
        with attach:
            # Each image's attachments are carried as soon as it has landed (core.cache.attach).
            outcome = copy_images(
                jobs,
                platforms=options.platforms,
                all_platforms=options.all_platforms,
                max_parallel=parallel,
                progress=options.progress,
                blob_cache=blob_cache,
                on_committed=_attacher(attach, jobs) if options.copy_signatures else None,
            )
        attached = attach.outcome
        failures = [*(f.error for f in outcome.failures), *attached.failures.values()]
        requests = client.requests_sent
    report = CacheReport(
        strategy=strategy,
        images=tuple(
            replace(r.cached_as(*places[r.label]), attachments=attached.counts.get(r.label, 0))
            for r in outcome.results
            if r.label not in attached.failures
        ),
        seconds=time.monotonic() - started,
        requests=requests,
    )
    if failures:
        raise cache_error(failures, len(jobs), report)
    return report


def _attacher(attach: AttachmentPass, jobs: list[CopyJob]) -> Callable[[CopyResult], None]:
    """What to do as each image lands: submit what is attached to every manifest it
    stored, into the same repository. Archives (``tar.txt``) carry no attachments."""
    from sealpy.core.transport.remote import RemoteRepository

    by_label = {job.label: job for job in jobs}

    def landed(result: CopyResult) -> None:
        job = by_label[result.label]
        if isinstance(job.source, RemoteRepository):
            attach.submit(AttachTarget(result.label, job.source, result.manifests, job.destination))

    return landed
