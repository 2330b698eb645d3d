"""Carrying out the ``sync`` strategy's plans with skopeo, several copies at once.

Images copied by tag go in batches (one ``skopeo sync`` each) when there are enough of
them; the rest, digest-pinned images and ``tar.txt`` archives, are copied one by one
(``skopeo copy``). Whatever a batch did not deliver as planned is copied on its own,
which retries it and gives an error that names it. skopeo does not say what it moved, so
blobs are counted from the directory: a blob present before the run, or already counted
for an earlier image, is reused; any other is fetched.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from sealpy.core.cache.attach import AttachTarget, carry_attachments
from sealpy.core.errors import RegistryError, SealpyError
from sealpy.core.image.media import Manifest
from sealpy.core.image.walk import walk
from sealpy.core.model import ArchiveEntry, CachedImage, CacheOptions
from sealpy.core.reference import ImageReference
from sealpy.core.transport.copy import ImageDestination
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination
from sealpy.strategies.sync.bounds import UploadBound
from sealpy.strategies.sync.planning import (
    BATCH_MIN,
    CopyPlan,
    batches,
)
from sealpy.strategies.sync.skopeo import SkopeoRunner

# What one task gives: per image, its label and what was stored, or why not.
_Results = list[tuple[str, CachedImage | SealpyError]]


@dataclass
class CopyOutcome:
    """What a copy run stored, and one error (naming its image) per image it could not."""

    results: list[CachedImage] = field(default_factory=list)
    failures: list[SealpyError] = field(default_factory=list)


class Copier:
    """Runs the copies of one cache run into the local registry at :attr:`host` (set once
    that registry runs; a warm run, where every plan is skipped, needs none)."""

    def __init__(
        self,
        runner: SkopeoRunner,
        options: CacheOptions,
        layout: DistributionLayout,
        client: RegistryClient,
    ) -> None:
        self.host = ""
        self.local = client  # replaced by serve_at() with a client for the local registry
        self.runner = runner
        self.options = options
        self.layout = layout
        self.client = client
        self._lock = threading.Lock()
        # skopeo does not say what it moved: compare with what the directory held before.
        self._present_before = set(layout.blob_digests())
        self._counted: set[str] = set()
        self.bound = UploadBound(layout, [], client)

    def serve_at(self, host: str, local: RegistryClient) -> None:
        """The local registry runs at ``host``; ``local`` is a client holding the run's
        credential for it."""
        self.host = host
        self.local = local

    def run(self, plans: list[CopyPlan], archives: tuple[ArchiveEntry, ...]) -> CopyOutcome:
        """Copy every plan and archive, ``max_parallel`` tasks at once."""
        outcome = CopyOutcome()
        self.bound = UploadBound(self.layout, plans, self.client)
        tasks = self._tasks(plans, archives)
        pool = ThreadPoolExecutor(
            max(1, self.options.max_parallel), thread_name_prefix="sealpy-skopeo"
        )
        try:
            for future in [pool.submit(task) for task in tasks]:
                for label, result in future.result():
                    if isinstance(result, CachedImage):
                        outcome.results.append(result)
                        continue
                    outcome.failures.append(result.about(label))
                    self.options.progress.image_failed(label, str(result))
        except BaseException:
            self.runner.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return outcome

    def _tasks(
        self, plans: list[CopyPlan], archives: tuple[ArchiveEntry, ...]
    ) -> list[Callable[[], _Results]]:
        """One task per batch, per image copied alone and per archive."""
        tasks: list[Callable[[], _Results]] = []
        singles = [p for p in plans if not p.batchable]
        for batch in batches([p for p in plans if p.batchable], self.options.max_parallel):
            if len(batch) < BATCH_MIN:
                singles.extend(batch)
            else:
                tasks.append(partial(self._batch, batch))
        for plan in singles:
            tasks.append(partial(_alone, plan.label, partial(self._image, plan)))
        for entry in archives:
            label = f"{entry.transport}:{entry.path}"
            tasks.append(partial(_alone, label, partial(self._archive, entry, label)))
        return tasks

    def _batch(self, batch: list[CopyPlan]) -> _Results:
        """``skopeo sync`` a batch; any image it did not deliver as expected is copied on its
        own, which retries it and gives an error that names it."""
        first = batch[0]
        assert first.ref is not None
        started = time.monotonic()
        for plan in batch:
            self.options.progress.image_started(plan.label)
        namespace = first.batch_key()[1]
        registry = first.ref.registry
        images: dict[str, list[str]] = {}
        for plan in batch:
            assert plan.ref is not None
            images.setdefault(plan.ref.repository, []).append(plan.copy_reference)
        spec = {registry: {"images": images, "tls-verify": not self._insecure(registry)}}
        spec_file = self.runner.private / f"sync-{uuid.uuid4().hex}.yaml"
        spec_file.write_text(json.dumps(spec))  # YAML is a superset of JSON
        destination = f"{self.host}/{namespace}" if namespace else self.host
        self.runner.run(
            first.label,
            first.platform_flags(),
            "sync",
            ["--src", "yaml", "--dest", "docker", "--keep-going", *first.copy_flags()],
            [str(spec_file), destination],
            retries=1,  # a partial batch is finished image by image below
            bound=partial(self.bound.check, sorted({plan.repository for plan in batch})),
        )
        out: _Results = []
        for plan in batch:
            digest = self.layout.resolve(plan.repository, plan.copy_reference)
            if digest is None or digest != plan.expected:
                out.append(_one(plan.label, partial(self._image, plan)))
                continue
            out.append((plan.label, self._done(plan, digest, started)))
        return out

    def _insecure(self, host: str) -> bool:
        return self.options.hosts.plain_http_allowed(host)

    def _image(self, plan: CopyPlan) -> CachedImage:
        """Copy one image with ``skopeo copy`` (and tag it when copied by digest)."""
        started = time.monotonic()
        progress = self.options.progress
        if plan.skip:
            progress.image_done(plan.label, "already cached")
            return CachedImage(
                plan.label,
                plan.repository,
                plan.tag,
                plan.expected or "",
                seconds=time.monotonic() - started,
            )
        progress.image_started(plan.label)
        destination = (
            f"docker://{self.host}/{plan.repository}@{plan.copy_reference}"
            if plan.by_digest
            else f"docker://{self.host}/{plan.repository}:{plan.copy_reference}"
        )
        self.runner.run(
            plan.label,
            plan.platform_flags(),
            "copy",
            plan.copy_flags(),
            [plan.source, destination],
            bound=partial(self.bound.check, [plan.repository]),
        )
        digest = self.layout.resolve(plan.repository, plan.copy_reference)
        if plan.tag and plan.by_digest:
            self._tag(plan)
            digest = self.layout.resolve(plan.repository, plan.tag)
        if digest is None:
            raise RegistryError("skopeo finished but the image is not in the registry directory")
        return self._done(plan, digest, started)

    def _tag(self, plan: CopyPlan) -> None:
        """Tag a digest-copied image: put the same manifest under the tag (skopeo 1.9
        refuses name:tag@digest), through the local registry so it stays consistent."""
        manifest = self.layout.get_manifest(plan.repository, plan.copy_reference)
        local = self.local.repository(ImageReference(self.host, plan.repository, plan.tag))
        local.put_manifest(plan.tag or "latest", manifest)

    def _archive(self, entry: ArchiveEntry, label: str) -> CachedImage:
        """Copy one ``tar.txt`` archive to its destination name."""
        started = time.monotonic()
        repository = entry.destination.cache_repository
        tag = entry.destination.tag or "latest"
        self.options.progress.image_started(label)
        source = f"{entry.transport}:{entry.path}"
        self.runner.run(label, [], "copy", [], [source, f"docker://{self.host}/{repository}:{tag}"])
        digest = self.layout.resolve(repository, tag)
        if digest is None:
            raise RegistryError("skopeo finished but the image is not in the registry directory")
        fetched, reused, size = self._blob_counts(repository, digest)
        self.options.progress.image_done(label, f"{fetched} blobs fetched, {reused} reused")
        return CachedImage(
            label,
            repository,
            tag,
            digest,
            blobs_fetched=fetched,
            blobs_reused=reused,
            bytes_fetched=size,
            seconds=time.monotonic() - started,
        )

    def _served_by(self, plan: CopyPlan) -> str | None:
        """Where skopeo read ``plan``'s image: known only when it has no mirror (skopeo
        picks among mirrors itself and does not say which one answered)."""
        if plan.ref is None:
            return None
        endpoints = self.options.hosts.endpoints(plan.ref)
        return endpoints[0].label if len(endpoints) == 1 else None

    def _done(self, plan: CopyPlan, digest: str, started: float) -> CachedImage:
        fetched, reused, size = self._blob_counts(plan.repository, digest)
        self.options.progress.image_done(plan.label, f"{fetched} blobs fetched, {reused} reused")
        return CachedImage(
            plan.label,
            plan.repository,
            plan.tag,
            digest,
            platforms=(str(plan.platform),) if plan.platform else (),
            blobs_fetched=fetched,
            blobs_reused=reused,
            bytes_fetched=size,
            seconds=time.monotonic() - started,
            served_by=self._served_by(plan),
        )

    def _stored(self, repository: str, digest: str) -> list[Manifest]:
        """The manifests stored for the image ``digest``: itself and, for an index, the
        children stored under it."""
        stored = self.layout.stored_manifest(repository, digest)
        if stored is None:
            return []
        return [
            node.manifest
            for node in walk(
                stored, lambda child: self.layout.stored_manifest(repository, child.digest)
            )
        ]

    def attach(self, outcome: CopyOutcome, plans: list[CopyPlan], staging: Path) -> None:
        """Carry what is attached to every manifest each image stored (signatures,
        attestations, SBOMs, referrers: :mod:`sealpy.core.cache.attach`) — with sealpy's
        engine, not skopeo, which rewrites cosign signatures and copies no attestations,
        SBOMs or referrers. They are pushed into the local registry while it runs (blobs
        staged in ``staging`` first); on a warm run, where none runs, they are written
        into the directory as ``proxy`` writes them. An image whose attachments fail is
        moved from ``outcome.results`` to its failures."""
        if not self.options.copy_signatures:
            return
        plan_of = {plan.label: plan for plan in plans}
        targets: list[AttachTarget] = []
        for image in outcome.results:
            plan = plan_of.get(image.source)
            if plan is None or plan.ref is None:  # an archive: nothing attached
                continue
            digests = tuple(m.digest for m in self._stored(image.repository, image.digest))
            source = self.client.repository(plan.ref)
            destination = self._destination(image.repository)
            targets.append(AttachTarget(image.source, source, digests, destination))
        attached = carry_attachments(
            targets,
            max_parallel=self.options.max_parallel,
            staging=staging if self.host else None,
        )
        outcome.results = [
            replace(image, attachments=attached.counts.get(image.source, 0))
            for image in outcome.results
            if image.source not in attached.failures
        ]
        outcome.failures.extend(attached.failures.values())

    def _destination(self, repository: str) -> ImageDestination:
        if not self.host:
            return self.layout.repository(repository)
        return RemotePushDestination(
            self.local.repository(ImageReference(self.host, repository, "latest"))
        )

    def _blob_counts(self, repository: str, digest: str) -> tuple[int, int, int]:
        """(fetched, reused, bytes) for the image stored as ``digest``, each blob counted
        as fetched by the first image that needed it."""
        manifests = self._stored(repository, digest)
        fetched = reused = size = 0
        with self._lock:
            for manifest in manifests:
                for blob in manifest.blobs:
                    if blob.digest in self._present_before or blob.digest in self._counted:
                        reused += 1
                    else:
                        self._counted.add(blob.digest)
                        fetched += 1
                        size += blob.size
        return fetched, reused, size


def _one(label: str, work: Callable[[], CachedImage]) -> tuple[str, CachedImage | SealpyError]:
    """``work``'s image, or the error it failed with, under ``label``."""
    try:
        return label, work()
    except SealpyError as exc:
        return label, exc


def _alone(label: str, work: Callable[[], CachedImage]) -> _Results:
    """A task of one image."""
    return [_one(label, work)]
