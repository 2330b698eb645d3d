"""``--offline``: with a lock, build and registry save take every manifest and blob from
the machine-wide blob cache — proved with the source registry stopped — and name what
the cache lacks; without a lock, with sync or without the cache it is a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
from test_lockfile import PLATFORM, cli, context_with

from sealpy.core.transport.blobcache import BlobCache
from sealpy.core.transport.distribution import DistributionLayout


@pytest.fixture
def cached_context(capsys, tmp_path, image_factory, start_registry):
    """A locked context whose images went through the blob cache once, then the source
    registry stopped and ``<context>/registry`` removed: only the cache has them now."""
    source = start_registry(tmp_path / "source-root")
    single = image_factory.image("offline/single", [2000, 1000])
    multi = image_factory.multi_platform("offline/multi", ("linux/amd64", "linux/arm64"))
    a = image_factory.push(single, source.host, "library/a", "1")
    b = image_factory.push(multi, source.host, "library/b", "2")
    context = context_with(tmp_path, a, b)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    code, _, err = cli(capsys, "registry", "save", PLATFORM, context)
    assert code == 0, err
    source.stop()
    shutil.rmtree(context / "registry")
    return context, single, multi


def test_offline_save_and_build_succeed_with_the_source_registry_stopped(
    capsys, tmp_path, cached_context
):
    context, single, multi = cached_context
    code, out, err = cli(capsys, "registry", "save", "--offline", PLATFORM, "--json", context)
    assert code == 0, err
    report = json.loads(out)
    assert report["totals"]["blobs_fetched"] == 0  # every blob came from the cache
    assert report["totals"]["blobs_reused"] > 0
    layout = DistributionLayout(context / "registry")
    assert layout.resolve("library/a", "1") == single.digest
    assert layout.resolve("library/b", "2") == multi.digest
    amd64 = multi.for_platform("linux/amd64")
    assert layout.stored_manifest("library/b", amd64.digest) is not None
    for digest in single.blob_digests | amd64.blob_digests:
        assert layout.has_blob(digest)

    shutil.rmtree(context / "registry")
    store = tmp_path / "store"
    code, out, err = cli(
        capsys, "build", "--offline", PLATFORM, "--root", store, "-t", "app", context
    )
    assert code == 0, err
    assert "Successfully tagged localhost/app:latest" in out
    assert DistributionLayout(context / "registry").resolve("library/a", "1") == single.digest


def test_offline_names_the_blob_the_cache_lacks(capsys, own_blob_cache, cached_context):
    context, single, _ = cached_context
    missing = single.layers[1].digest
    BlobCache(own_blob_cache).blob_path(missing).unlink()
    code, _, err = cli(capsys, "registry", "save", "--offline", PLATFORM, context)
    assert code != 0
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "library/a:1" in last and missing in last
    assert "not in the blob cache" in last and "Traceback" not in err
    assert DistributionLayout(context / "registry").resolve("library/a", "1") is None


def test_offline_names_the_manifest_the_cache_lacks(capsys, own_blob_cache, cached_context):
    context, _, multi = cached_context
    BlobCache(own_blob_cache).blob_path(multi.digest).unlink()
    code, _, err = cli(capsys, "registry", "save", "--offline", PLATFORM, context)
    assert code != 0
    assert "library/b:2" in err and f"manifest {multi.digest}" in err


def test_offline_needs_a_lock_the_proxy_strategy_and_the_cache(capsys, tmp_path):
    context = context_with(tmp_path, "127.0.0.1:9/library/a:1")
    code, _, err = cli(capsys, "registry", "save", "--offline", context)
    assert code != 0 and "--offline: " in err and "sealpy.lock does not exist" in err
    code, _, err = cli(capsys, "build", "--offline", "--root", tmp_path / "s", context)
    assert code != 0 and "sealpy.lock does not exist" in err
    code, _, err = cli(capsys, "registry", "save", "--offline", "--strategy", "sync", context)
    assert code == 2 and "--offline needs the proxy strategy" in err
    code, _, err = cli(capsys, "registry", "save", "--offline", "--cache-dir", "none", context)
    assert code == 2 and "blob cache" in err
    assert not (context / "registry").exists()
