"""The machine-wide blob cache (issue 18): each byte fetched once per machine, written
once (hard links), shared safely by concurrent processes, never trusted when changed or
unfinished, and pruned without pulling a blob from under a process using it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealpy.core.image.media import Descriptor
from sealpy.core.reference import ImageReference
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer
from sealpy.core.transport.blobcache import BlobCache
from sealpy.core.transport.distribution import DistributionLayout

BASE_SIZE = 400_000


@pytest.fixture(scope="module")
def source(image_factory: ImageFactory, tmp_path_factory):
    """Three images sharing a base layer, each with a layer of its own."""
    root = tmp_path_factory.mktemp("blobcache-source")
    with RegistryServer(root / "data", workdir=root / "work") as registry:
        base = image_factory.layer(BASE_SIZE, "blobcache/base")
        images = {}
        for name in ("a1", "a2", "b1"):
            image = image_factory.image(f"blobcache/{name}", [base, 30_000 + len(name)])
            image_factory.push(image, registry.host, f"bc/{name}", "1")
            images[name] = image
        yield registry, images, base


def sealpy(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "sealpy.core", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def save(proxy: FaultProxy, names: list[str], out: Path, *extra: str, **kw):
    context = out.parent / f"{out.name}-ctx"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    images = ",".join(str(ImageReference(proxy.host, f"bc/{n}", "1")) for n in names)
    return sealpy(
        "registry",
        "save",
        "--platform",
        "linux/amd64",
        "--registry-dir",
        str(out),
        "--images",
        images,
        *extra,
        str(context),
        **kw,
    )


def blob_gets(proxy: FaultProxy, since: int = 0) -> list[str]:
    return [
        s.path.rsplit("/", 1)[1]
        for s in proxy.seen[since:]
        if s.method == "GET" and "/blobs/sha256:" in s.path
    ]


def data_file(registry_dir: Path, digest: str) -> Path:
    return DistributionLayout(registry_dir).blob_path(digest)


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_second_context_fetches_no_shared_blob_and_links_it(source, tmp_path, own_blob_cache):
    registry, images, base = source
    with FaultProxy(registry.host) as proxy:
        save(proxy, ["a1"], tmp_path / "A")
        first = len(proxy.seen)
        done = save(proxy, ["a2"], tmp_path / "B", "--debug")
        fetched_by_b = blob_gets(proxy, first)
    assert base.digest in blob_gets(proxy)[: len(blob_gets(proxy)) - len(fetched_by_b)]
    assert base.digest not in fetched_by_b  # the shared layer came from the cache
    assert set(fetched_by_b) == set(images["a2"].blob_digests) - {base.digest}
    cached = BlobCache(own_blob_cache).blob_path(base.digest)
    in_a, in_b = data_file(tmp_path / "A", base.digest), data_file(tmp_path / "B", base.digest)
    assert in_a.stat().st_ino == in_b.stat().st_ino == cached.stat().st_ino  # one inode
    assert cached.stat().st_mode & 0o777 == 0o444
    assert sha256_of(in_b) == base.digest
    assert "link" in done.stderr and "blob cache into" in done.stderr  # --debug says how
    sealpy("registry", "verify", str(tmp_path / "B"))


def test_cache_dir_none_writes_nothing(source, tmp_path, own_blob_cache):
    registry, _, base = source
    with FaultProxy(registry.host) as proxy:
        done = save(proxy, ["a1"], tmp_path / "A", "--cache-dir", "none", "--debug")
    assert "blob cache: off" in done.stderr
    assert not any(p.is_file() for p in own_blob_cache.rglob("*"))
    assert data_file(tmp_path / "A", base.digest).stat().st_nlink == 1


def test_manifest_by_digest_comes_from_the_cache(source, tmp_path):
    """A digest reference needs no registry once cached: manifest and blobs by digest
    (signature copying off: it asks the registry what is attached, which can change)."""
    registry, images, _ = source
    with FaultProxy(registry.host) as proxy:
        save(proxy, ["a1"], tmp_path / "A")
        pinned = f"{proxy.host}/bc/a1@{images['a1'].digest}"
        before = len(proxy.seen)
        context = tmp_path / "P-ctx"
        context.mkdir()
        (context / "Kubefile").write_text("FROM scratch\n")
        sealpy(
            "registry",
            "save",
            "--images",
            pinned,
            "--registry-dir",
            str(tmp_path / "P"),
            "--copy-signatures=false",
            str(context),
        )
        assert proxy.seen[before:] == []  # not one request
    assert DistributionLayout(tmp_path / "P").has_blob(images["a1"].digest)


def test_concurrent_processes_fetch_a_blob_once(source, tmp_path):
    registry, _, base = source
    # Slow requests, so that both processes ask for the base layer at about the same time.
    with FaultProxy(registry.host, FaultPlan(latency=0.3)) as proxy:
        contexts = []
        for name in ("X", "Y"):
            context = tmp_path / f"{name}-ctx"
            context.mkdir()
            (context / "Kubefile").write_text("FROM scratch\n")
            contexts.append((context, tmp_path / name))
        image = str(ImageReference(proxy.host, "bc/a1", "1"))
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sealpy.core",
                    "registry",
                    "save",
                    "--platform",
                    "linux/amd64",
                    "--images",
                    image,
                    "--registry-dir",
                    str(out),
                    str(ctx),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for ctx, out in contexts
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert blob_gets(proxy).count(base.digest) == 1
    for _, out in contexts:
        assert sha256_of(data_file(out, base.digest)) == base.digest


def test_killed_download_leaves_nothing_trusted(source, tmp_path, own_blob_cache):
    registry, _, base = source
    plan = FaultPlan(at={1: "stall"}, paths=rf"/blobs/{base.digest}$", stall_seconds=60)
    context = tmp_path / "K-ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\n")
    partial = own_blob_cache / "partial" / "sha256" / base.digest.split(":")[1]
    with FaultProxy(registry.host, plan) as proxy:
        image = str(ImageReference(proxy.host, "bc/a1", "1"))
        args = [
            sys.executable,
            "-m",
            "sealpy.core",
            "registry",
            "save",
            "--images",
            image,
            "--platform",
            "linux/amd64",
            "--registry-dir",
            str(tmp_path / "K"),
            str(context),
        ]
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while not (partial.is_file() and partial.stat().st_size > 0):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        cache = BlobCache(own_blob_cache)
        assert not cache.blob_path(base.digest).exists()  # half a blob is never a blob
        subprocess.run(args, check=True, capture_output=True, timeout=120)
    assert sha256_of(cache.blob_path(base.digest)) == base.digest
    assert sha256_of(data_file(tmp_path / "K", base.digest)) == base.digest
    assert not partial.exists()


def test_changed_cached_blob_is_verified_and_fetched_again(source, tmp_path, own_blob_cache):
    """A tool writing into a context's hard-linked blob changes the cached one too: the
    next use sees the record no longer matches, hashes it, and fetches it again."""
    registry, _, base = source
    with FaultProxy(registry.host) as proxy:
        save(proxy, ["a1"], tmp_path / "A")
        linked = data_file(tmp_path / "A", base.digest)
        linked.chmod(0o644)  # what a careless tool (or root, which ignores 0444) can do
        with open(linked, "r+b") as f:
            f.write(b"tampered")
        before = len(proxy.seen)
        save(proxy, ["a2"], tmp_path / "B")
        assert base.digest in blob_gets(proxy, before)
    fresh = BlobCache(own_blob_cache).blob_path(base.digest)
    assert sha256_of(fresh) == base.digest
    assert sha256_of(data_file(tmp_path / "B", base.digest)) == base.digest


def test_prune_keeps_a_blob_in_use(source, tmp_path, own_blob_cache):
    registry, images, base = source
    with FaultProxy(registry.host) as proxy:
        save(proxy, ["a1"], tmp_path / "A")
    cache = BlobCache(own_blob_cache)
    before = cache.info()
    assert before.blobs >= len(images["a1"].blob_digests)
    # Another process linking the base layer right now holds its record's lock.
    record = own_blob_cache / "records" / "sha256" / base.digest.split(":")[1]
    with open(record, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = sealpy("cache", "prune", "--all")
    assert "1 in use, kept" in done.stdout
    assert cache.blob_path(base.digest).is_file()
    assert cache.info().blobs == 1
    info = sealpy("cache", "info", "--json").stdout
    assert '"blobs": 1' in info and str(own_blob_cache) in info


def test_prune_least_recently_used_first(tmp_path):
    cache = BlobCache(tmp_path / "cache")
    digests = []
    for i, age in enumerate((300, 200, 100)):  # seconds since last use
        data = bytes([i]) * 1000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        source = _BytesSource(data)
        cache._fill(Descriptor("application/octet-stream", digest, len(data)), source, None)
        record = tmp_path / "cache" / "records" / "sha256" / digest.split(":")[1]
        os.utime(record, (time.time() - age, time.time() - age))
        digests.append(digest)
    result = cache.prune(max_size=1500)  # room for one
    assert (result.removed, result.remaining) == (2, 1)
    assert [cache.blob_path(d).exists() for d in digests] == [False, False, True]
    assert cache.prune(older_than=50).removed == 1


def test_prune_options_are_checked(tmp_path):
    done = sealpy("cache", "prune", "--max-size", "lots", check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--max-size" in done.stderr
    done = sealpy("cache", "prune", check=False)
    assert done.returncode == 2 and "--all" in done.stderr


def test_pull_takes_blobs_from_the_cache(source, tmp_path, own_blob_cache):
    registry, _, base = source
    with FaultProxy(registry.host) as proxy:
        image = str(ImageReference(proxy.host, "bc/a1", "1"))
        sealpy("pull", "--root", str(tmp_path / "store1"), image)
        before = len(proxy.seen)
        sealpy("pull", "--root", str(tmp_path / "store2"), image)
        assert blob_gets(proxy, before) == []
    stored = tmp_path / "store2" / "blobs" / "sha256" / base.digest.split(":")[1]
    cached = BlobCache(own_blob_cache).blob_path(base.digest)
    assert stored.stat().st_ino == cached.stat().st_ino


def test_other_filesystem_gets_a_verified_copy(source, tmp_path, own_blob_cache):
    """Cache on one file system, the registry directory on a tmpfs: no hard link can
    cross, tmpfs has no reflinks, so blobs are copied (and verified on the way)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: cross-filesystem copy not exercised")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): copy not exercised")
    try:
        registry, _, base = source
        with FaultProxy(registry.host) as proxy:
            save(proxy, ["a1"], tmp_path / "A")  # fills the cache
            before = len(proxy.seen)
            out = save(proxy, ["a1"], mount / "B", "--debug")
            assert blob_gets(proxy, before) == []
        copied = data_file(mount / "B", base.digest)
        assert copied.stat().st_nlink == 1 and sha256_of(copied) == base.digest
        assert "copy" in out.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=False)


class _BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_manifest(self, reference):  # pragma: no cover
        raise AssertionError

    def fetch_blob(self, descriptor, writer, on_bytes=None) -> None:
        writer.write(self.data)


def test_load_links_blobs_the_cache_holds(source, tmp_path, own_blob_cache):
    registry, _, base = source
    with FaultProxy(registry.host) as proxy:
        image = str(ImageReference(proxy.host, "bc/a1", "1"))
        sealpy("pull", "--root", str(tmp_path / "store1"), image)
    archive = tmp_path / "a1.tar"
    sealpy(
        "save",
        "--root",
        str(tmp_path / "store1"),
        "--format",
        "oci-archive",
        "-o",
        str(archive),
        image,
    )
    sealpy("load", "--root", str(tmp_path / "store2"), "-i", str(archive))
    loaded = tmp_path / "store2" / "blobs" / "sha256" / base.digest.split(":")[1]
    cached = BlobCache(own_blob_cache).blob_path(base.digest)
    assert loaded.stat().st_ino == cached.stat().st_ino


def test_build_from_takes_blobs_from_the_cache(source, tmp_path):
    registry, _, _ = source
    with FaultProxy(registry.host) as proxy:
        image = str(ImageReference(proxy.host, "bc/b1", "1"))
        digests = []
        for name in ("one", "two"):
            context = tmp_path / name
            context.mkdir()
            (context / "Kubefile").write_text(f"FROM {image}\nLABEL x=y\n")
            before = len(proxy.seen)
            done = sealpy(
                "build",
                "--no-save-image",
                "-q",
                "--root",
                str(tmp_path / f"s-{name}"),
                "-t",
                "t",
                str(context),
            )
            digests.append(done.stdout.strip().splitlines()[-1])
            fetched = blob_gets(proxy, before)
        assert fetched == []  # the second build's base image came from the cache
        assert digests[0] == digests[1]


def test_built_image_is_the_same_with_the_cache_off_linked_copied_and_warm(source, tmp_path):
    """The cluster image's digest must not depend on the cache (issue 18): off, on and
    hard-linked, on and copied (the context on another file system, where a tmpfs can be
    mounted), and a warm re-run."""
    registry, _, _ = source
    image = str(ImageReference(registry.host, "bc/a1", "1"))

    def build(name: str, where: Path, *extra: str) -> str:
        context = where / name
        context.mkdir(parents=True)
        (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
        done = sealpy(
            "build",
            "-q",
            "--images",
            image,
            "--root",
            str(tmp_path / "store"),
            "-t",
            f"t-{name}",
            *extra,
            str(context),
        )
        return done.stdout.strip().splitlines()[-1]

    off = build("off", tmp_path, "--cache-dir", "none")
    linked = build("linked", tmp_path)
    warm = build("warm", tmp_path)  # every blob from the cache, the tag resolved again
    assert off == linked == warm
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        print("no tmpfs here (not root, or mount refused): the copied case is not exercised")
        return
    try:
        assert build("copied", mount) == off
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_unusable_cache_dir_is_one_clear_error(source, tmp_path):
    registry, _, _ = source
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with FaultProxy(registry.host) as proxy:
        done = save(proxy, ["a1"], tmp_path / "A", "--cache-dir", str(blocker / "c"), check=False)
        assert proxy.seen == []  # refused before any work
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "blob cache" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
