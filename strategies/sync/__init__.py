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

The package: :mod:`.planning` (what to copy, conflicts, batches), :mod:`.skopeo`
(skopeo's configuration, supervision and errors), :mod:`.copying` (running the plans);
this module is the entry point (the strategy and its registration hook).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sealpy.core.cache.failures import cache_error
from sealpy.core.cache.localregistry import REGISTRY_BINARY, RegistryProcess
from sealpy.core.cache.strategy import Availability, CacheStrategy
from sealpy.core.cache.verify import repair_links
from sealpy.core.containers import auth_key
from sealpy.core.errors import SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.mirrors import EndpointLog
from sealpy.core.model import ArchiveEntry, CacheOptions, CacheReport, ImageSet
from sealpy.core.transport.distribution import PARTIAL_PREFIX, DistributionLayout
from sealpy.strategies.sync.copying import Copier, CopyOutcome
from sealpy.strategies.sync.localauth import run_lock
from sealpy.strategies.sync.planning import CopyPlan, plan_images
from sealpy.strategies.sync.skopeo import (
    SKOPEO_BINARY,
    MemoryAuthFile,
    SkopeoRunner,
    auth_entries,
    go_tuning,
    skopeo_environment,
)

__all__ = ["MemoryAuthFile", "SkopeoRunner", "SyncStrategy", "go_tuning"]


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
        # Private files (config, log, registries.conf, batch lists) never go inside the context.
        with tempfile.TemporaryDirectory(prefix="sealpy-sync-") as private_dir:
            private = Path(private_dir)
            os.chmod(private, 0o700)
            transport = options.transport
            # sealpy's own HEADs while planning say nothing of where skopeo reads from:
            # they are kept out of the run's record of what served each image.
            planning = replace(transport, endpoints=EndpointLog())
            with planning.client(max_connections=max(4, transport.max_parallel)) as client:
                plans, failures = plan_images(images, layout, client, options)
                env = skopeo_environment(images, options, private)
                authfile = MemoryAuthFile(auth_entries(images, options))
                try:
                    runner = SkopeoRunner(env, authfile, options, private, client.retrier)
                    copier = Copier(runner, options, layout, client)
                    outcome = _serve_and_copy(
                        copier, plans, images.archives, layout, private, authfile
                    )
                finally:
                    authfile.close()
                requests = client.requests_sent
        failures.extend(outcome.failures)
        report = CacheReport(
            self.name, tuple(outcome.results), time.monotonic() - started, requests
        )
        if failures:
            raise cache_error(failures, len(images.images) + len(images.archives), report)
        return report


def _serve_and_copy(
    copier: Copier,
    plans: list[CopyPlan],
    archives: tuple[ArchiveEntry, ...],
    layout: DistributionLayout,
    private: Path,
    authfile: MemoryAuthFile,
) -> CopyOutcome:
    """Serve the registry directory while skopeo copies into it — unless this is a
    warm run, where everything is stored already and nothing needs serving. Only this
    run may use the registry: it refuses requests without a token of the run's own
    (:mod:`.localauth`)."""
    if all(plan.skip for plan in plans) and not archives:
        outcome = copier.run(plans, ())
        copier.attach(outcome, plans, private)
        return outcome
    tokens = run_lock(private).start()
    registry = RegistryProcess(
        layout.root, private, auth=tokens.auth_config(), environment=go_tuning()
    )
    # Every sync run on a directory holds a shared lock on it; only the last one out
    # removes abandoned uploads — another run's may still be in flight. The first one in
    # repairs broken link files first (another's registry may be writing one right now).
    directory = os.open(layout.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            repair_links(layout)
        fcntl.flock(directory, fcntl.LOCK_SH)
        registry.start()
        try:
            authfile.add(auth_key(registry.host), tokens.credential)
            with tokens.client(copier.options.retry) as local:
                copier.serve_at(registry.host, local)
                outcome = copier.run(plans, archives)
                # Attachments go in while the registry still runs (Copier.attach).
                copier.attach(outcome, plans, private / "attachments")
                return outcome
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
        tokens.stop()


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


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(SyncStrategy)
