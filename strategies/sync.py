"""The ``sync`` strategy: Sealos's "Image Repository Sync" path, with skopeo.

Start a stock distribution registry (``docker-registry serve``) whose storage root is
``<context>/registry``, on 127.0.0.1 and a free port; ``skopeo copy`` every image into it,
several processes at once; stop the registry. Same input and, where skopeo's semantics
allow, the same result as the ``proxy`` strategy:

* repository names drop the source registry (``docker.io/library/nginx:1`` →
  ``library/nginx:1``);
* a multi-platform source is copied for the selected platform (``--override-os/arch/
  variant``), so the tag points at that platform's manifest — skopeo's and Sealos's
  behaviour, and the documented difference from ``proxy``, which keeps a sparse index;
  with ``--all``, several ``--platform`` or a reference pinning the index digest, every
  platform is copied (the registry refuses an index whose children are missing);
* ``name:tag@digest`` is copied by digest and then tagged (skopeo 1.9 refuses both);
* two sources for one ``repository:tag`` with different content are a conflict, found
  before anything is copied; a platform the image lacks is an error, as with ``proxy``.

A skopeo is stopped only when it makes no progress (no bytes read or written for the
retry policy's read timeout), never for taking long; a failed copy is retried as a whole
with jittered exponential backoff, within the policy's attempts and time budget.

Credentials go to skopeo in an auth file that exists only in memory (``memfd``, handed
to each skopeo as ``/proc/self/fd/N``: nothing to leave behind, even on SIGKILL), one
entry per source repository; mirrors and insecure registries in a generated
registries.conf in a private temporary directory outside the context. No secret is ever
on a command line or in a child's environment. A warm re-run asks the source for each
image's digest and skips images already stored with it (no skopeo runs). No process
outlives the command: the registry and every skopeo carry a parent-death signal, and the
registry is stopped on every exit path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.auth import Credential
from sealpy.core.cache.localregistry import REGISTRY_BINARY, RegistryProcess
from sealpy.core.cache.strategy import Availability, CacheStrategy
from sealpy.core.containers import authfile_document
from sealpy.core.errors import CacheError, ConflictError, RegistryError, SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import ArchiveEntry, CachedImage, CacheOptions, CacheReport, ImageSet
from sealpy.core.process import child_environment, popen_tied, stop
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.registries import Endpoint, RegistriesConfig, is_loopback
from sealpy.core.transport.copy import select_children
from sealpy.core.transport.distribution import PARTIAL_PREFIX, DistributionLayout
from sealpy.core.transport.media import IMAGE_TYPES, Manifest
from sealpy.core.transport.remote import RegistryClient

SKOPEO_BINARY = "skopeo"
SKOPEO_RETRY_TIMES = 3
GO_GC_PERCENT = 400
# Smaller groups are copied one by one: a batch saves a process start-up per image.
BATCH_MIN = 4


@dataclass(frozen=True)
class _Plan:
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
    def batchable(self) -> bool:
        """Copied by tag, so ``skopeo sync`` can take it with others of its namespace."""
        return (
            not self.skip and self.ref is not None and not self.copy_reference.startswith("sha256:")
        )

    def batch_key(self) -> tuple:
        assert self.ref is not None
        namespace = self.repository.rsplit("/", 1)[0] if "/" in self.repository else ""
        return (self.ref.registry, namespace, self.all_platforms, self.platform)


def _skopeo_bool(value: bool) -> str:
    return "true" if value else "false"


class SyncStrategy(CacheStrategy):
    name = "sync"
    description = (
        "a local docker-registry on <context>/registry plus parallel skopeo copy "
        "(Sealos >= 4.3's image repository sync)"
    )

    @classmethod
    def availability(cls) -> Availability:
        missing = [
            f"{tool} not found; apt-get install -y {tool}"
            for tool in (SKOPEO_BINARY, REGISTRY_BINARY)
            if shutil.which(tool) is None
        ]
        return Availability.missing("; ".join(missing)) if missing else Availability.ok()

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        availability = self.availability()
        if not availability.available:
            raise SealpyError(f"strategy sync is unavailable: {availability.reason}")
        started = time.monotonic()
        layout = DistributionLayout(registry_dir)
        # Private files (config, log, auth, registries.conf) never go inside the context.
        with tempfile.TemporaryDirectory(prefix="sealpy-sync-") as private_dir:
            private = Path(private_dir)
            os.chmod(private, 0o700)
            with RegistryClient(
                credentials=options.credentials,
                tls_verify=options.tls_verify,
                registries=options.registries,
                retry=options.retry,
                max_connections=max(4, options.max_parallel),
            ) as client:
                plans, failures = self._plan(images, layout, client, options)
                env = self._environment(images, options, private)
                authfile = _MemoryAuthFile(_auth_entries(images, options))
                try:
                    copier = _Copier(env, authfile, options, layout, client, private)
                    outcome = self._copy(copier, plans, images.archives, layout, private)
                finally:
                    authfile.close()
                requests = client.requests_sent
        results = [*outcome.results]
        failures.extend(outcome.failures)
        report = CacheReport(self.name, tuple(results), time.monotonic() - started, requests)
        if failures:
            if len(failures) == 1:
                raise CacheError(failures[0], report)
            total = len(images.images) + len(images.archives)
            raise CacheError(
                f"{len(failures)} of {total} images could not be cached: " + "; ".join(failures),
                report,
            )
        return report

    @staticmethod
    def _copy(
        copier: _Copier,
        plans: list[_Plan],
        archives: tuple[ArchiveEntry, ...],
        layout: DistributionLayout,
        private: Path,
    ) -> _Outcome:
        """Serve the registry directory while skopeo copies into it — unless this is a
        warm run, where everything is stored already and nothing needs serving."""
        if all(plan.skip for plan in plans) and not archives:
            return copier.run(plans, ())
        registry = RegistryProcess(layout.root, private, environment=go_tuning())
        # Every sync run on a directory holds a shared lock on it; only the last one out
        # removes abandoned uploads — another run's may still be in flight.
        directory = os.open(layout.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(directory, fcntl.LOCK_SH)
            registry.start()
            try:
                copier.host = registry.host
                return copier.run(plans, archives)
            finally:
                registry.stop()
                try:
                    fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another sync is still writing here
                else:
                    _remove_abandoned_uploads(layout)
        finally:
            os.close(directory)

    # --- planning ------------------------------------------------------------------------

    def _plan(
        self,
        images: ImageSet,
        layout: DistributionLayout,
        client: RegistryClient,
        options: CacheOptions,
    ) -> tuple[list[_Plan], list[str]]:
        """Look at each source once (in parallel): index or not, and is it already here?"""

        def plan(ref: ImageReference) -> _Plan:
            return self._plan_one(ref, layout, client, options)

        plans: list[_Plan] = []
        failures: list[str] = []
        with ThreadPoolExecutor(max(1, options.max_parallel)) as pool:
            futures = [(ref, pool.submit(plan, ref)) for ref in images.references]
            for ref, future in futures:
                try:
                    plans.append(future.result())
                except SealpyError as exc:
                    failures.append(f"{ref}: {exc}")
                    options.progress.image_failed(str(ref), str(exc))
        return self._without_conflicts(plans, failures, options)

    @staticmethod
    def _without_conflicts(
        plans: list[_Plan], failures: list[str], options: CacheOptions
    ) -> tuple[list[_Plan], list[str]]:
        """Two sources for one repository:tag with different content would overwrite each
        other: fail them all before anything is copied (as ``proxy`` does)."""
        groups: dict[tuple[str, str], list[_Plan]] = {}
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
                failures.append(f"{plan.label}: {error}")
                options.progress.image_failed(plan.label, str(error))
        return [plan for plan in plans if plan.label not in conflicted], failures

    def _plan_one(
        self,
        ref: ImageReference,
        layout: DistributionLayout,
        client: RegistryClient,
        options: CacheOptions,
    ) -> _Plan:
        repository = ref.cache_repository
        source_repo = client.repository(ref)
        # A HEAD answers for most images (digest and media type); only an index needs its
        # body, to choose the platform's child.
        head = source_repo.head_manifest(ref.reference)
        top: Manifest | None = None
        if head is None or head.media_type.split(";")[0] not in IMAGE_TYPES:
            top = source_repo.get_manifest(ref.reference)
        is_index = top is not None and top.is_index
        source = f"docker://{ref.name}@{ref.digest}" if ref.digest else f"docker://{ref}"
        copy_reference = ref.digest or ref.tag or "latest"
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
        if is_index and all_platforms:
            options.progress.info(
                f"copying every platform of {ref} (keeps the index digest; moves more bytes)"
            )
        skip = self._already_stored(layout, repository, ref.tag or copy_reference, expected)
        return _Plan(
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

    @staticmethod
    def _already_stored(
        layout: DistributionLayout, repository: str, reference: str, expected: str
    ) -> bool:
        if layout.resolve(repository, reference) != expected:
            return False
        stored = layout.stored_manifest(repository, expected)
        if stored is None:
            return False
        manifests = [stored]
        if stored.is_index:
            manifests = [layout.stored_manifest(repository, c.digest) for c in stored.children]  # type: ignore[misc]
        return all(
            m is not None and all(layout.has_blob(b.digest) for b in m.blobs) for m in manifests
        )

    # --- skopeo's environment --------------------------------------------------------------

    def _environment(
        self, images: ImageSet, options: CacheOptions, private: Path
    ) -> dict[str, str]:
        """skopeo's environment: ours without secrets, and a registries.conf."""
        env = {**child_environment(own_authfile=True), **go_tuning()}
        conf = private / "registries.conf"
        conf.write_text(
            _registries_conf(options.registries, _endpoints(images, options), options.tls_verify)
        )
        # skopeo 1.9.3 ignores CONTAINERS_REGISTRIES_CONF (checked): it also gets the
        # hidden --registries-conf flag, which it honours. Paths only: no secret on argv.
        env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
        return env


def go_tuning() -> dict[str, str]:
    """Go runtime settings for the registry and skopeo, unless the user set their own.

    Both are short-lived and allocate per request; the registry's garbage collector took
    a quarter of its CPU time on many small images (measured: 0.70 s -> 0.52 s of CPU for
    16 images with GOGC=400), and on 2 cores that CPU is the bottleneck. Memory stays
    small: both stream blobs through fixed buffers, so the live heap is a few MiB."""
    return {} if "GOGC" in os.environ else {"GOGC": str(GO_GC_PERCENT)}


def _endpoints(images: ImageSet, options: CacheOptions) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    for ref in images.references:
        for endpoint in options.registries.endpoints(ref):
            endpoints.setdefault(endpoint.host, endpoint)
    return endpoints


def _auth_entries(images: ImageSet, options: CacheOptions) -> dict[str, Credential]:
    """One auth.json entry per source repository (``host/repository`` keys, which
    containers/image prefers to the host's): two repositories of one registry may need
    different credentials."""
    entries: dict[str, Credential] = {}
    for ref in images.references:
        for endpoint in options.registries.endpoints(ref):
            credential = options.credentials.credentials_for(endpoint.host, endpoint.repository)
            if credential is not None:
                entries.setdefault(f"{endpoint.host}/{endpoint.repository}", credential)
    return entries


class _MemoryAuthFile:
    """An auth file that lives in memory only (``memfd_create``): a killed sealpy leaves
    nothing on disk. Each skopeo inherits the descriptor and reads ``/proc/self/fd/N``."""

    def __init__(self, entries: dict[str, Credential]) -> None:
        fd = os.memfd_create("sealpy-auth.json", os.MFD_CLOEXEC)
        if fd < 3:
            # Started with a standard descriptor closed: the child's stdin/stdout/stderr
            # set-up would replace ours. Move it out of their way.
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = moved
        self.fd = fd
        try:
            os.fchmod(fd, 0o600)
            data = authfile_document(entries)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            self.close()
            raise

    @property
    def path(self) -> str:
        """The file's path as seen by a child that was given the descriptor."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _toml_string(value: str) -> str:
    return json.dumps(value)


def _registries_conf(
    registries: RegistriesConfig, endpoints: dict[str, Endpoint], tls_verify: bool
) -> str:
    """registries.conf for skopeo: the user's mirrors, and ``insecure`` for every host we
    would talk to over plain HTTP or unverified TLS (containers/image has no loopback rule)."""
    lines: list[str] = []
    seen: set[str] = set()
    for entry in registries.entries:
        lines += [
            "[[registry]]",
            f"prefix = {_toml_string(entry.prefix)}",
            f"location = {_toml_string(entry.location)}",
            f"insecure = {_skopeo_bool(entry.insecure or not tls_verify or is_loopback(entry.location.split('/')[0]))}",
            f"blocked = {_skopeo_bool(entry.blocked)}",
        ]
        for mirror in entry.mirrors:
            insecure = (
                mirror.insecure or not tls_verify or is_loopback(mirror.location.split("/")[0])
            )
            lines += [
                "[[registry.mirror]]",
                f"location = {_toml_string(mirror.location)}",
                f"insecure = {_skopeo_bool(insecure)}",
                f"pull-from-mirror = {_toml_string(mirror.pull_from_mirror)}",
            ]
        seen.add(entry.prefix)
        lines.append("")
    for host in endpoints:
        if host in seen:
            continue
        if not tls_verify or is_loopback(host) or registries.is_insecure(host):
            lines += ["[[registry]]", f"location = {_toml_string(host)}", "insecure = true", ""]
    return "\n".join(lines) + "\n"


@dataclass
class _Outcome:
    results: list[CachedImage]
    failures: list[str]


class _Copier:
    """Runs the skopeo copies, several at once, and retries a failed copy as a whole
    (skopeo 1.9 does not retry a truncated manifest body itself)."""

    def __init__(
        self,
        env: dict[str, str],
        authfile: _MemoryAuthFile,
        options: CacheOptions,
        layout: DistributionLayout,
        client: RegistryClient,
        private: Path,
    ) -> None:
        self.host = ""  # the local registry's, once it runs
        self.authfile = authfile
        self.private = private
        self.env = env
        self.options = options
        self.layout = layout
        self.client = client
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.cancelled = threading.Event()
        self.skopeo = shutil.which(SKOPEO_BINARY) or SKOPEO_BINARY
        # skopeo does not say what it moved: compare with what the directory held before.
        self.present_before = set(layout.blob_digests())
        self.counted: set[str] = set()

    def _blob_counts(self, repository: str, digest: str) -> tuple[int, int, int]:
        """(fetched, reused, bytes) for the image stored as ``digest``, each blob counted
        as fetched by the first image that needed it."""
        manifest = self.layout.stored_manifest(repository, digest)
        manifests = [manifest] if manifest is not None else []
        if manifest is not None and manifest.is_index:
            manifests = [
                self.layout.stored_manifest(repository, c.digest) for c in manifest.children
            ]
        fetched = reused = size = 0
        with self.lock:
            for m in manifests:
                for blob in m.blobs if m is not None else ():
                    if blob.digest in self.present_before or blob.digest in self.counted:
                        reused += 1
                    else:
                        self.counted.add(blob.digest)
                        fetched += 1
                        size += blob.size
        return fetched, reused, size

    def run(self, plans: list[_Plan], archives: tuple[ArchiveEntry, ...]) -> _Outcome:
        outcome = _Outcome([], [])
        tasks: list[Callable[[], list[tuple[str, CachedImage | SealpyError]]]] = []
        singles = [p for p in plans if not p.batchable]
        for batch in self._batches([p for p in plans if p.batchable]):
            if len(batch) < BATCH_MIN:
                singles.extend(batch)
            else:
                tasks.append(lambda batch=batch: self._batch(batch))
        for plan in singles:
            tasks.append(lambda plan=plan: [self._one(plan.label, lambda: self._image(plan))])
        for entry in archives:
            label = f"{entry.transport}:{entry.path}"
            tasks.append(
                lambda entry=entry, label=label: [
                    self._one(label, lambda: self._archive(entry, label))
                ]
            )
        pool = ThreadPoolExecutor(
            max(1, self.options.max_parallel), thread_name_prefix="sealpy-skopeo"
        )
        try:
            for future in [pool.submit(task) for task in tasks]:
                for label, result in future.result():
                    if isinstance(result, CachedImage):
                        outcome.results.append(result)
                        continue
                    message = str(result) if str(result).startswith(label) else f"{label}: {result}"
                    outcome.failures.append(message)
                    self.options.progress.image_failed(label, str(result))
        except BaseException:
            # Interrupted: stop every skopeo now instead of waiting for it to finish.
            self.cancelled.set()
            with self.lock:
                running = list(self.running)
            for process in running:
                stop(process, grace=2.0)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return outcome

    @staticmethod
    def _one(label: str, work: Callable[[], CachedImage]) -> tuple[str, CachedImage | SealpyError]:
        try:
            return label, work()
        except SealpyError as exc:
            return label, exc

    def _batches(self, plans: list[_Plan]) -> list[list[_Plan]]:
        """Images copied by tag, grouped by source namespace and platform mode, then split
        so every worker has a batch: one ``skopeo sync`` moves a whole batch, saving a
        process start-up and a configuration load per image."""
        per_batch = -(-len(plans) // max(1, self.options.max_parallel))
        if per_batch < BATCH_MIN:
            # Fewer images than workers can each take a few: parallel copies are faster
            # (4 large images in one batch were copied one after another).
            return [[plan] for plan in plans]
        groups: dict[tuple, list[_Plan]] = {}
        for plan in plans:
            groups.setdefault(plan.batch_key(), []).append(plan)
        return [
            group[i : i + per_batch]
            for group in groups.values()
            for i in range(0, len(group), per_batch)
        ]

    def _batch(self, batch: list[_Plan]) -> list[tuple[str, CachedImage | SealpyError]]:
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
        spec_file = self.private / f"sync-{uuid.uuid4().hex}.yaml"
        spec_file.write_text(json.dumps(spec))  # YAML is a superset of JSON
        destination = f"{self.host}/{namespace}" if namespace else self.host
        self._run_skopeo(
            first.label,
            self._platform_flags(first),
            "sync",
            ["--src", "yaml", "--dest", "docker", "--keep-going", *self._copy_flags(first)],
            [str(spec_file), destination],
            retries=1,  # a partial batch is finished image by image below
        )
        out: list[tuple[str, CachedImage | SealpyError]] = []
        for plan in batch:
            digest = self.layout.resolve(plan.repository, plan.copy_reference)
            if digest is None or digest != plan.expected:
                out.append(self._one(plan.label, lambda plan=plan: self._image(plan)))
                continue
            out.append((plan.label, self._done(plan, digest, started)))
        return out

    def _insecure(self, host: str) -> bool:
        return (
            not self.options.tls_verify
            or is_loopback(host)
            or self.options.registries.is_insecure(host)
        )

    @staticmethod
    def _copy_flags(plan: _Plan) -> list[str]:
        """Every platform, with the index unchanged (its digest is the one expected); a
        digest-pinned image keeps its digest too."""
        if plan.all_platforms:
            return ["--all", "--preserve-digests"]
        return ["--preserve-digests"] if plan.copy_reference.startswith("sha256:") else []

    @staticmethod
    def _platform_flags(plan: _Plan) -> list[str]:
        if plan.platform is None:
            return []
        flags = ["--override-os", plan.platform.os, "--override-arch", plan.platform.architecture]
        if plan.platform.variant:
            flags += ["--override-variant", plan.platform.variant]
        return flags

    def _done(self, plan: _Plan, digest: str, started: float) -> CachedImage:
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
        )

    def _image(self, plan: _Plan) -> CachedImage:
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
            f"docker://{self.host}/{plan.repository}:{plan.copy_reference}"
            if not plan.copy_reference.startswith("sha256:")
            else f"docker://{self.host}/{plan.repository}@{plan.copy_reference}"
        )
        global_flags = self._platform_flags(plan)
        self._copy(plan.label, global_flags, self._copy_flags(plan), plan.source, destination)
        digest = self.layout.resolve(plan.repository, plan.copy_reference)
        if plan.tag and plan.copy_reference.startswith("sha256:"):
            self._tag(plan)
            digest = self.layout.resolve(plan.repository, plan.tag)
        if digest is None:
            raise RegistryError("skopeo finished but the image is not in the registry directory")
        return self._done(plan, digest, started)

    def _tag(self, plan: _Plan) -> None:
        """Tag a digest-copied image: put the same manifest under the tag (skopeo 1.9
        refuses name:tag@digest), through the local registry so it stays consistent."""
        manifest = self.layout.get_manifest(plan.repository, plan.copy_reference)
        local = self.client.repository(ImageReference(self.host, plan.repository, plan.tag))
        local.put_manifest(plan.tag or "latest", manifest)

    def _archive(self, entry: ArchiveEntry, label: str) -> CachedImage:
        started = time.monotonic()
        repository = entry.destination.cache_repository
        tag = entry.destination.tag or "latest"
        self.options.progress.image_started(label)
        self._copy(
            label,
            [],
            [],
            f"{entry.transport}:{entry.path}",
            f"docker://{self.host}/{repository}:{tag}",
        )
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

    def _slot_env(self) -> dict[str, str]:
        """skopeo's environment for this worker thread.

        Run as root, every skopeo opens one BoltDB blob-info cache under
        /var/lib/containers/cache with an exclusive lock, so parallel copies take turns
        (measured here: 4 at once no faster than 1). Each worker gets a cache of its own in
        the private directory: containers/image puts it under XDG_DATA_HOME when it is told
        (``_CONTAINERS_ROOTLESS_UID``) that it runs rootless; nothing else it does depends
        on that here, as auth file and registries.conf are passed explicitly."""
        slot = threading.current_thread().name.rsplit("_", 1)[-1]
        return {
            **self.env,
            "_CONTAINERS_ROOTLESS_UID": str(os.getuid() or 1),
            "XDG_DATA_HOME": str(self.private / f"slot-{slot}"),
        }

    def _copy(
        self, label: str, global_flags: list[str], flags: list[str], source: str, destination: str
    ) -> None:
        self._run_skopeo(label, global_flags, "copy", flags, [source, destination])

    def _run_skopeo(
        self,
        label: str,
        global_flags: list[str],
        verb: str,
        flags: list[str],
        operands: list[str],
        *,
        retries: int | None = None,
    ) -> None:
        """Run ``skopeo VERB``, retrying the whole command (skopeo 1.9 does not retry a
        truncated manifest body itself) as the client retries a request: attempts bounded,
        jittered exponential backoff, and no new attempt once failing has taken the
        policy's ``max_seconds``. Authentication is by the in-memory auth file only."""
        policy = self.options.retry
        command = [
            self.skopeo,
            "--registries-conf",
            self.env["CONTAINERS_REGISTRIES_CONF"],
            *global_flags,
            verb,
            "--src-authfile" if verb == "sync" else "--authfile",
            self.authfile.path,
            "--retry-times",
            str(min(SKOPEO_RETRY_TIMES, max(0, policy.attempts - 1))),
            "--dest-tls-verify=false",
            *flags,
            *operands,
        ]
        attempts = max(1, policy.attempts if retries is None else retries)
        last = ""
        failing_since: float | None = None
        for attempt in range(attempts):
            if self.cancelled.is_set():
                raise SealpyError("interrupted")
            started = time.monotonic()
            returncode, last, last_active = self._attempt(label, command)
            if returncode == 0:
                return
            # Like the client's budget, time spent failing counts from the last progress:
            # an attempt that kept moving for a while (longer than any backoff) resets it;
            # quick failures (refused, 5xx at once) do not.
            if failing_since is None or last_active - started > policy.max_backoff:
                failing_since = last_active
            # A refused token may just have expired: one fresh skopeo gets a new one.
            give_up = _permanent(last) and not (attempt == 0 and _auth_failure(last))
            if self.cancelled.is_set() or give_up or attempt == attempts - 1:
                break
            pause = random.uniform(0, min(policy.max_backoff, policy.initial_backoff * 2**attempt))
            if time.monotonic() + pause - failing_since > policy.max_seconds:
                last = f"{last} (gave up after {time.monotonic() - failing_since:.0f} s)"
                break
            self.cancelled.wait(pause)
        if verb == "sync":
            return  # the caller copies what the batch did not deliver, image by image
        raise RegistryError(f"skopeo {verb} failed: {last}")

    def _attempt(self, label: str, command: list[str]) -> tuple[int, str, float]:
        """One skopeo run: its progress relayed, stopped only when it stalls (no bytes
        read or written for the read timeout). Returns the exit status, the error and
        when the run was last seen making progress."""
        process = popen_tied(
            command,
            env=self._slot_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            pass_fds=(self.authfile.fd,),
        )
        with self.lock:
            self.running.add(process)
        relay = _Relay(label, self.options.progress)
        reader = threading.Thread(target=relay.read, args=(process.stdout,), daemon=True)
        reader.start()
        stalled = ""
        watch = _ActivityWatch(process, relay)
        try:
            limit = max(1.0, self.options.retry.read_timeout)
            while True:
                try:
                    process.wait(timeout=min(1.0, limit / 4))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if watch.idle_for() > limit and watch.reliable:
                    stalled = f"skopeo made no progress for {limit:.0f} s (stalled source?)"
                    stop(process)
                    break
        finally:
            if process.poll() is None:
                stop(process)
            reader.join(timeout=5)
            with self.lock:
                self.running.discard(process)
        watch.idle_for()  # brings watch.since up to date
        if process.returncode == 0:
            return 0, "", watch.since
        error = stalled or _skopeo_error("\n".join(relay.tail))
        return process.returncode or 1, error, watch.since


class _ActivityWatch:
    """Whether a skopeo is still moving: the bytes it has read and written (from
    /proc/PID/io, which counts socket traffic) or, where that is unreadable, its output."""

    def __init__(self, process: subprocess.Popen, relay: _Relay) -> None:
        self.io_path = Path(f"/proc/{process.pid}/io")
        self.relay = relay
        self.last = self._counter()
        self.since = time.monotonic()
        # Without I/O accounting (kernel option, restricted /proc) only output is left,
        # and skopeo prints nothing while a blob streams: never call that a stall.
        self.reliable = len(self.last) > 1

    def _counter(self) -> tuple[int, ...]:
        try:
            fields = dict(
                line.split(":", 1) for line in self.io_path.read_text().splitlines() if ":" in line
            )
            return (int(fields["rchar"]), int(fields["wchar"]), self.relay.lines)
        except (OSError, KeyError, ValueError):
            return (self.relay.lines,)

    def idle_for(self) -> float:
        counter = self._counter()
        if counter != self.last:
            self.last, self.since = counter, time.monotonic()
        return time.monotonic() - self.since


_SYNC_IMAGE = re.compile(r'msg="Copying image ref [^"]*" from="(?:docker://)?([^"]+)"')
_STEP = re.compile(r"^(Copying (?:blob|config)) (sha256:[0-9a-f]{12})[0-9a-f]*(.*)$")


class _Relay:
    """skopeo's output as log lines naming the image: ``<image>: copying blob sha256:…``.
    Without a terminal skopeo prints one line per step (no progress bars), so parallel
    skopeos interleave whole lines only. Keeps the last lines for error messages."""

    def __init__(self, label: str, progress) -> None:
        self.label = label
        self.progress = progress
        self.tail: list[str] = []
        self.lines = 0

    def read(self, stream) -> None:
        for raw in stream:  # drained to the end: a full pipe would block skopeo
            line = raw.strip()
            self.lines += 1
            if not line:
                continue
            self.tail = [*self.tail[-19:], line]
            message = self._message(line)
            if message:
                with contextlib.suppress(Exception):  # our output may be a broken pipe
                    self.progress.info(f"{self.label}: {message}")

    def _message(self, line: str) -> str | None:
        image = _SYNC_IMAGE.search(line)
        if image:  # skopeo sync moves on to the next image of its batch
            self.label = image.group(1)
            return "copying"
        step = _STEP.match(line)
        if step:
            return f"{step.group(1).lower()} {step.group(2)}{step.group(3)}"
        if line.startswith("Writing manifest"):
            return "writing manifest"
        if line.startswith("Skipping: image already present"):
            return "already present"
        return None


def _remove_abandoned_uploads(layout: DistributionLayout) -> None:
    """Remove the uploads the registry was left with when a skopeo failed mid-blob (once
    the registry has stopped): nothing resumes them, and they would ship in the image.
    The proxy strategy's own partial blobs (``sealpy-`` prefix) are kept for its re-run."""
    for uploads in (layout.root / "docker" / "registry" / "v2" / "repositories").glob(
        "**/_uploads"
    ):
        for upload in uploads.iterdir():
            if not upload.name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(upload, ignore_errors=True)


# containers/image quotes the whole request URL in its errors ("Patch \"http://…/blobs/
# uploads/…?_state=…\": …"); the state token alone is hundreds of characters.
_QUOTED_QUERY = re.compile(r'("https?://[^"?]*)\?[^"]*"')
_MAX_ERROR = 400


def _skopeo_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "no error message"
    for prefix in ('time="', "level=fatal msg="):
        if prefix in text and 'msg="' in text:
            text = text.split('msg="', 1)[1].rsplit('"', 1)[0]
    text = _QUOTED_QUERY.sub(r'\1"', text.replace('\\"', '"'))
    # The cause comes last ("...: digest did not match"): keep the end of a long message.
    return text if len(text) <= _MAX_ERROR else "…" + text[-(_MAX_ERROR - 1) :]


_PERMANENT = (
    "manifest unknown",
    "unauthorized",
    "authentication required",
    "denied",
    "no image found in manifest list",
    "not found",
    "invalid reference",
    "no such file",
)


def _auth_failure(message: str) -> bool:
    lowered = message.lower()
    return "unauthorized" in lowered or "authentication required" in lowered


def _permanent(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _PERMANENT)


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(SyncStrategy)
