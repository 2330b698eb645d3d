"""SIGKILL at random moments, many times over: the registry directory always stays
servable by a stock registry for whatever is complete, and a re-run completes, reusing
what was done (no blob that was already stored is requested again).

``SEALPY_CRASH_KILLS`` sets the number of kills per test (default 8: the file stays
under a minute on two cores); each kill records the phase it hit, and the kills must
spread over more than one phase, or the test proves less than it claims."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealpy.core.cache.verify import Problem, verify_registry
from sealpy.core.reference import ImageReference
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer, skopeo_pull
from sealpy.core.transport.distribution import DistributionLayout

KILLS = int(os.environ.get("SEALPY_CRASH_KILLS", "8"))
PULLS_PER_KILL = 3  # tagged images pulled after each kill (all of them after the re-run)
TOTAL_BLOBS = 31  # the workload's: a shared base layer, two own layers and a config each
CONTEXT_BLOBS = TOTAL_BLOBS + 10  # and a manifest each, once cached into a context


@pytest.fixture(scope="module")
def workload(image_factory: ImageFactory, tmp_path_factory):
    """Ten images of three ~150 KiB layers behind a slow proxy (20 ms per request), which
    also counts the requests (to check what a re-run fetches)."""
    root = tmp_path_factory.mktemp("crash-source")
    with RegistryServer(root / "data", workdir=root / "work") as source:
        base = image_factory.layer(150_000, "crash/base")
        images = {}
        for i in range(10):
            image = image_factory.image(f"crash/{i}", [base, 150_000, 150_000])
            image_factory.push(image, source.host, f"crash/app{i}", "1")
            images[f"crash/app{i}"] = image
        with FaultProxy(source.host, FaultPlan(latency=0.02)) as proxy:
            assert len({d for i in images.values() for d in i.blob_digests}) == TOTAL_BLOBS
            yield proxy, images


def image_refs(proxy: FaultProxy, images: dict) -> str:
    return ",".join(str(ImageReference(proxy.host, repo, "1")) for repo in images)


def run_sealpy(strategy: str, proxy: FaultProxy, images: dict, out: Path) -> subprocess.Popen:
    context = out.parent / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealpy.core",
            "registry",
            "save",
            "--strategy",
            strategy,
            "--platform",
            "linux/amd64",
            "--max-pull-procs",
            "3",
            "--registry-dir",
            str(out),
            "--images",
            image_refs(proxy, images),
            str(context),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group, so that a kill can wait for the children too (below).
        start_new_session=True,
    )


def wait_for_process_group(process: subprocess.Popen) -> None:
    """Children die with sealpy (a parent-death SIGTERM) but not at the same instant: a
    skopeo of a killed run may still send a request after sealpy itself has been reaped,
    which must not be counted as the re-run's. Zombies do not count (whoever adopted them
    may be slow to reap them)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _live_members(process.pid):
        time.sleep(0.01)


def _live_members(group: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def stored_blobs(out: Path) -> set[str]:
    layout = DistributionLayout(out)
    return set(layout.blob_digests()) if layout.exists() else set()


def blobs_requested(proxy: FaultProxy, since: int) -> set[str]:
    """Digests of the blob GETs the proxy saw after its ``since``-th request."""
    return {
        s.path.rsplit("/", 1)[1]
        for s in proxy.seen[since:]
        if s.method == "GET" and "/blobs/sha256:" in s.path
    }


def tagged_images(out: Path, images: dict) -> int:
    layout = DistributionLayout(out)
    return sum(1 for repo in images if layout.resolve(repo, "1")) if layout.exists() else 0


def layer_links(out: Path) -> set[tuple[str, str]]:
    layout = DistributionLayout(out)
    return {(repo, d) for repo in layout.repositories() for d in layout.layer_links(repo)}


def refetched_blobs(
    strategy: str,
    proxy: FaultProxy,
    since: int,
    links: set[tuple[str, str]],
    blobs: set[str],
    configs: frozenset[str] = frozenset(),
) -> set[str]:
    """Stored blobs the re-run asked the source for again. ``proxy`` checks its blob
    store before any request. ``sync`` leaves that to skopeo, which learns where a blob
    already is (to mount it into another repository) only from its blob-info cache, and
    that cache is private to each worker and run: a blob a killed run stored for one
    repository is fetched again for another that lacks it. So for ``sync`` only a blob
    already linked into the same repository counts (a known gap: see the issue 8 note),
    and never an image's config: skopeo reads every config from the source, even one the
    destination repository has (checked with skopeo 1.9: a re-run after the manifest was
    lost GETs the config again, and only the config) — a kill after the config landed but
    before the manifest did made this test fail now and then."""
    requested = [
        (s.path.split("/v2/", 1)[1].split("/blobs/")[0], s.path.rsplit("/", 1)[1])
        for s in proxy.seen[since:]
        if s.method == "GET" and "/blobs/sha256:" in s.path
    ]
    if strategy == "sync":
        return {
            digest
            for repo, digest in requested
            if (repo, digest) in links and digest not in configs
        }
    return {digest for _, digest in requested if digest in blobs}


def cache_phase(before: tuple[int, int], after: tuple[int, int]) -> str:
    """What a killed run had done, from (blobs, tagged images) before and after it."""
    if after[1] > before[1]:
        return "committing images"
    return "copying blobs" if after[0] > before[0] else "starting up"


def interrupted_tag_write(problem: Problem) -> bool:
    """A tag whose ``current/link`` is missing or empty: a kill landed while the tag was
    being written, and the tag is incomplete, not corrupt (a stock registry answers 404
    for it; a re-run writes it again). Both writers leave that window:

    * sealpy's layout (``proxy``) writes the tag's ``index/.../link``, then its
      ``current/link`` (each atomically, by rename): killed in between, the tag directory
      exists without a current link;
    * docker-registry (``sync``; distribution 2.8's filesystem driver) writes links in
      place: ``PutContent`` creates the parent directories and the file, truncates it,
      then writes the digest, so the current link can also be left empty.

    Only that is excused: a current link holding anything else, or a digest whose
    manifest is missing, is still a failure."""
    if not problem.message.endswith("has no valid current link"):
        return False
    links = [path / "current" / "link" for path in problem.remove]
    return bool(links) and all(
        not link.exists() or (link.is_file() and link.stat().st_size == 0) for link in links
    )


def assert_servable(
    out: Path,
    images: dict,
    tmp_path: Path,
    start_registry,
    *,
    pulls: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """No corrupt blob anywhere; tags resolve to complete images, and (a sample of, or
    with ``pulls=None`` every) tagged image pulls with skopeo at its digest.
    Returns the number of complete (tagged) images."""
    layout = DistributionLayout(out)
    if not layout.exists():
        return 0
    problems = verify_registry(out).problems
    assert not [p for p in problems if "content has digest" in p.message], problems
    tag_problems = [
        p for p in problems if p.repository and "tag" in p.message and not interrupted_tag_write(p)
    ]
    assert not tag_problems, problems
    tagged = [(repo, layout.resolve(repo, "1")) for repo in images if layout.resolve(repo, "1")]
    for repo, digest in tagged:
        assert digest == images[repo].digest
    sample = tagged if pulls is None else (rng or random).sample(tagged, min(pulls, len(tagged)))
    if sample:
        server = start_registry(out)
        for repo, digest in sample:
            target = tmp_path / f"pull-{time.monotonic_ns()}"
            assert skopeo_pull(f"docker://{server.host}/{repo}:1", target) == digest
        server.stop()
    return len(tagged)


def kill_at_random(
    process: subprocess.Popen, out: Path, kill: int, kills_left: int, rng: random.Random
) -> None:
    """A third of the kills land during start-up. The others wait until this run has
    stored its share of the blobs still missing (so the work spreads over every kill and
    some is left for the re-run), then land a moment later."""
    if kill % 3 == 0:
        time.sleep(rng.uniform(0.05, 0.3))
    else:
        stored = len(stored_blobs(out))
        share = max(1, (TOTAL_BLOBS - stored) // (kills_left + 1))
        target = stored + rng.randint(1, share)
        deadline = time.monotonic() + 20
        while (
            len(stored_blobs(out)) < target
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    wait_for_process_group(process)


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_sigkill_at_random_points_then_rerun(workload, strategy, tmp_path, start_registry):
    proxy, images = workload
    out = tmp_path / "registry"
    rng = random.Random(f"crash-{strategy}")
    phases = []
    for kill in range(KILLS):
        before = len(stored_blobs(out)), tagged_images(out, images)
        process = run_sealpy(strategy, proxy, images, out)
        kill_at_random(process, out, kill, KILLS - kill, rng)
        phases.append(cache_phase(before, (len(stored_blobs(out)), tagged_images(out, images))))
        assert_servable(out, images, tmp_path, start_registry, pulls=PULLS_PER_KILL, rng=rng)
    assert len(set(phases)) > 1, f"every kill hit the same phase: {phases}"
    blobs_before = stored_blobs(out)
    assert blobs_before, f"the killed runs finished nothing: kill later ({phases})"
    out_links = layer_links(out)
    requests_before = len(proxy.seen)
    final = run_sealpy(strategy, proxy, images, out)
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    assert assert_servable(out, images, tmp_path, start_registry) == len(images)
    assert verify_registry(out).problems == ()
    # The re-run reused what the killed runs had stored: none of it was requested again.
    configs = frozenset(image.config.digest for image in images.values())
    refetched = refetched_blobs(strategy, proxy, requests_before, out_links, blobs_before, configs)
    assert refetched == set(), f"{len(refetched)} stored blobs fetched again ({phases})"
    every_blob = {d for image in images.values() for d in image.blob_digests}
    fetched = int(re.search(r"cached by \w+: (\d+) blobs fetched", stderr).group(1))
    assert fetched == len(every_blob - blobs_before)


@dataclass(frozen=True)
class BuildState:
    cached: int  # blobs in the context's registry/
    stored: int  # blobs in the store
    ingesting: frozenset  # (name, size) of blobs being written into the store
    refs: tuple  # the store's named images

    @classmethod
    def of(cls, context: Path, store: Path) -> BuildState:
        from sealpy.core.transport.ocilayout import OCILayout

        layout = OCILayout(store)
        exists = layout.exists()
        return cls(
            len(stored_blobs(context / "registry")),
            sum(1 for _ in layout.blob_digests()) if exists else 0,
            frozenset(
                (str(p), p.stat().st_size) for p in (store / ".ingest").rglob("*") if p.is_file()
            ),
            tuple(sorted((n, d.digest) for n, d in layout.refs().items())) if exists else (),
        )


def build_phase(before: BuildState, after: BuildState) -> str:
    """What a killed build had done, from the state before and after it."""
    if after.refs != before.refs:
        return "naming the image"
    if after.stored > before.stored or after.ingesting - before.ingesting:
        return "writing layers"
    return "caching images" if after.cached > before.cached else "starting up"


def kill_build(process: subprocess.Popen, context: Path, kill: int, rng: random.Random) -> None:
    """A third of the kills land during start-up, a third while the images are cached
    (after a share of the missing blobs), a third once they all are (writing layers)."""
    registry = context / "registry"
    if kill % 3 == 0:
        time.sleep(rng.uniform(0.05, 0.4))
    else:
        cached = len(stored_blobs(registry))
        target = CONTEXT_BLOBS
        if kill % 3 == 1 and cached < CONTEXT_BLOBS:
            target = cached + rng.randint(1, max(1, (CONTEXT_BLOBS - cached) // 3))
        deadline = time.monotonic() + 20
        while (
            len(stored_blobs(registry)) < target
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1) if kill % 3 == 1 else rng.uniform(0.1, 0.6))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    wait_for_process_group(process)


def test_sigkill_during_build_then_rerun(workload, tmp_path):
    """Killed at random points while caching the context's images and writing layers:
    the context's registry and the store stay whole (every named image complete, every
    blob whole), the re-run fetches no image blob that was already cached, and builds the
    same digest as a run that was never killed."""
    from sealpy.core.image.media import sha256_digest
    from sealpy.core.transport.ocilayout import OCILayout

    proxy, images = workload
    context = tmp_path / "ctx"
    (context / "files").mkdir(parents=True)
    rng = random.Random("build-crash")
    for i in range(30):  # ~18 MiB of incompressible files: layers take a moment to write
        (context / "files" / f"blob{i}").write_bytes(rng.randbytes(600_000))
    (context / "Kubefile").write_text(
        "FROM scratch\nCOPY files ./files\nCOPY registry ./registry\nCOPY Kubefile /Kubefile\n"
    )
    store = tmp_path / "store"
    options = ["--platform", "linux/amd64", "--images", image_refs(proxy, images)]
    command = [sys.executable, "-m", "sealpy.core", "build", "-t", "crash/app", *options]
    phases = []
    for kill in range(KILLS):
        before = BuildState.of(context, store)
        process = subprocess.Popen(
            [*command, "--root", str(store), str(context)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_build(process, context, kill, rng)
        phases.append(build_phase(before, BuildState.of(context, store)))
        if (context / "registry").exists():
            problems = verify_registry(context / "registry").problems
            assert not [p for p in problems if "content has digest" in p.message], problems
        layout = OCILayout(store)
        if not layout.exists():
            continue
        for digest in layout.blob_digests():  # nothing half-written at a final path
            assert sha256_digest(layout.read_blob(digest)) == digest
        for name, descriptor in layout.refs().items():  # every named image is complete
            manifest = layout.get_manifest_by_digest(descriptor.digest)
            assert all(layout.has_blob(b.digest) for b in manifest.blobs), name
    assert len(set(phases)) > 1, f"every kill hit the same phase: {phases}"
    cached_before = stored_blobs(context / "registry")
    assert cached_before, f"the killed builds cached nothing: kill later ({phases})"
    requests_before = len(proxy.seen)
    first = subprocess.run(
        [*command, "--root", str(store), str(context)], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    refetched = blobs_requested(proxy, requests_before) & cached_before
    assert refetched == set(), f"{len(refetched)} cached blobs fetched again ({phases})"
    clean = subprocess.run(
        [*command, "--root", str(tmp_path / "clean-store"), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert clean.returncode == 0, clean.stderr
    assert first.stdout.splitlines()[-1] == clean.stdout.splitlines()[-1]  # same digest
    assert skopeo_pull(f"oci:{store}:localhost/crash/app:latest", tmp_path / "pulled")
