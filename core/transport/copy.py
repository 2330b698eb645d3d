"""The copy engine: move images from a source end to a destination end, in parallel.

For every job: resolve the reference to a manifest; for an index, choose the children for
the wanted platforms (or all); fetch the blobs the destination lacks — in parallel,
across all jobs, each digest once — then store the manifests children first, then the
index, then the tag. A job whose blobs are all present commits at once, so an
interrupted run leaves every finished image usable and a re-run fetches only what is
missing.

Ends are small protocols (:class:`ImageSource`, :class:`ImageDestination`): a remote
registry repository, a distribution directory, the OCI layout store, an archive.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from sealpy.core.errors import ConflictError, PlatformNotFoundError, SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.image.walk import walk
from sealpy.core.model import CachedImage
from sealpy.core.progress import ProgressReporter, SilentProgress
from sealpy.core.reference import Platform, select_platform
from sealpy.core.transport.blobio import BlobWriter

if TYPE_CHECKING:
    from sealpy.core.transport.blobcache import BlobCache


class ImageSource(Protocol):
    """Where images are read from (one repository)."""

    def get_manifest(self, reference: str) -> Manifest:
        """A manifest or index by tag or digest; verified against the digest when given."""
        ...

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``writer`` (from ``writer.offset``), leaving it verified."""
        ...


class Received(enum.Enum):
    """How a destination came by a blob it was asked to receive (see
    :meth:`ImageDestination.receive_blob`)."""

    FETCHED = "fetched"
    """Read from the source (the default, also meant by returning ``None``)."""
    REUSED = "reused"
    """Taken from a cache of the destination's own, without reading the source."""


class ImageDestination(Protocol):
    """Where images are written to (one repository)."""

    def has_blob(self, digest: str) -> bool: ...

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Received | None:
        """Take one blob from ``source``; it must only become visible once verified.

        Return :attr:`Received.REUSED` when the blob came from a cache instead of the source
        (it then counts as reused, not fetched); ``None`` or :attr:`Received.FETCHED`
        otherwise. ``on_bytes`` is called with the bytes read from the source only."""
        ...

    def stored_manifest(self, digest: str) -> Manifest | None:
        """The manifest with that digest if this destination already holds it intact."""
        ...

    def put_manifest(self, manifest: Manifest) -> None:
        """Store a manifest whose blobs (or children) are present."""
        ...

    def set_tag(self, tag: str, manifest: Manifest) -> None: ...


@runtime_checkable
class SharedBlobStore(Protocol):
    """A destination that shares its blob store with others: destinations with equal
    ``blob_scope`` (repositories of one distribution directory, images of one OCI layout
    or one archive, one remote repository) hold one set of blobs, so a blob transferred
    for one job is there for every job writing to that scope. A destination without it
    shares blobs with no other destination object (two remote repositories do not)."""

    blob_scope: Hashable


@runtime_checkable
class ConvertingSource(Protocol):
    """A source that writes some blobs into the destination itself while it resolves (a
    docker-archive compressing its layers) and lists them here, so that they count as
    fetched although the engine then finds them present."""

    converted: Sequence[Descriptor]


@runtime_checkable
class BlobOpener(Protocol):
    """A source whose blobs can be read directly (a local image: store, directory,
    archive): what a push destination uploads from."""

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob's bytes, as stored (the caller closes the stream)."""
        ...


class Cancelled(SealpyError):
    """The run was interrupted."""


@dataclass(frozen=True)
class CopyJob:
    """Copy ``reference`` from ``source`` to ``destination``, tagging it ``tag`` there.

    ``label`` names the image in progress and errors; jobs with the same ``target`` (for
    example ``library/nginx:1.25`` in one directory) must resolve to the same content.
    """

    label: str
    source: ImageSource
    reference: str
    destination: ImageDestination
    tag: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class CopyResult:
    """One job that landed: the top manifest's ``digest``, the platforms stored (empty for
    a single-platform image), its blobs ``fetched`` and ``reused`` (see
    :class:`_JobState`), the bytes fetched, the seconds from start to commit, and the
    digests of every manifest it stored (the top one first: an index and its children)."""

    label: str
    digest: str
    platforms: tuple[str, ...]
    blobs_fetched: int
    blobs_reused: int
    bytes_fetched: int
    seconds: float
    manifests: tuple[str, ...] = ()

    def cached_as(self, repository: str, tag: str | None) -> CachedImage:
        """This copy as a strategy reports it, stored as ``repository`` and ``tag``."""
        return CachedImage(
            source=self.label,
            repository=repository,
            tag=tag,
            digest=self.digest,
            platforms=self.platforms,
            blobs_fetched=self.blobs_fetched,
            blobs_reused=self.blobs_reused,
            bytes_fetched=self.bytes_fetched,
            seconds=self.seconds,
        )


@dataclass(frozen=True)
class CopyFailure:
    """One job that did not land, and why (the error names the job's label)."""

    label: str
    error: SealpyError


@dataclass(frozen=True)
class CopyOutcome:
    """What :func:`copy_images` returns: each job has a result or a failure (in job order)."""

    results: tuple[CopyResult, ...]
    failures: tuple[CopyFailure, ...]


def describe_platform(descriptor: Descriptor) -> str:
    p = descriptor.platform or {}
    return str(Platform.from_oci(p)) if p.get("os") else "unknown"


def select_children(
    index: Manifest, platforms: Sequence[Platform], all_platforms: bool
) -> list[Descriptor]:
    """The index entries to copy: all of them, or the best match for each wanted platform.

    A platform without a match is an error listing what the image has; an OS-only or
    architecture-only match is never accepted."""
    children = list(index.children)
    if all_platforms:
        return children
    chosen: list[Descriptor] = []
    for wanted in platforms:
        i = select_platform(wanted, [c.platform or {} for c in children])
        if i is None:
            has = ", ".join(sorted({describe_platform(c) for c in children})) or "no platforms"
            raise PlatformNotFoundError(f"no manifest for platform {wanted}; the image has {has}")
        if children[i] not in chosen:
            chosen.append(children[i])
    return chosen


@dataclass
class _Plan:
    """A resolved job: the top manifest and the image manifests to store (children first)."""

    top: Manifest
    manifests: list[Manifest]
    platforms: tuple[str, ...]


def resolve(
    job: CopyJob,
    platforms: Sequence[Platform],
    all_platforms: bool,
    blob_cache: BlobCache | None = None,
) -> _Plan:
    """The job's top manifest and, for an index, the manifests under it to store, children
    first: the wanted platforms of the top index, nested indexes whole. A child the
    destination already stores is read from there; a manifest asked for by digest comes
    from ``blob_cache`` when it has it (a tag is always asked of the source, so a moved
    tag is seen), and every manifest read from the source goes into it."""

    def by_digest(digest: str) -> Manifest:
        cached = blob_cache.get_manifest(digest) if blob_cache is not None else None
        if cached is not None:
            return cached
        manifest = job.source.get_manifest(digest)
        if blob_cache is not None:
            blob_cache.put_manifest(manifest)
        return manifest

    if job.reference.startswith("sha256:"):
        top = by_digest(job.reference)
    else:
        top = job.source.get_manifest(job.reference)
        if blob_cache is not None:
            blob_cache.put_manifest(top)
    if not top.is_index:
        return _Plan(top, [top], ())

    def select(index: Manifest) -> list[Descriptor]:
        return select_children(index, platforms, all_platforms or index is not top)

    def fetch(child: Descriptor) -> Manifest:
        stored = job.destination.stored_manifest(child.digest)
        return stored if stored is not None else by_digest(child.digest)

    nodes = list(walk(top, fetch, select=select))[:-1]
    names = tuple(describe_platform(n.descriptor) for n in nodes if not n.manifest.is_index)
    return _Plan(top, [n.manifest for n in nodes], names)


@dataclass
class _JobState:
    """One job in flight. ``fetched``: blobs this job had transferred from its source (it
    was the first to ask for them); ``reused``: blobs the destination already had, took
    from a cache of its own (:attr:`Received.REUSED`), or another job transferred."""

    job: CopyJob
    started: float = field(default_factory=time.monotonic)
    plan: _Plan | None = None
    pending: set[str] = field(default_factory=set)
    fetched: int = 0
    reused: int = 0
    bytes: int = 0
    done: bool = False
    finished: float = 0.0
    error: SealpyError | None = None

    def counts(self) -> tuple[int, int, int]:
        """(fetched, reused, bytes) as reported — the one place they are computed, for the
        progress line and the result alike. Blobs a converting source wrote into the
        destination itself (a docker-archive's compressed layers) were found present, yet
        they are this job's work: fetched, not reused."""
        converted: Sequence[Descriptor] = ()
        if isinstance(self.job.source, ConvertingSource):
            converted = self.job.source.converted
        return (
            self.fetched + len(converted),
            max(0, self.reused - len(converted)),
            self.bytes + sum(b.size for b in converted),
        )


def copy_images(
    jobs: Sequence[CopyJob],
    *,
    platforms: Sequence[Platform],
    all_platforms: bool = False,
    max_parallel: int = 8,
    progress: ProgressReporter | None = None,
    blob_cache: BlobCache | None = None,
    on_committed: Callable[[CopyResult], None] | None = None,
) -> CopyOutcome:
    """Run every job; failures are collected per job, never stop the others. With
    ``blob_cache`` (the machine-wide cache), blobs and manifests come from it when it has
    them and go through it when it has not (see :mod:`~sealpy.core.transport.blobcache`).
    ``on_committed`` is called with each job's result as soon as it has landed (on the
    thread running the copy: it must not block), for work that follows an image."""
    run = _CopyRun(
        jobs,
        platforms=platforms,
        all_platforms=all_platforms,
        progress=progress or SilentProgress(),
        blob_cache=blob_cache,
    )
    run.on_committed = on_committed
    return run.run(max_parallel)


class _CopyRun:
    """One call of :func:`copy_images`, in named steps: resolve each job (in the pool),
    plan its blobs (each digest transferred once across all jobs), transfer them (in the
    pool), commit each job once its blobs are in and its target group is resolved, report.

    Only the thread running :meth:`run` touches the bookkeeping; pool threads resolve and
    transfer, and report back through their futures."""

    def __init__(
        self,
        jobs: Sequence[CopyJob],
        *,
        platforms: Sequence[Platform],
        all_platforms: bool,
        progress: ProgressReporter,
        blob_cache: BlobCache | None = None,
    ) -> None:
        self.blob_cache = blob_cache
        self.on_committed: Callable[[CopyResult], None] | None = None
        self.platforms = platforms
        self.all_platforms = all_platforms
        self.progress = progress
        self.states = [_JobState(job) for job in jobs]
        self.groups: dict[str, list[_JobState]] = defaultdict(list)
        for state in self.states:
            if state.job.target:
                self.groups[state.job.target].append(state)
        self.cancel = threading.Event()
        # Blobs are keyed by (blob scope, digest): see SharedBlobStore.
        self.blob_futures: dict[BlobKey, Future[Received | None]] = {}
        self.fetched_for: dict[BlobKey, _JobState] = {}  # the job each transfer counts for
        self.blob_waiters: dict[BlobKey, list[_JobState]] = defaultdict(list)
        # What the pool is working on: resolutions (by job) and transfers (by digest).
        self.resolving: dict[Future[_Plan], _JobState] = {}
        self.transfers: dict[Future[Received | None], BlobKey] = {}
        self.lock = threading.Lock()  # byte counters, updated from pool threads

    def run(self, max_parallel: int) -> CopyOutcome:
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, max_parallel), thread_name_prefix="sealpy-copy"
        )
        try:
            for state in self.states:
                fut = self.pool.submit(
                    resolve, state.job, self.platforms, self.all_platforms, self.blob_cache
                )
                self.resolving[fut] = state
            while self.resolving or self.transfers:
                pending: list[Future[Any]] = [*self.resolving, *self.transfers]
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for finished in done:
                    if finished in self.resolving:
                        self.on_resolved(self.resolving.pop(finished), finished)
                    else:
                        self.on_blob(self.transfers.pop(finished), finished)
        except BaseException:
            self.cancel.set()
            self.pool.shutdown(wait=True, cancel_futures=True)
            raise
        self.pool.shutdown(wait=True)
        return self.report()

    # --- plan -------------------------------------------------------------------------

    def on_resolved(self, state: _JobState, future: Future[_Plan]) -> None:
        try:
            state.plan = future.result()
        except SealpyError as exc:
            self.fail(state, exc)
        if state.plan is not None:
            self.plan_blobs(state, state.plan)
        # A resolution may unblock others waiting on the same target.
        for s in self.groups.get(state.job.target or "", [state]):
            self.maybe_commit(s)

    def plan_blobs(self, state: _JobState, plan: _Plan) -> None:
        needed: dict[str, Descriptor] = {}
        for manifest in plan.manifests:
            for blob in manifest.blobs:
                needed.setdefault(blob.digest, blob)
        self.progress.image_started(state.job.label, sum(b.size for b in needed.values()))
        scope = blob_scope(state.job.destination)
        for digest, blob in needed.items():
            existing = self.blob_futures.get((scope, digest))
            if existing is not None:
                state.reused += 1  # transferred once, for another job
                if not existing.done():
                    state.pending.add(digest)
                    self.blob_waiters[(scope, digest)].append(state)
                elif existing.exception() is not None:
                    self.fail(state, _as_error(digest, existing.exception()))
            elif state.job.destination.has_blob(digest):
                state.reused += 1
            else:
                state.fetched += 1
                self.transfer(state, blob)

    # --- transfer ---------------------------------------------------------------------

    def transfer(self, state: _JobState, blob: Descriptor) -> None:
        key = (blob_scope(state.job.destination), blob.digest)
        state.pending.add(blob.digest)
        self.blob_waiters[key].append(state)
        destination = state.job.destination
        on_bytes = self.count_bytes(state)
        if self.blob_cache is not None:
            fut = self.pool.submit(
                self.blob_cache.receive, destination, blob, state.job.source, on_bytes
            )
        else:
            fut = self.pool.submit(destination.receive_blob, blob, state.job.source, on_bytes)
        self.blob_futures[key] = fut
        self.fetched_for[key] = state
        self.transfers[fut] = key

    def count_bytes(self, state: _JobState) -> Callable[[int], None]:
        def on_bytes(n: int) -> None:
            if self.cancel.is_set():
                raise Cancelled("interrupted")
            with self.lock:
                state.bytes += n
            self.progress.image_bytes(state.job.label, n)

        return on_bytes

    def on_blob(self, key: BlobKey, future: Future[Received | None]) -> None:
        digest = key[1]
        error = future.exception()
        if error is None and future.result() is Received.REUSED:
            fetcher = self.fetched_for[key]  # the destination had it in a cache after all
            fetcher.fetched -= 1
            fetcher.reused += 1
        for state in self.blob_waiters.pop(key, []):
            state.pending.discard(digest)
            if error is not None:
                self.fail(state, _as_error(digest, error))
            else:
                self.maybe_commit(state)

    # --- commit -----------------------------------------------------------------------

    def maybe_commit(self, state: _JobState) -> None:
        """Commit once the job's blobs are in — and every job with the same target is
        resolved, so two sources for one repository:tag are caught before either lands."""
        if state.done or state.plan is None or state.pending:
            return
        group = self.groups.get(state.job.target or "", [state])
        if any(s.plan is None and not s.done for s in group):
            return
        digests = {s.plan.top.digest for s in group if s.plan is not None and s.error is None}
        if len(digests) > 1:
            labels = ", ".join(s.job.label for s in group)
            # One error for the whole group, so that it can be reported once.
            conflict = ConflictError(
                f"{labels} would all be stored as {state.job.target} with different content"
            )
            for s in group:
                self.fail(s, conflict)
            return
        self.commit(state, state.plan)

    def commit(self, state: _JobState, plan: _Plan) -> None:
        """Children, then the index, then the tag: a reader never finds a name whose
        content is not all there."""
        job = state.job
        try:
            for manifest in plan.manifests:
                job.destination.put_manifest(manifest)
            if plan.top.is_index:
                job.destination.put_manifest(plan.top)
            if job.tag:
                job.destination.set_tag(job.tag, plan.top)
        except SealpyError as exc:
            self.fail(state, exc)
            return
        except OSError as exc:
            error = SealpyError(f"writing failed: {exc.strerror or exc}")
            error.__cause__ = exc
            self.fail(state, error)
            return
        state.done = True
        state.finished = time.monotonic()
        fetched, reused, size = state.counts()
        self.progress.image_done(
            job.label, f"{fetched} blobs fetched, {reused} reused, {size / (1 << 20):.1f} MiB"
        )
        if self.on_committed is not None:
            self.on_committed(_result(state))

    def fail(self, state: _JobState, error: SealpyError) -> None:
        if state.done:
            return
        state.done = True
        state.finished = time.monotonic()
        # Name the image once: a conflict's message already names every image involved
        # (and it stays one shared error, so that whoever lists failures says it once).
        state.error = error if isinstance(error, ConflictError) else error.about(state.job.label)
        self.progress.image_failed(state.job.label, str(error))

    # --- report -----------------------------------------------------------------------

    def report(self) -> CopyOutcome:
        for state in self.states:
            if not state.done:  # waiting on a conflicting partner that failed
                self.fail(state, SealpyError("not stored: another image for the same tag failed"))
        results = tuple(_result(s) for s in self.states if s.error is None and s.plan is not None)
        failures = tuple(
            CopyFailure(s.job.label, s.error) for s in self.states if s.error is not None
        )
        return CopyOutcome(results, failures)


BlobKey = tuple[Hashable, str]  # (blob scope, digest)


def blob_scope(destination: ImageDestination) -> Hashable:
    """Which blob store ``destination`` writes to (see :class:`SharedBlobStore`)."""
    if isinstance(destination, SharedBlobStore):
        return destination.blob_scope
    return ("object", id(destination))  # jobs hold their destinations: ids stay unique


def _as_error(digest: str, error: BaseException | None) -> SealpyError:
    """What a blob's transfer failed with, as an error about that blob (its cause kept)."""
    if isinstance(error, SealpyError):
        return error
    if isinstance(error, OSError):
        named = SealpyError(f"writing failed: {error.strerror or error}", subject=f"blob {digest}")
    else:
        named = SealpyError(f"{type(error).__name__}: {error}", subject=f"blob {digest}")
    named.__cause__ = error
    return named


def _result(state: _JobState) -> CopyResult:
    assert state.plan is not None
    fetched, reused, size = state.counts()
    return CopyResult(
        state.job.label,
        state.plan.top.digest,
        state.plan.platforms,
        fetched,
        reused,
        size,
        state.finished - state.started,
        tuple(dict.fromkeys([state.plan.top.digest, *(m.digest for m in state.plan.manifests)])),
    )
