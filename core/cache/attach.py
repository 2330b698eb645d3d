"""Carrying attachments — signatures, attestations, SBOMs, OCI referrers — with the images.

A second copy pass, once the images themselves are stored: for every image, what is
attached in its source repository to each manifest stored (the index and each platform
manifest) is found (:func:`~sealpy.core.transport.attachments.find_attachments`, once per
source repository) and copied with the copy engine into the same destination repository,
digests kept byte for byte: cosign's tags under their tags, the source's referrers tag as
it is, and referrers the source's referrers API listed under a referrers tag written for
them (the destination — a distribution directory, or ``sync``'s local docker-registry —
has no referrers API, so the spec's fallback tag is how a client finds them there).

Both built-in strategies use it: ``proxy`` through :func:`cache_with_engine
<sealpy.core.cache.engine.cache_with_engine>` into the directory, ``sync`` pushing into its
local registry. An attachment that cannot be found or copied fails its image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from sealpy.core.errors import SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.progress import SilentProgress
from sealpy.core.transport.attachments import Attachment, ReferrersSupport, find_attachments
from sealpy.core.transport.copy import CopyJob, ImageDestination, ImageSource, copy_images

if TYPE_CHECKING:
    from pathlib import Path

    from sealpy.core.transport.blobcache import BlobCache
    from sealpy.core.transport.blobio import BlobWriter
    from sealpy.core.transport.remote import RemoteRepository


@dataclass(frozen=True)
class AttachTarget:
    """One image stored: its ``label`` (as reported), its ``source`` repository, the
    ``digests`` of every manifest stored for it, the ``destination`` repository they were
    stored in and its name, ``repository``."""

    label: str
    source: RemoteRepository
    digests: tuple[str, ...]
    destination: ImageDestination
    repository: str


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
    support: ReferrersSupport | None = None,
) -> AttachOutcome:
    """Find and copy the attachments of ``targets``. Images of one source repository
    stored in one destination repository are asked about together (one tag listing).
    ``staging``: a private directory where blobs are downloaded before they are pushed,
    for a destination that uploads from local files (``sync``'s local registry)."""
    support = support or ReferrersSupport()
    outcome = AttachOutcome(counts={t.label: 0 for t in targets})
    groups: dict[tuple[str, str], list[AttachTarget]] = defaultdict(list)
    for target in targets:
        groups[(target.source.ref.name, target.repository)].append(target)
    with ThreadPoolExecutor(max(1, max_parallel), thread_name_prefix="sealpy-attach") as pool:
        found = {
            key: pool.submit(
                find_attachments,
                group[0].source,
                [d for t in group for d in t.digests],
                support,
            )
            for key, group in groups.items()
        }
    jobs: dict[str, CopyJob] = {}
    owners: dict[str, list[str]] = defaultdict(list)  # job label -> image labels
    for key, future in found.items():
        group = groups[key]
        try:
            attachments = future.result()
        except SealpyError as exc:
            for target in group:
                outcome.failures[target.label] = exc.amended(
                    " (looking for its signatures and attachments)"
                ).about(target.label)
            continue
        for attachment in attachments:
            job = _job(group[0], attachment, staging)
            jobs.setdefault(job.label, job)
            for target in group:
                if attachment.subject in target.digests:
                    outcome.counts[target.label] += attachment.count
                    owners[job.label].append(target.label)
    copied = copy_images(
        list(jobs.values()),
        platforms=(),
        all_platforms=True,  # an index of referrers has no platforms: every entry goes
        max_parallel=max_parallel,
        progress=SilentProgress(),
        blob_cache=blob_cache,
    )
    for failure in copied.failures:
        for label in owners[failure.label]:
            error = SealpyError(f"attachment not copied: {failure.error}").about(label)
            error.__cause__ = failure.error
            outcome.failures.setdefault(label, error)
    return outcome


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
