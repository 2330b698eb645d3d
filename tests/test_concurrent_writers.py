"""Several writers on one registry directory at once: two `registry save` processes of one
context both succeed and leave a tree that verifies; partial downloads stay resumable."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sealpy.core.cache.verify import verify_registry
from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, sha256_digest
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer, skopeo_manifest_digest
from sealpy.core.transport.copy import Received
from sealpy.core.transport.distribution import DistributionLayout

CLI = [sys.executable, "-c", "import sys; from sealpy.core.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def workload(
    image_factory: ImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Reference -> digest: images sharing a base layer, in several repositories, with
    layers large enough that two writers are at the same blob at the same time."""
    root = tmp_path_factory.mktemp("concurrent-source")
    server = RegistryServer(root / "registry", workdir=root / "work").start()
    base = image_factory.layer(600_000, "concurrent/base")
    images = {}
    for i in range(6):
        image = image_factory.image(f"concurrent/app{i}", [base, 300_000, 50_000 + i])
        image_factory.push(image, server.host, f"team/app{i}", "1")
        images[f"{server.host}/team/app{i}:1"] = image.digest
    try:
        yield images
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("strategies", "rounds"),
    [(("proxy", "proxy"), 3), (("proxy", "sync"), 2), (("sync", "sync"), 3)],
    ids=["proxy+proxy", "proxy+sync", "sync+sync"],
)
def test_two_saves_of_one_context_at_once_both_succeed(
    workload, tmp_path: Path, strategies: tuple[str, str], rounds: int
):
    for round_ in range(rounds):
        context = tmp_path / f"ctx{round_}"
        context.mkdir()
        (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
        runs = [
            subprocess.Popen(
                [
                    *CLI,
                    "registry",
                    "save",
                    "--strategy",
                    strategy,
                    "--images",
                    ",".join(workload),
                    str(context),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for strategy in strategies
        ]
        outputs = [run.communicate(timeout=180) for run in runs]
        for run, (_, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, f"round {round_}: {err}"
        result = verify_registry(context / "registry")
        assert result.problems == (), [str(p) for p in result.problems]
        layout = DistributionLayout(context / "registry")
        for ref, digest in workload.items():
            repository = ref.split("/", 1)[1].rsplit(":", 1)[0]
            assert layout.resolve(repository, "1") == digest


def test_two_builds_into_one_store_at_once_both_succeed(workload, tmp_path: Path):
    """Each build caches into its own context and writes into the one store; identical
    contexts, so their layers are the same blobs, landing twice."""
    store = tmp_path / "store"
    contexts = []
    for i in range(2):
        context = tmp_path / f"ctx{i}"
        context.mkdir()
        (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
        contexts.append(context)
    runs = [
        subprocess.Popen(
            [
                *CLI,
                "build",
                "--strategy",
                "proxy",
                "--images",
                ",".join(workload),
                "-t",
                f"built{i}",
                "--root",
                str(store),
                str(context),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, context in enumerate(contexts)
    ]
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
    for i, context in enumerate(contexts):
        assert verify_registry(context / "registry").problems == ()
        assert skopeo_manifest_digest(f"oci:{store}:localhost/built{i}:latest").startswith(
            "sha256:"
        )


def test_two_pulls_of_one_image_into_one_store_at_once_both_succeed(workload, tmp_path: Path):
    """The store's resumable partials (``.ingest/<hex>``) are shared by name too."""
    store = tmp_path / "store"
    ref, digest = next(iter(workload.items()))
    for _ in range(3):
        runs = [
            subprocess.Popen(
                [*CLI, "pull", ref, "--root", str(store)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            assert out.strip() == digest
        assert skopeo_manifest_digest(f"oci:{store}:{ref}") == digest
        shutil.rmtree(store)


class CountingSource:
    """A blob source serving ``data``; counts how often it was asked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls = 0

    def fetch_blob(self, descriptor, writer, on_bytes=None) -> None:
        self.calls += 1
        writer.reset()
        writer.write(self.data)


BLOB = b"layer bytes " * 50_000
DESCRIPTOR = Descriptor(media.OCI_LAYER_GZIP, sha256_digest(BLOB), len(BLOB))


def test_a_second_writer_waits_for_the_partial_and_then_finds_the_blob_landed(tmp_path: Path):
    layout = DistributionLayout(tmp_path / "registry", durable=False)
    first = layout.blob_writer("team/app", DESCRIPTOR)
    first.write(BLOB[:1000])
    source = CountingSource(BLOB)
    second = ThreadPoolExecutor(1)
    answer = second.submit(layout.repository("team/app").receive_blob, DESCRIPTOR, source)
    time.sleep(0.3)
    assert not answer.done()  # waiting: the partial is the first writer's
    first.write(BLOB[1000:])
    first.commit()
    assert answer.result(timeout=10) is Received.REUSED
    assert source.calls == 0
    assert layout.read_blob(DESCRIPTOR.digest) == BLOB
    assert not (layout.v2 / "repositories/team/app/_uploads").exists() or not any(
        (layout.v2 / "repositories/team/app/_uploads").iterdir()
    )
    second.shutdown()


def test_a_second_writer_resumes_what_the_first_left_unfinished(tmp_path: Path):
    layout = DistributionLayout(tmp_path / "registry", durable=False)
    first = layout.blob_writer("team/app", DESCRIPTOR)
    first.write(BLOB[:1000])
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(layout.blob_writer, "team/app", DESCRIPTOR)
        time.sleep(0.3)
        assert not second.done()
        first.close()  # gave up (a network failure): the partial stays
        writer = second.result(timeout=10)
    assert writer.offset == 1000
    writer.write(BLOB[1000:])
    writer.commit()
    assert layout.read_blob(DESCRIPTOR.digest) == BLOB


def test_a_partial_left_by_a_killed_writer_is_resumed(tmp_path: Path):
    """A lock dies with its process: the next run resumes the partial at once."""
    root = tmp_path / "registry"
    script = (
        "import os, signal, sys\n"
        "from sealpy.core.image.media import Descriptor\n"
        "from sealpy.core.transport.distribution import DistributionLayout\n"
        f"d = Descriptor({DESCRIPTOR.media_type!r}, {DESCRIPTOR.digest!r}, {DESCRIPTOR.size})\n"
        f"w = DistributionLayout({str(root)!r}).blob_writer('team/app', d)\n"
        f"w.write(b'layer bytes ' * 100)\n"
        "w._file.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], check=False)
    assert killed.returncode == -signal.SIGKILL
    layout = DistributionLayout(root, durable=False)
    started = time.monotonic()
    writer = layout.blob_writer("team/app", DESCRIPTOR)
    assert time.monotonic() - started < 1
    assert writer.offset == 1200
    writer.write(BLOB[1200:])
    writer.commit()
    assert layout.read_blob(DESCRIPTOR.digest) == BLOB


def test_a_cancelled_run_stops_waiting_for_a_partial(tmp_path: Path):
    layout = DistributionLayout(tmp_path / "registry", durable=False)
    holder = layout.blob_writer("team/app", DESCRIPTOR)
    calls = []

    def on_bytes(n: int) -> None:
        calls.append(n)
        if len(calls) > 3:
            raise KeyboardInterrupt  # what the engine's cancel check raises, in spirit

    with pytest.raises(KeyboardInterrupt):
        layout.repository("team/app").receive_blob(DESCRIPTOR, CountingSource(BLOB), on_bytes)
    assert calls == [0, 0, 0, 0]
    holder.close()
