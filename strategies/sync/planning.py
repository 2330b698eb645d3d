"""Planning for the ``sync`` strategy: what skopeo copies, before any copy starts.

Each source is looked at once (a HEAD, and the body only for an index): which digest its
tag will point to, whether every platform is copied, and whether the image is stored
already (a warm run copies nothing). Two sources stored under one ``repository:tag``
with different content are conflicts, failed here before anything lands. Images copied
by tag are then grouped into batches for ``skopeo sync``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sealpy.core.errors import ConflictError, SealpyError
from sealpy.core.image.media import IMAGE_TYPES, Manifest
from sealpy.core.image.walk import is_complete
from sealpy.core.model import CacheOptions, ImageSet, RequiredImage
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.transport.copy import select_children
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

# Smaller groups are copied one by one: a batch saves a process start-up per image.
BATCH_MIN = 4


@dataclass(frozen=True)
class CopyPlan:
    """How one image is copied: skopeo source, destination, flags; the digest it will have."""

    label: str
    source: str
    repository: str
    tag: str | None
    copy_reference: str  # tag or digest at the destination
    all_platforms: bool
    platform: Platform | None
    expected: str | None  # the digest the destination tag will point to, when known
    skip: bool = False
    ref: ImageReference | None = None

    @property
    def by_digest(self) -> bool:
        """Copied by digest (and tagged afterwards when it has a tag)."""
        return self.copy_reference.startswith("sha256:")

    @property
    def batchable(self) -> bool:
        """Copied by tag, so ``skopeo sync`` can take it with others of its namespace."""
        return not self.skip and self.ref is not None and not self.by_digest

    def batch_key(self) -> tuple:
        """Images with one key can share a ``skopeo sync``: same source registry and
        namespace (one destination), same platform mode (one set of flags)."""
        assert self.ref is not None
        namespace = self.repository.rsplit("/", 1)[0] if "/" in self.repository else ""
        return (self.ref.registry, namespace, self.all_platforms, self.platform)

    def copy_flags(self) -> list[str]:
        """Every platform, with the index unchanged (its digest is the one expected); a
        digest-pinned image keeps its digest too."""
        if self.all_platforms:
            return ["--all", "--preserve-digests"]
        return ["--preserve-digests"] if self.by_digest else []

    def platform_flags(self) -> list[str]:
        """skopeo's global flags choosing the platform of a multi-platform source."""
        if self.platform is None:
            return []
        flags = ["--override-os", self.platform.os, "--override-arch", self.platform.architecture]
        if self.platform.variant:
            flags += ["--override-variant", self.platform.variant]
        return flags


def plan_images(
    images: ImageSet,
    layout: DistributionLayout,
    client: RegistryClient,
    options: CacheOptions,
) -> tuple[list[CopyPlan], list[SealpyError]]:
    """Look at each source once (in parallel): index or not, and is it already here?
    Returns the plans without conflicts, and one failure line per image left out."""

    def plan(required: RequiredImage) -> CopyPlan:
        return plan_image(required.reference, layout, client, options, pinned=required.pinned)

    plans: list[CopyPlan] = []
    failures: list[SealpyError] = []
    with ThreadPoolExecutor(max(1, options.max_parallel)) as pool:
        futures = [(r.reference, pool.submit(plan, r)) for r in images.images]
        for ref, future in futures:
            try:
                plans.append(future.result())
            except SealpyError as exc:
                failures.append(exc.about(str(ref)))
                options.progress.image_failed(str(ref), str(exc))
    return without_conflicts(plans, failures, options)


def without_conflicts(
    plans: list[CopyPlan], failures: list[SealpyError], options: CacheOptions
) -> tuple[list[CopyPlan], list[SealpyError]]:
    """Two sources for one repository:tag with different content would overwrite each
    other: fail them all before anything is copied (as ``proxy`` does)."""
    groups: dict[tuple[str, str], list[CopyPlan]] = {}
    for plan in plans:
        if plan.tag:
            groups.setdefault((plan.repository, plan.tag), []).append(plan)
    conflicted: set[str] = set()
    for (repository, tag), group in groups.items():
        if len({plan.expected for plan in group}) < 2:
            continue
        labels = ", ".join(plan.label for plan in group)
        error = ConflictError(
            f"{labels} would all be stored as {repository}:{tag} with different content"
        )
        for plan in group:
            conflicted.add(plan.label)
            failures.append(error)  # one error for the group: said once
            options.progress.image_failed(plan.label, str(error))
    return [plan for plan in plans if plan.label not in conflicted], failures


def plan_image(
    ref: ImageReference,
    layout: DistributionLayout,
    client: RegistryClient,
    options: CacheOptions,
    *,
    pinned: str | None = None,
) -> CopyPlan:
    """The plan for one source image (raises what the source answers on failure).

    ``pinned`` (a digest from ``sealpy.lock``) is copied instead of whatever the tag
    points to now: ``docker://repo@<digest>`` — for a single platform of an index, the
    platform's child by its digest — then tagged, as a ``name:tag@digest`` reference."""
    repository = ref.cache_repository
    source_repo = client.repository(ref)
    digest = pinned or ref.digest
    asked = digest or ref.reference
    # A HEAD answers for most images (digest and media type); only an index needs its
    # body, to choose the platform's child.
    head = source_repo.head_manifest(asked)
    top: Manifest | None = None
    if head is None or head.media_type.split(";")[0] not in IMAGE_TYPES:
        top = source_repo.get_manifest(asked)
    is_index = top is not None and top.is_index
    source = f"docker://{ref.name}@{digest}" if digest else f"docker://{ref}"
    copy_reference = digest or ref.tag or "latest"
    all_platforms = bool(
        is_index and (options.all_platforms or len(options.platforms) > 1 or ref.digest)
    )
    platform: Platform | None = None
    expected = top.digest if top is not None else head.digest  # type: ignore[union-attr]
    if top is not None and top.is_index:
        # Even when every platform is copied, each one asked for must exist: the same
        # choice (and error listing what the image has) as ``proxy``.
        chosen = select_children(top, options.platforms, options.all_platforms)
        if not all_platforms:
            platform = options.platforms[0]
            expected = chosen[0].digest
            if pinned:  # the locked index's child, by digest (the tag may have moved)
                source = f"docker://{ref.name}@{expected}"
                copy_reference = expected
    if is_index and all_platforms:
        options.progress.info(
            f"copying every platform of {ref} (keeps the index digest; moves more bytes)"
        )
    skip = is_stored(layout, repository, ref.tag or copy_reference, expected)
    return CopyPlan(
        str(ref),
        source,
        repository,
        ref.tag,
        copy_reference,
        all_platforms,
        platform,
        expected,
        skip,
        ref,
    )


def is_stored(
    layout: DistributionLayout, repository: str, reference: str, expected: str | None
) -> bool:
    """Whether ``repository:reference`` points to ``expected`` already, with every
    manifest and blob of it in the directory: then the image needs no copy."""
    if expected is None or layout.resolve(repository, reference) != expected:
        return False
    stored = layout.stored_manifest(repository, expected)
    return stored is not None and is_complete(
        stored, lambda child: layout.stored_manifest(repository, child.digest), layout.has_blob
    )


def batches(plans: list[CopyPlan], max_parallel: int) -> list[list[CopyPlan]]:
    """Images copied by tag, grouped by source namespace and platform mode, then split
    so every worker has a batch: one ``skopeo sync`` moves a whole batch, saving a
    process start-up and a configuration load per image."""
    per_batch = -(-len(plans) // max(1, max_parallel))
    if per_batch < BATCH_MIN:
        # Fewer images than workers can each take a few: parallel copies are faster
        # (4 large images in one batch were copied one after another).
        return [[plan] for plan in plans]
    groups: dict[tuple, list[CopyPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.batch_key(), []).append(plan)
    return [
        group[i : i + per_batch]
        for group in groups.values()
        for i in range(0, len(group), per_batch)
    ]
