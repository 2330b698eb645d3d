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

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from sealpy.core.errors import ConflictError, PlatformNotFoundError, SealpyError
from sealpy.core.model import CachedImage
from sealpy.core.progress import ProgressReporter, SilentProgress
from sealpy.core.reference import Platform, select_platform
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.media import Descriptor, Manifest


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


class ImageDestination(Protocol):
    """Where images are written to (one repository)."""

    def has_blob(self, digest: str) -> bool: ...

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Take one blob from ``source``; it must only become visible once verified."""
        ...

    def stored_manifest(self, digest: str) -> Manifest | None:
        """The manifest with that digest if this destination already holds it intact."""
        ...

    def put_manifest(self, manifest: Manifest) -> None:
        """Store a manifest whose blobs (or children) are present."""
        ...

    def set_tag(self, tag: str, manifest: Manifest) -> None: ...


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
    label: str
    digest: str
    platforms: tuple[str, ...]
    blobs_fetched: int
    blobs_reused: int
    bytes_fetched: int
    seconds: float

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
    label: str
    error: SealpyError


@dataclass(frozen=True)
class CopyOutcome:
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


def resolve(job: CopyJob, platforms: Sequence[Platform], all_platforms: bool) -> _Plan:
    top = job.source.get_manifest(job.reference)
    if not top.is_index:
        return _Plan(top, [top], ())
    manifests: list[Manifest] = []
    names: list[str] = []

    def add_children(index: Manifest, select: bool) -> None:
        for child in select_children(index, platforms, all_platforms or not select):
            manifest = job.destination.stored_manifest(child.digest)
            if manifest is None:
                manifest = job.source.get_manifest(child.digest)
            if manifest.is_index:  # nested index: take it whole
                add_children(manifest, select=False)
            else:
                names.append(describe_platform(child))
            manifests.append(manifest)

    add_children(top, select=True)
    return _Plan(top, manifests, tuple(names))


@dataclass
class _JobState:
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


def copy_images(
    jobs: Sequence[CopyJob],
    *,
    platforms: Sequence[Platform],
    all_platforms: bool = False,
    max_parallel: int = 8,
    progress: ProgressReporter | None = None,
) -> CopyOutcome:
    """Run every job; failures are collected per job, never stop the others."""
    progress = progress or SilentProgress()
    states = [_JobState(job) for job in jobs]
    groups: dict[str, list[_JobState]] = defaultdict(list)
    for state in states:
        if state.job.target:
            groups[state.job.target].append(state)
    cancel = threading.Event()
    blob_futures: dict[str, Future] = {}
    blob_waiters: dict[str, list[_JobState]] = defaultdict(list)
    blob_size: dict[str, int] = {}
    futures: dict[Future, tuple[str, object]] = {}
    lock = threading.Lock()

    def fail(state: _JobState, error: SealpyError) -> None:
        if state.done:
            return
        state.done = True
        state.finished = time.monotonic()
        # Name the image once: a conflict's message already names every image involved.
        named = str(error).startswith(state.job.label) or isinstance(error, ConflictError)
        state.error = error if named else type(error)(f"{state.job.label}: {error}")
        progress.image_failed(state.job.label, str(error))

    def count_bytes(state: _JobState) -> Callable[[int], None]:
        def on_bytes(n: int) -> None:
            if cancel.is_set():
                raise Cancelled("interrupted")
            with lock:
                state.bytes += n
            progress.image_bytes(state.job.label, n)

        return on_bytes

    def commit(state: _JobState) -> None:
        assert state.plan is not None
        plan = state.plan
        job = state.job
        try:
            for manifest in plan.manifests:
                job.destination.put_manifest(manifest)
            if plan.top.is_index:
                job.destination.put_manifest(plan.top)
            if job.tag:
                job.destination.set_tag(job.tag, plan.top)
        except SealpyError as exc:
            fail(state, exc)
            return
        except OSError as exc:
            fail(state, SealpyError(f"writing failed: {exc.strerror or exc}"))
            return
        state.done = True
        state.finished = time.monotonic()
        progress.image_done(
            job.label,
            f"{state.fetched} blobs fetched, {state.reused} reused, "
            f"{state.bytes / (1 << 20):.1f} MiB",
        )

    def maybe_commit(state: _JobState) -> None:
        """Commit once the job's blobs are in — and every job with the same target is
        resolved, so two sources for one repository:tag are caught before either lands."""
        if state.done or state.plan is None or state.pending:
            return
        group = groups.get(state.job.target or "", [state])
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
                fail(s, conflict)
            return
        commit(state)

    def on_resolved(state: _JobState, future: Future) -> None:
        try:
            plan = future.result()
        except SealpyError as exc:
            fail(state, exc)
            plan = None
        if plan is not None:
            state.plan = plan
            needed: dict[str, Descriptor] = {}
            for manifest in plan.manifests:
                for blob in manifest.blobs:
                    needed.setdefault(blob.digest, blob)
            progress.image_started(state.job.label, sum(b.size for b in needed.values()))
            for digest, blob in needed.items():
                if digest in blob_futures:
                    existing = blob_futures[digest]
                    state.reused += 1  # fetched once, for another image
                    if not existing.done():
                        state.pending.add(digest)
                        blob_waiters[digest].append(state)
                    elif existing.exception() is not None:
                        fail(state, _as_error(digest, existing.exception()))
                elif state.job.destination.has_blob(digest):
                    state.reused += 1
                else:
                    state.pending.add(digest)
                    state.fetched += 1
                    blob_size[digest] = blob.size
                    blob_waiters[digest].append(state)
                    fut = pool.submit(
                        state.job.destination.receive_blob,
                        blob,
                        state.job.source,
                        count_bytes(state),
                    )
                    blob_futures[digest] = fut
                    futures[fut] = ("blob", digest)
        # A resolution may unblock others waiting on the same target.
        for s in groups.get(state.job.target or "", [state]):
            maybe_commit(s)

    def on_blob(digest: str, future: Future) -> None:
        error = future.exception()
        for state in blob_waiters.pop(digest, []):
            state.pending.discard(digest)
            if error is not None:
                fail(state, _as_error(digest, error))
            else:
                maybe_commit(state)

    pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="sealpy-copy")
    try:
        for state in states:
            fut = pool.submit(resolve, state.job, platforms, all_platforms)
            futures[fut] = ("resolve", state)
        while futures:
            done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for fut in done:
                kind, key = futures.pop(fut)
                if kind == "resolve":
                    on_resolved(key, fut)  # type: ignore[arg-type]
                else:
                    on_blob(key, fut)  # type: ignore[arg-type]
    except BaseException:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for state in states:
        if not state.done:  # waiting on a conflicting partner that failed
            fail(state, SealpyError("not stored: another image for the same tag failed"))
    results = tuple(_result(s) for s in states if s.error is None and s.plan is not None)
    failures = tuple(CopyFailure(s.job.label, s.error) for s in states if s.error is not None)
    return CopyOutcome(results, failures)


def _as_error(digest: str, error: BaseException | None) -> SealpyError:
    if isinstance(error, SealpyError):
        return error
    if isinstance(error, OSError):
        return SealpyError(f"blob {digest}: writing failed: {error.strerror or error}")
    return SealpyError(f"blob {digest}: {type(error).__name__}: {error}")


def _result(state: _JobState) -> CopyResult:
    # A source that writes blobs into the destination itself (a docker-archive compressing
    # its layers) lists them in ``converted``: the engine found them present, yet they
    # are this job's work, not reuse.
    converted = list(getattr(state.job.source, "converted", ()))
    assert state.plan is not None
    return CopyResult(
        state.job.label,
        state.plan.top.digest,
        state.plan.platforms,
        state.fetched + len(converted),
        max(0, state.reused - len(converted)),
        state.bytes + sum(b.size for b in converted),
        state.finished - state.started,
    )
