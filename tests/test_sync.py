"""The sync strategy beyond the conformance suite: what its child processes see, and that
none of them outlives sealpy — on success, on error, on SIGINT/SIGTERM and on SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from sealpy.core import pipeline
from sealpy.core.auth import ConfiguredCredentials, Credential
from sealpy.core.cache import localregistry
from sealpy.core.cache.localregistry import RegistryProcess
from sealpy.core.containers import write_authfile
from sealpy.core.errors import CacheError, RegistryError, SealpyError
from sealpy.core.model import CacheOptions, ImageSet, RetryPolicy
from sealpy.core.process import pid_alive
from sealpy.core.progress import SilentProgress
from sealpy.core.reference import Platform
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

REAL_SKOPEO = shutil.which("skopeo")
REAL_REGISTRY = shutil.which("docker-registry")


def shims(
    tmp_path: Path, *, skopeo_sleep: float = 0, registry_fails: bool = False
) -> tuple[Path, Path]:
    """Wrappers for skopeo and docker-registry that record their pid, arguments, the mode
    of any --authfile and the registry's config, then exec the real binary (same pid)."""
    bindir = tmp_path / "shim-bin"
    record = tmp_path / "record"
    bindir.mkdir()
    record.mkdir()
    (bindir / "skopeo").write_text(f"""#!/bin/bash
echo "$$" >> {record}/skopeo.pids
printf '%s\\n' "$*" >> {record}/skopeo.args
prev=""
for a in "$@"; do
  if [ "$prev" = "--authfile" ]; then
    stat -L -c '%a' "$a" >> {record}/authfile.modes; echo "$a" >> {record}/authfile.paths
    grep -c . "$a" >> {record}/authfile.readable
  fi
  prev="$a"
done
env >> {record}/skopeo.env
{"exec sleep " + str(skopeo_sleep) if skopeo_sleep else "exec " + str(REAL_SKOPEO) + ' "$@"'}
""")
    registry_tail = (
        "echo 'configuration error: the shim says no' >&2; exit 1"
        if registry_fails
        else f'exec {REAL_REGISTRY} "$@"'
    )
    (bindir / "docker-registry").write_text(f"""#!/bin/bash
echo "$$" >> {record}/registry.pids
printf '%s\\n' "$*" >> {record}/registry.args
cp "$2" {record}/registry-config.json
{registry_tail}
""")
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    return bindir, record


def read_pids(record: Path, name: str) -> list[int]:
    path = record / f"{name}.pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p) and not _zombie(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def sync(images: ImageSet, out: Path, **options) -> object:
    options.setdefault("platforms", (AMD64,))
    return pipeline.cache(images, out, strategy="sync", options=CacheOptions(**options))


def test_credentials_reach_skopeo_only_through_a_private_authfile(
    conformance_catalog: Catalog, tmp_path, monkeypatch
):
    c = conformance_catalog
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    context = tmp_path / "ctx"
    out = context / "registry"
    sync(
        ImageSet.of([c.ref(c.htpasswd, "private/app")]),
        out,
        credentials=ConfiguredCredentials(creds=c.htpasswd.credential),
    )
    assert DistributionLayout(out).resolve("private/app", "1") == c.private.digest
    args = (record / "skopeo.args").read_text() + (record / "registry.args").read_text()
    assert TEST_PASSWORD not in args
    assert (record / "authfile.modes").read_text().split() == ["600"]
    # The auth file exists only in memory: skopeo reads the descriptor it inherited.
    authfile = (record / "authfile.paths").read_text().split()[0]
    assert authfile.startswith("/proc/self/fd/"), authfile
    assert (record / "authfile.readable").read_text().split() == ["1"]
    env = (record / "skopeo.env").read_text()
    assert TEST_PASSWORD not in env and "REGISTRY_AUTH_FILE" not in env
    config = json.loads((record / "registry-config.json").read_text())
    assert config["http"]["addr"].startswith("127.0.0.1:")
    assert config["storage"]["filesystem"]["rootdirectory"] == str(out.absolute())
    assert config["storage"]["maintenance"]["uploadpurging"]["enabled"] is False
    # Nothing can delete through the local registry; it logs no requests.
    assert "delete" not in config["storage"]
    assert config["log"]["accesslog"]["disabled"] is True
    assert sorted(p.name for p in context.iterdir()) == ["registry"]
    assert sorted(p.name for p in out.iterdir()) == ["docker"]
    assert wait_gone(read_pids(record, "registry") + read_pids(record, "skopeo")) == []


def test_no_process_survives_an_error(conformance_catalog: Catalog, tmp_path, monkeypatch):
    c = conformance_catalog
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    # The manifest exists (planning succeeds) but skopeo is given a blob-less repository.
    bad = c.ref(c.plain, "library/absent")
    with pytest.raises(CacheError, match="library/absent"):
        sync(ImageSet.of([c.ref(c.plain, "library/single"), bad]), tmp_path / "registry")
    assert wait_gone(read_pids(record, "registry") + read_pids(record, "skopeo")) == []


def test_a_registry_that_does_not_start_shows_its_log(
    conformance_catalog: Catalog, tmp_path, monkeypatch
):
    c = conformance_catalog
    bindir, _ = shims(tmp_path, registry_fails=True)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(SealpyError) as failure:
        sync(ImageSet.of([c.ref(c.plain, "library/single")]), tmp_path / "registry")
    assert "did not start" in str(failure.value) and "the shim says no" in str(failure.value)


def _start_sealpy(
    tmp_path: Path, catalog: Catalog, bindir: Path, **extra_env: str
) -> tuple[subprocess.Popen, Path]:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", **extra_env}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealpy.core",
            "registry",
            "save",
            "--strategy",
            "sync",
            "--platform",
            "linux/amd64",
            "--images",
            str(catalog.ref(catalog.plain, "library/single")),
            str(context),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, context


def _wait_for_pids(record: Path, timeout: float = 20) -> tuple[list[int], list[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        registry, skopeo = read_pids(record, "registry"), read_pids(record, "skopeo")
        if registry and skopeo:
            return registry, skopeo
        time.sleep(0.05)
    raise AssertionError("sealpy did not start the registry and skopeo")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_process_outlives_an_interrupted_or_killed_sealpy(
    conformance_catalog: Catalog, tmp_path, sig
):
    bindir, record = shims(tmp_path, skopeo_sleep=60)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    secret = f"{TEST_USER}:{TEST_PASSWORD}"
    process, _context = _start_sealpy(
        tmp_path, conformance_catalog, bindir, TMPDIR=str(tmpdir), SEALPY_CREDS=secret
    )
    try:
        registry, skopeo = _wait_for_pids(record)
        process.send_signal(sig)
        process.wait(timeout=20)
        if sig != signal.SIGKILL:
            assert process.returncode == 128 + sig
            assert process.stderr.read().strip().splitlines()[-1] == "error: interrupted"
        assert wait_gone(registry + skopeo) == [], "a child process outlived sealpy"
        # No auth file (nor anything else holding the credential) is left behind.
        encoded = base64.b64encode(secret.encode())
        for path in tmpdir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert TEST_PASSWORD.encode() not in data and encoded not in data, path
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def namespace_of_images(image_factory, plain_registry):
    """Six images in one namespace: enough for the sync strategy to batch them."""
    images = {}
    for i in range(6):
        image = image_factory.image(f"sync/batch/{i}", [2000, 1000])
        image_factory.push(image, plain_registry.host, f"batch/app{i}", "1")
        images[f"batch/app{i}"] = image
    return images


def test_a_namespace_is_copied_in_batches(
    namespace_of_images, plain_registry, tmp_path, monkeypatch
):
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    refs = [f"{plain_registry.host}/{repo}:1" for repo in namespace_of_images]
    report = sync(ImageSet.of(refs), tmp_path / "registry", max_parallel=1)
    assert {(i.repository, i.digest) for i in report.images} == {
        (repo, image.digest) for repo, image in namespace_of_images.items()
    }
    calls = (record / "skopeo.args").read_text().splitlines()
    assert len(calls) == 1 and " sync " in f" {calls[0]} ", calls  # one skopeo for six images
    assert report.blobs_fetched == sum(len(i.blob_digests) for i in namespace_of_images.values())


def test_an_image_a_batch_cannot_deliver_fails_on_its_own(
    namespace_of_images, plain_registry, tmp_path
):
    refs = [f"{plain_registry.host}/{repo}:1" for repo in namespace_of_images]
    missing = f"{plain_registry.host}/batch/app0:no-such-tag"
    with pytest.raises(CacheError) as failure:
        sync(ImageSet.of([*refs, missing]), tmp_path / "registry", max_parallel=1)
    assert missing in str(failure.value)
    assert "1 of" not in str(failure.value)  # only the missing one failed
    layout = DistributionLayout(tmp_path / "registry")
    for repo, image in namespace_of_images.items():
        assert layout.resolve(repo, "1") == image.digest


def skopeo_calls(record: Path) -> list[str]:
    path = record / "skopeo.args"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def conflicting_sources(image_factory, plain_registry, htpasswd_registry):
    """conflict/app:1 on two registries, with different content."""
    one = image_factory.image("sync/conflict/one", [1100])
    two = image_factory.image("sync/conflict/two", [1200])
    image_factory.push(one, plain_registry.host, "conflict/app", "1")
    credentials = ConfiguredCredentials(creds=htpasswd_registry.credential)
    with RegistryClient(credentials=credentials) as client:
        image_factory.push(two, htpasswd_registry.host, "conflict/app", "1", client=client)
    return [
        f"{plain_registry.host}/conflict/app:1",
        f"{htpasswd_registry.host}/conflict/app:1",
    ]


def test_two_sources_for_one_tag_are_a_conflict_found_before_copying(
    conflicting_sources, htpasswd_registry, tmp_path, monkeypatch
):
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(CacheError) as failure:
        sync(
            ImageSet.of(conflicting_sources),
            tmp_path / "registry",
            credentials=ConfiguredCredentials(creds=htpasswd_registry.credential),
        )
    message = str(failure.value)
    assert "would all be stored as conflict/app:1 with different content" in message
    assert all(source in message for source in conflicting_sources)
    assert skopeo_calls(record) == [], "nothing is copied"
    assert DistributionLayout(tmp_path / "registry").resolve("conflict/app", "1") is None


def test_every_platform_asked_for_must_exist_even_when_all_are_copied(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    s390x = Platform("linux", "s390x")
    has = "the image has linux/amd64, linux/arm/v7, linux/arm64"
    # several platforms: every platform is copied, but s390x is not among them
    with pytest.raises(CacheError, match=f"no manifest for platform linux/s390x; {has}"):
        sync(
            ImageSet.of([c.ref(c.plain, "library/multi")]), tmp_path / "a", platforms=(AMD64, s390x)
        )
    # a reference pinning the index: the same
    pinned = c.ref(c.plain, "library/multi", digest=c.multi.digest)
    with pytest.raises(CacheError, match=f"no manifest for platform linux/s390x; {has}"):
        sync(ImageSet.of([pinned]), tmp_path / "b", platforms=(s390x,))


@pytest.fixture(scope="module")
def namespace_of_indexes(image_factory, plain_registry):
    """Four two-platform images in one namespace: one batch for a single worker."""
    indexes = {}
    for i in range(4):
        index = image_factory.multi_platform(f"sync/allbatch/{i}", ["linux/amd64", "linux/arm64"])
        image_factory.push(index, plain_registry.host, f"allbatch/app{i}", "1")
        indexes[f"allbatch/app{i}"] = index
    return indexes


def test_a_batch_copies_every_platform_with_all(
    namespace_of_indexes, plain_registry, tmp_path, monkeypatch
):
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    refs = [f"{plain_registry.host}/{repo}:1" for repo in namespace_of_indexes]
    report = sync(ImageSet.of(refs), tmp_path / "registry", max_parallel=1, all_platforms=True)
    expected = {(repo, index.digest) for repo, index in namespace_of_indexes.items()}
    assert {(i.repository, i.digest) for i in report.images} == expected
    layout = DistributionLayout(tmp_path / "registry")
    assert {(repo, layout.resolve(repo, "1")) for repo in namespace_of_indexes} == expected
    calls = skopeo_calls(record)
    assert len(calls) == 1 and " sync " in f" {calls[0]} " and "--all" in calls[0], calls


def test_each_repository_gets_its_own_credentials(
    conformance_catalog: Catalog, tmp_path, monkeypatch
):
    c = conformance_catalog
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    authfile = tmp_path / "auth.json"
    write_authfile(
        authfile,
        {
            f"{c.htpasswd.host}/private/alpha": Credential(TEST_USER, "not-the-password"),
            f"{c.htpasswd.host}/private/app": c.htpasswd.credential,
        },
    )
    other = c.ref(c.htpasswd, "private/alpha")
    with pytest.raises(CacheError) as failure:
        sync(
            ImageSet.of([other, c.ref(c.htpasswd, "private/app")]),
            tmp_path / "registry",
            credentials=ConfiguredCredentials(authfile=authfile),
        )
    # Only the repository with the wrong credential fails; the other one's are its own.
    assert str(failure.value).startswith(f"{other}:"), str(failure.value)
    assert DistributionLayout(tmp_path / "registry").resolve("private/app", "1") == c.private.digest
    assert TEST_PASSWORD not in "\n".join(skopeo_calls(record))


def test_a_stalled_source_fails_naming_the_image(plain_registry, conformance_catalog, tmp_path):
    plan = FaultPlan(rate=1.0, kinds=["stall"], paths=r"/blobs/", stall_seconds=30)
    with FaultProxy(plain_registry.host, plan) as proxy:
        ref = f"{proxy.host}/library/single:1"
        retry = RetryPolicy(
            attempts=2, max_seconds=20, initial_backoff=0.1, max_backoff=0.2, read_timeout=1.5
        )
        with pytest.raises(CacheError) as failure:
            sync(ImageSet.of([ref]), tmp_path / "registry", retry=retry)
        assert proxy.faults, "the source stalled"
    message = str(failure.value)
    assert message.startswith(f"{ref}: ") and "made no progress" in message, message


def test_a_warm_rerun_runs_no_skopeo(conformance_catalog: Catalog, tmp_path, monkeypatch):
    c = conformance_catalog
    bindir, record = shims(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    images = ImageSet.of([c.ref(c.plain, "library/single"), c.ref(c.plain, "library/multi")])
    sync(images, tmp_path / "registry")
    assert len(skopeo_calls(record)) == 2
    report = sync(images, tmp_path / "registry")
    assert len(skopeo_calls(record)) == 2, "the warm run started no skopeo"
    assert len(read_pids(record, "registry")) == 1, "nor a registry: there is nothing to copy"
    assert {i.digest for i in report.images} == {
        c.single.digest,
        c.multi.for_platform("linux/amd64").digest,
    }


class RecordingProgress(SilentProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_skopeo_progress_is_relayed_per_image(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    progress = RecordingProgress()
    refs = [c.ref(c.plain, "library/single"), c.ref(c.plain, "library/shared")]
    sync(ImageSet.of(refs), tmp_path / "registry", progress=progress, max_parallel=2)
    for ref in refs:
        lines = [line for line in progress.lines if line.startswith(f"{ref}: ")]
        assert any(line.startswith(f"{ref}: copying blob sha256:") for line in lines), lines
        assert f"{ref}: writing manifest" in lines
    assert all("\x1b" not in line and "\r" not in line for line in progress.lines)


class _NotARegistry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("squatter", ["http.server", "registry"])
def test_the_local_registry_does_not_take_another_servers_port(
    squatter, plain_registry, tmp_path, monkeypatch
):
    server = None
    if squatter == "http.server":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _NotARegistry)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        taken = server.server_address[1]
    else:
        taken = plain_registry.port
    ports = iter([taken])
    monkeypatch.setattr(localregistry, "free_port", lambda: next(ports, None) or _real_free_port())
    try:
        with RegistryProcess(tmp_path / "root", tmp_path / "work") as registry:
            assert registry.port != taken
            assert registry.process is not None and registry.process.poll() is None
            answer = requests.get(f"{registry.url}/v2/", timeout=5)
            assert "Docker-Distribution-Api-Version" in answer.headers
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


_real_free_port = localregistry.free_port


def test_the_local_registry_is_reached_without_the_http_proxy(tmp_path, monkeypatch):
    # A proxy that refuses connections: asked through it, the registry never answers.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with RegistryProcess(tmp_path / "root", tmp_path / "work").start(timeout=5) as registry:
        assert registry.process is not None and registry.process.poll() is None


def test_the_local_registry_ignores_registry_variables_and_refuses_deletion(tmp_path, monkeypatch):
    # containers' auth file variable, which distribution would read as its auth section,
    # and an override that would allow deletion
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("REGISTRY_STORAGE_DELETE_ENABLED", "true")
    with RegistryProcess(tmp_path / "root", tmp_path / "work").start(timeout=5) as registry:
        answer = requests.delete(
            f"{registry.url}/v2/library/x/manifests/sha256:{'0' * 64}", timeout=5
        )
        assert answer.status_code == 405, answer.text  # deletion is disabled


def test_a_copy_that_kept_moving_before_it_broke_does_not_use_up_the_time_budget(
    tmp_path, monkeypatch
):
    """As in the client, the time budget counts time spent failing since the last
    progress: copies that move for a while and then break are retried while attempts
    last; copies that fail at once stop when failing has taken max_seconds."""
    from sealpy.strategies.sync import MemoryAuthFile, SkopeoRunner

    policy = RetryPolicy(attempts=6, max_seconds=0.2, initial_backoff=0.01, max_backoff=0.02)
    runner = SkopeoRunner(
        {"CONTAINERS_REGISTRIES_CONF": "/dev/null"},
        MemoryAuthFile({}),
        CacheOptions(retry=policy),
        tmp_path,
    )
    calls = []

    def moving_then_broken(label, command, bound=None):
        calls.append(label)
        time.sleep(0.25)  # "copying" for longer than the whole budget
        return 1, "connection reset by peer", time.monotonic()

    monkeypatch.setattr(runner, "attempt", moving_then_broken)
    with pytest.raises(RegistryError, match="connection reset"):
        runner.run("img", [], "copy", [], [])
    assert len(calls) == policy.attempts

    calls.clear()
    started = time.monotonic()

    def failing_at_once(label, command, bound=None):
        calls.append(label)
        time.sleep(0.08)
        return 1, "connection refused", started  # never made progress

    monkeypatch.setattr(runner, "attempt", failing_at_once)
    with pytest.raises(RegistryError, match="gave up after"):
        runner.run("img", [], "copy", [], [])
    assert len(calls) < policy.attempts
    runner.authfile.close()
