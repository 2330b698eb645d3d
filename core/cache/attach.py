"""Carrying attachments — signatures, attestations, SBOMs, OCI referrers — with the images.

A copy that follows each image once it is stored: what is attached in its source
repository to each manifest stored (the index and each platform manifest) is found
(:func:`~sealpy.core.transport.attachments.find_attachments`; a repository's tags listed
once for all its images) and copied with the copy engine into the same destination repository,
digests kept byte for byte: cosign's tags under their tags, the source's referrers tag as
it is, and referrers the source's referrers API listed under a referrers tag written for
them (the destination — a distribution directory, or ``sync``'s local docker-registry —
has no referrers API, so the spec's fallback tag is how a client finds them there).

Both built-in strategies use it: ``proxy`` through :func:`cache_with_engine
<sealpy.core.cache.engine.cache_with_engine>` into the directory, ``sync`` pushing into its
local registry. An attachment that cannot be found or copied fails its image.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from sealpy.core.errors import SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.progress import SilentProgress
from sealpy.core.transport.attachments import (
    Attachment,
    ReferrersSupport,
    find_attachments,
    list_tags,
)
from sealpy.core.transport.copy import CopyJob, ImageDestination, ImageSource, copy_images

if TYPE_CHECKING:
    from pathlib import Path

    from sealpy.core.transport.blobcache import BlobCache
    from sealpy.core.transport.blobio import BlobWriter
    from sealpy.core.transport.remote import RemoteRepository


@dataclass(frozen=True)
class AttachTarget:
    """One image stored: its ``label`` (as reported), its ``source`` repository, the
    ``digests`` of every manifest stored for it, and the ``destination`` repository they
    were stored in (where its attachments go)."""

    label: str
    source: RemoteRepository
    digests: tuple[str, ...]
    destination: ImageDestination


@dataclass
class AttachOutcome:
    """How many manifests were attached per image label, and the images that failed."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, SealpyError] = field(default_factory=dict)


def carry_attachments(
    targets: Sequence[AttachTarget],
    *,
    max_parallel: int,
    blob_cache: BlobCache | None = None,
    staging: Path | None = None,
) -> AttachOutcome:
    """Find and copy the attachments of ``targets`` (an :class:`AttachmentPass` fed all
    of them at once)."""
    with AttachmentPass(max_parallel=max_parallel, blob_cache=blob_cache, staging=staging) as run:
        for target in targets:
            run.submit(target)
    return run.outcome


class AttachmentPass:
    """Carries attachments image by image, in a pool of its own, so that it can run while
    other images are still being copied (:func:`cache_with_engine
    <sealpy.core.cache.engine.cache_with_engine>` submits each image as it lands). A
    repository's tags are listed once for all its images; the referrers API's absence is
    learnt once per registry. ``staging``: a private directory where blobs are downloaded
    before they are pushed, for a destination that uploads from local files (``sync``'s
    local registry). Leaving the ``with`` block waits for every image; then
    :attr:`outcome` holds the counts and failures."""

    def __init__(
        self,
        *,
        max_parallel: int,
        blob_cache: BlobCache | None = None,
        staging: Path | None = None,
    ) -> None:
        self.max_parallel = max(1, max_parallel)
        self.blob_cache = blob_cache
        self.staging = staging
        self.support = ReferrersSupport()
        self.outcome = AttachOutcome()
        self._pool = ThreadPoolExecutor(self.max_parallel, thread_name_prefix="sealpy-attach")
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, str], tuple[threading.Lock, list[set[str] | None]]] = {}
        self._running: list[tuple[str, Future[int]]] = []

    def __enter__(self) -> AttachmentPass:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:  # interrupted, or the copy failed as a whole: stop here
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        self._pool.shutdown(wait=True)
        for label, future in self._running:
            try:
                self.outcome.counts[label] = future.result()
            except SealpyError as exc:
                self.outcome.failures[label] = exc

    def submit(self, target: AttachTarget) -> None:
        """Carry ``target``'s attachments (in the pool; returns at once)."""
        self._running.append((target.label, self._pool.submit(self._carry, target)))

    def _tags(self, target: AttachTarget) -> set[str] | None:
        """The source repository's tags, listed once for every image of the run."""
        key = (target.source.ref.registry, target.source.ref.repository)
        with self._lock:
            lock, listing = self._listings.setdefault(key, (threading.Lock(), []))
        with lock:
            if not listing:
                listing.append(list_tags(target.source))
            return listing[0]

    def _carry(self, target: AttachTarget) -> int:
        """Find and copy one image's attachments; how many manifests were attached."""
        try:
            tags = self._tags(target)
            found = find_attachments(target.source, target.digests, self.support, tags=tags)
        except SealpyError as exc:
            raise exc.amended(" (looking for its signatures and attachments)").about(
                target.label
            ) from exc.cause
        jobs = {job.label: job for job in (_job(target, a, self.staging) for a in found)}
        copied = copy_images(
            list(jobs.values()),
            platforms=(),
            all_platforms=True,  # an index of referrers has no platforms: every entry goes
            max_parallel=self.max_parallel,
            progress=SilentProgress(),
            blob_cache=self.blob_cache,
        )
        if copied.failures:
            failure = copied.failures[0]
            error = SealpyError(f"attachment not copied: {failure.error}").about(target.label)
            raise error from failure.error
        return sum(attachment.count for attachment in found)


def _job(target: AttachTarget, attachment: Attachment, staging: Path | None) -> CopyJob:
    """The copy of one attachment into ``target``'s destination repository."""
    source: ImageSource = target.source
    if attachment.listing is not None:
        source = _WithListing(source, attachment.listing)
    if staging is not None:
        source = _Staged(source, staging)
    where = f":{attachment.tag}" if attachment.tag else f"@{attachment.reference}"
    return CopyJob(
        label=f"{target.source.ref.name}{where}",
        source=source,
        reference=attachment.reference,
        destination=target.destination,
        tag=attachment.tag,
    )


class _WithListing:
    """A source that also serves the referrers index sealpy wrote (by its digest)."""

    def __init__(self, source: ImageSource, listing: Manifest) -> None:
        self.source = source
        self.listing = listing

    def get_manifest(self, reference: str) -> Manifest:
        if reference == self.listing.digest:
            return self.listing
        return self.source.get_manifest(reference)

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.source.fetch_blob(descriptor, writer, on_bytes)


class _Staged:
    """A remote source whose blobs can be opened (a
    :class:`~sealpy.core.transport.copy.BlobOpener`), for a destination that uploads from
    local files: each blob is downloaded, verified, into ``directory`` first."""

    def __init__(self, source: ImageSource, directory: Path) -> None:
        from sealpy.core.transport.distribution import DistributionLayout

        self.source = source
        self.layout = DistributionLayout(directory, durable=False)

    def get_manifest(self, reference: str) -> Manifest:
        return self.source.get_manifest(reference)

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.source.fetch_blob(descriptor, writer, on_bytes)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        if not self.layout.has_blob(descriptor.digest):
            self.layout.repository("staging").receive_blob(descriptor, self.source)
        return self.layout.open_blob(descriptor.digest)
