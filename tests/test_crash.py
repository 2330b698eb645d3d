"""SIGKILL at random moments, many times over: the registry directory always stays
servable by a stock registry for whatever is complete, and a re-run completes, reusing
what was done."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealpy.core.reference import ImageReference
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer, skopeo_pull
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.verify import verify_registry

KILLS = 6


@pytest.fixture(scope="module")
def workload(image_factory: ImageFactory, tmp_path_factory):
    """Ten images of three ~150 KiB layers behind a slow proxy (20 ms per request)."""
    root = tmp_path_factory.mktemp("crash-source")
    with RegistryServer(root / "data", workdir=root / "work") as source:
        base = image_factory.layer(150_000, "crash/base")
        images = {}
        for i in range(10):
            image = image_factory.image(f"crash/{i}", [base, 150_000, 150_000])
            image_factory.push(image, source.host, f"crash/app{i}", "1")
            images[f"crash/app{i}"] = image
        with FaultProxy(source.host, FaultPlan(latency=0.02)) as proxy:
            yield proxy, images


def run_sealpy(strategy: str, proxy: FaultProxy, images: dict, out: Path) -> subprocess.Popen:
    refs = ",".join(str(ImageReference(proxy.host, repo, "1")) for repo in images)
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
            refs,
            str(context),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_servable(out: Path, images: dict, tmp_path: Path, start_registry, strategy: str) -> int:
    """No corrupt blob anywhere; every tag that exists pulls with skopeo at its digest.
    Returns the number of complete (tagged) images."""
    layout = DistributionLayout(out)
    if not layout.exists():
        return 0
    problems = verify_registry(out).problems
    assert not [p for p in problems if "content has digest" in p.message], problems
    tagged = [(repo, layout.resolve(repo, "1")) for repo in images if layout.resolve(repo, "1")]
    tag_problems = [p for p in problems if p.repository and "tag" in p.message]
    if strategy == "sync":
        # docker-registry writes link files in place: killed mid-write, a tag link can be
        # left empty. That tag is incomplete (not corrupt); the re-run writes it again.
        tag_problems = [p for p in tag_problems if "no valid current link" not in p.message]
    assert not tag_problems, problems
    if tagged:
        server = start_registry(out)
        for repo, digest in tagged:
            assert digest == images[repo].digest
            target = tmp_path / f"pull-{time.monotonic_ns()}"
            assert skopeo_pull(f"docker://{server.host}/{repo}:1", target) == digest
        server.stop()
    return len(tagged)


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_sigkill_at_random_points_then_rerun(workload, strategy, tmp_path, start_registry):
    proxy, images = workload
    out = tmp_path / "registry"
    rng = random.Random(f"crash-{strategy}")
    for kill in range(KILLS):
        process = run_sealpy(strategy, proxy, images, out)
        if kill % 2:  # every other kill lands once copying is under way, however slow the start
            deadline = time.monotonic() + 30
            while (
                not list(out.glob("docker/registry/v2/blobs/sha256/*/*/data"))
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert_servable(out, images, tmp_path, start_registry, strategy)
    blobs_before = (
        set(DistributionLayout(out).blob_digests()) if DistributionLayout(out).exists() else set()
    )
    final = run_sealpy(strategy, proxy, images, out)
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    assert assert_servable(out, images, tmp_path, start_registry, strategy) == len(images)
    assert verify_registry(out).problems == ()
    # The re-run reused what the killed runs had finished.
    total = len({d for image in images.values() for d in image.blob_digests})
    fetched = int(re.search(r"cached by \w+: (\d+) blobs fetched", stderr).group(1))
    assert blobs_before, "the killed runs finished nothing: kill later"
    assert fetched == len(
        {d for image in images.values() for d in image.blob_digests} - blobs_before
    )
    assert fetched < total


def test_sigkill_during_build_then_rerun(tmp_path):
    """Killed at random points while writing layers: the store stays readable (every
    named image complete, every blob whole) and a re-run builds the same digest."""
    from sealpy.core.transport.media import sha256_digest
    from sealpy.core.transport.ocilayout import OCILayout

    context = tmp_path / "ctx"
    (context / "registry").mkdir(parents=True)
    rng = random.Random("build-crash")
    for i in range(40):  # ~24 MiB of incompressible files: layers take a moment to write
        (context / "registry" / f"blob{i}").write_bytes(rng.randbytes(600_000))
    (context / "Kubefile").write_text(
        "FROM scratch\nCOPY registry ./registry\nCOPY Kubefile /Kubefile\n"
    )
    store = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "sealpy.core",
        "build",
        "--no-save-image",
        "-t",
        "crash/app",
        "--root",
        str(store),
        str(context),
    ]
    for _ in range(KILLS):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        layout = OCILayout(store)
        if not layout.exists():
            continue
        for digest in layout.blob_digests():  # nothing half-written at a final path
            assert sha256_digest(layout.read_blob(digest)) == digest
        for name, descriptor in layout.refs().items():  # every named image is complete
            manifest = layout.get_manifest_by_digest(descriptor.digest)
            assert all(layout.has_blob(b.digest) for b in manifest.blobs), name
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    clean = subprocess.run(
        [*command[:-2], str(tmp_path / "clean-store"), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.stdout.splitlines()[-1] == clean.stdout.splitlines()[-1]  # same digest
    assert skopeo_pull(f"oci:{store}:localhost/crash/app:latest", tmp_path / "pulled")
