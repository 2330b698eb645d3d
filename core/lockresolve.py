"""``sealpy lock``: resolve every image a context needs to a manifest digest.

Each image's tag (or digest) is asked of its registry once — a manifest GET through the
registry client, mirrors and credentials as for caching; for an index, the platform
children are chosen exactly as the copy engine chooses them
(:func:`~sealpy.core.transport.copy.select_children`), so the lock names the platform
manifests a build will cache. Without ``update`` an existing lock keeps the digests it
has: only images new to the context are resolved (and, when the platforms asked for
changed, the platform children of kept images are chosen again from their locked index).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealpy.core.errors import CacheError, SealpyError
from sealpy.core.image.media import Manifest
from sealpy.core.lockfile import (
    LockedImage,
    LockedPlatform,
    LockFile,
    LockInputs,
    archives_of,
)
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, RequiredImage, ScanResult
from sealpy.core.supplychain.cosign import signature_tag
from sealpy.core.transport.copy import describe_platform, select_children
from sealpy.core.transport.remote import RegistryClient

if TYPE_CHECKING:
    from sealpy.core.cache.strategy import CacheStrategy


@dataclass(frozen=True)
class LockOutcome:
    """The new lock, and what changed against the previous one (reference lists)."""

    lock: LockFile
    added: tuple[str, ...]
    removed: tuple[str, ...]
    moved: tuple[str, ...]  # re-resolved to another digest (with update)
    kept: tuple[str, ...]


def resolve_lock(
    scanned: ScanResult,
    options: CacheOptions,
    previous: LockFile | None = None,
    *,
    update: bool = False,
    on_resolved: Callable[[LockedImage], None] | None = None,
) -> LockOutcome:
    """The lock for ``scanned``: every image resolved against its registry, or kept from
    ``previous`` (unless ``update``). Every failure is collected and raised as one error
    naming each image, so nothing is written unless every image resolved."""
    inputs = LockInputs.of(scanned, options)
    old = previous.by_reference() if previous is not None else {}
    keep_platforms = previous is not None and previous.inputs.same_platforms(inputs)
    results: dict[str, LockedImage] = {}
    failures: list[SealpyError] = []
    transport = options.transport
    with transport.client(max_connections=max(4, transport.max_parallel * 2)) as client:

        def one(required: RequiredImage) -> LockedImage:
            ref = str(required.reference)
            kept = None if update else old.get(ref)
            if kept is not None and keep_platforms:
                return _with_sources(kept, required)
            # A kept image keeps its digest; its platform children may need choosing again.
            reference = kept.digest if kept is not None else required.reference.reference
            locked = _resolve(client, required, reference, options)
            if kept is not None:
                locked = LockedImage(
                    locked.reference,
                    locked.digest,
                    locked.media_type,
                    locked.platforms,
                    locked.sources,
                    kept.signatures,
                )
            return locked

        with ThreadPoolExecutor(max(1, options.max_parallel)) as pool:
            futures = [(r, pool.submit(one, r)) for r in scanned.images.images]
            for required, future in futures:
                try:
                    locked = future.result()
                except SealpyError as exc:
                    failures.append(exc.about(str(required.reference)))
                    continue
                results[locked.reference] = locked
                if on_resolved is not None:
                    on_resolved(locked)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        causes = "; ".join(str(f) for f in failures)
        raise SealpyError(
            f"{len(failures)} of {len(scanned.images.images)} images could not be resolved: {causes}"
        )
    lock = LockFile(inputs, tuple(results.values()), archives_of(scanned))
    added = tuple(sorted(set(results) - set(old)))
    removed = tuple(sorted(set(old) - set(results)))
    moved = tuple(sorted(r for r in results if r in old and old[r].digest != results[r].digest))
    kept = tuple(sorted(r for r in results if r in old and old[r].digest == results[r].digest))
    return LockOutcome(lock, added, removed, moved, kept)


def _resolve(
    client: RegistryClient, required: RequiredImage, reference: str, options: CacheOptions
) -> LockedImage:
    """One image: its manifest by tag (or digest), and for an index the children the
    engine would cache for the options' platforms."""
    repository = client.repository(required.reference)
    manifest: Manifest = repository.get_manifest(reference)
    platforms: tuple[LockedPlatform, ...] = ()
    if manifest.is_index:
        chosen = select_children(manifest, options.platforms, options.all_platforms)
        platforms = tuple(
            sorted(
                (LockedPlatform(describe_platform(c), c.digest) for c in chosen),
                key=lambda p: (p.platform, p.digest),
            )
        )
    # The cosign signature manifests (``sha256-<hex>.sig``) of the manifest and of each
    # platform manifest locked: one HEAD each.
    signed = [manifest.digest, *(p.digest for p in platforms)]
    found = [repository.head_manifest(signature_tag(d)) for d in signed]
    return LockedImage(
        reference=str(required.reference),
        digest=manifest.digest,
        media_type=manifest.media_type,
        platforms=platforms,
        sources=required.sources,
        signatures=tuple(sorted({d.digest for d in found if d is not None})),
    )


def _with_sources(kept: LockedImage, required: RequiredImage) -> LockedImage:
    """A kept entry, with where the scan found the image now."""
    return LockedImage(
        kept.reference,
        kept.digest,
        kept.media_type,
        kept.platforms,
        required.sources,
        kept.signatures,
    )


def gone_digests(images: ImageSet, cached: set[str], options: CacheOptions) -> list[str]:
    """After a failed locked run: each pinned image that was not cached and whose locked
    digest its registry no longer has (a HEAD by digest answers 404), as
    ``reference@digest``. Asked only on failure, so a run that works sends nothing more."""
    failed = [i for i in images.images if i.pinned and str(i.reference) not in cached]
    if not failed:
        return []
    transport = options.transport
    with transport.client(max_connections=4) as client:

        def gone(required: RequiredImage) -> bool:
            assert required.pinned is not None
            try:
                repository = client.repository(required.reference)
                return repository.head_manifest(required.pinned) is None
            except SealpyError:
                return False  # unreachable, refused: not known to be gone

        with ThreadPoolExecutor(max(1, min(8, options.max_parallel))) as pool:
            answers = list(pool.map(gone, failed))
    return [f"{i.reference}@{i.pinned}" for i, g in zip(failed, answers, strict=True) if g]


def locked_strategy(strategy: type[CacheStrategy]) -> type[CacheStrategy]:
    """``strategy`` whose failures name each locked digest that is gone upstream (the
    strategy's own error says only "not found"): a subclass, so its name, availability
    and behaviour are the strategy's own."""

    class Locked(strategy):  # type: ignore[valid-type,misc]
        def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions):
            try:
                return super().cache(images, registry_dir, options)
            except CacheError as exc:
                report = exc.report if isinstance(exc.report, CacheReport) else None
                cached = {i.source for i in report.images} if report else set()
                gone = gone_digests(images, cached, options)
                if not gone:
                    raise
                failed = len(images.images) + len(images.archives) - len(cached)
                message = "; ".join(
                    f"{g.split('@')[0]}: locked digest {g.split('@')[1]} is gone from its "
                    "registry (`sealpy lock --update` locks what the tag points to now)"
                    for g in gone
                )
                if failed > len(gone):
                    message += f"; {exc}"
                raise CacheError(message, exc.report) from exc

    Locked.__name__ = Locked.__qualname__ = strategy.__name__
    Locked.__module__ = strategy.__module__
    return Locked
