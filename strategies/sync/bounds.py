"""Bounding what skopeo writes into the local registry: a source whose blob body never
ends must not fill the disk.

skopeo 1.9 copies a blob body as long as the source sends it, whatever the manifest said
its size is (the ``proxy`` strategy stops at the descriptor's size). So while a skopeo
runs, its uploads in the registry directory are watched: an upload past twice the
largest blob of the images that skopeo copies into that repository (skopeo may compress a
layer again, a little larger) cannot be any of them, and the skopeo is stopped. The
sizes cost requests (the manifests), so they are looked up only for an upload past
:data:`FIRST_LOOK`: a run without large uploads makes none.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from sealpy.core.errors import SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.image.walk import all_children, walk
from sealpy.core.transport.copy import select_children
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient
from sealpy.strategies.sync.planning import CopyPlan

FIRST_LOOK = 1 << 20  # uploads up to this size are never looked at
# skopeo may compress a layer again on its way (a 64 MiB layer of random bytes arrived
# 2,291 bytes larger than its source): an upload may exceed the largest blob by that much,
# never by as much as the blob itself. So the bound is twice the largest blob, plus this.
SLACK = FIRST_LOOK
OVERSIZED = "sent more than the image's largest blob"  # permanent: a retry gets the same


class UploadBound:
    """The uploads into the repositories of one cache run, checked against the largest
    blob the run's images have there (every image of the run: two skopeos may write into
    one repository)."""

    def __init__(
        self, layout: DistributionLayout, plans: Sequence[CopyPlan], client: RegistryClient
    ) -> None:
        self.layout = layout
        self.repositories = layout.root / "docker" / "registry" / "v2" / "repositories"
        self.client = client
        self.plans: dict[str, list[CopyPlan]] = {}
        for plan in plans:
            if plan.ref is not None and not plan.skip:
                self.plans.setdefault(plan.repository, []).append(plan)
        self._blobs: dict[str, list[tuple[CopyPlan, Descriptor]] | None] = {}
        self._lock = threading.Lock()

    def check(self, repositories: Sequence[str]) -> str | None:
        """Why a skopeo writing into ``repositories`` must stop (an upload there past
        every blob expected), else ``None``."""
        for repository in repositories:
            if repository not in self.plans:
                continue
            for size in _upload_sizes(self.repositories / repository / "_uploads"):
                if size <= FIRST_LOOK:
                    continue
                blobs = self.blobs(repository)
                if blobs is None:  # the sizes could not be looked up: no bound
                    return None
                largest = max((d.size for _, d in blobs), default=0)
                if size > 2 * largest + SLACK:
                    return self.describe(blobs, largest, size)
        return None

    def blobs(self, repository: str) -> list[tuple[CopyPlan, Descriptor]] | None:
        """Every blob of the images copied into ``repository`` (looked up once)."""
        with self._lock:
            if repository not in self._blobs:
                try:
                    self._blobs[repository] = [
                        (plan, blob)
                        for plan in self.plans[repository]
                        for blob in self._image_blobs(plan)
                    ]
                except SealpyError:
                    self._blobs[repository] = None
            return self._blobs[repository]

    def _image_blobs(self, plan: CopyPlan) -> list[Descriptor]:
        assert plan.ref is not None
        source = self.client.repository(plan.ref)
        top = source.get_manifest(plan.copy_reference)

        def select(index: Manifest) -> Sequence[Descriptor]:
            if plan.all_platforms or plan.platform is None or index is not top:
                return all_children(index)
            return select_children(index, [plan.platform], False)

        nodes = walk(top, lambda child: source.get_manifest(child.digest), select=select)
        return [blob for node in nodes for blob in node.manifest.blobs]

    def describe(self, blobs: list[tuple[CopyPlan, Descriptor]], largest: int, size: int) -> str:
        """The error (the caller names the image): the blob(s) it can be, those of the
        image not stored yet."""
        missing = sorted({d.digest for _, d in blobs if not self.layout.has_blob(d.digest)})
        which = missing[0] if len(missing) == 1 else "one of " + ", ".join(missing)
        return f"blob {which}: the source {OVERSIZED} ({largest} bytes): {size} bytes received"


def _upload_sizes(uploads: Path) -> list[int]:
    """The sizes of the upload data files under ``uploads`` (none when it is absent)."""
    try:
        entries = list(os.scandir(uploads))
    except OSError:
        return []
    sizes = []
    for entry in entries:
        try:
            info = os.stat(Path(entry.path) / "data", follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            sizes.append(info.st_size)
    return sizes
