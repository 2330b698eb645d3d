"""proxy and sync, same context: the same repositories, tags, manifest and blob digests —
except the documented difference for multi-platform images without --all (proxy keeps
the index, sparse; sync stores the platform's manifest under the tag)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.model import ArchiveEntry, CacheOptions, Location
from sealpy.core.reference import ImageReference
from sealpy.core.testing.conformance import AMD64, Catalog, image_set
from sealpy.core.transport.distribution import DistributionLayout


def snapshot(root: Path) -> dict:
    layout = DistributionLayout(root)
    return {
        "repositories": {
            repo: {
                "tags": {tag: layout.resolve(repo, tag) for tag in layout.tags(repo)},
                "revisions": set(layout.revisions(repo)),
                "layers": set(layout.layer_links(repo)),
            }
            for repo in layout.repositories()
        },
        "blobs": set(layout.blob_digests()),
    }


def both(images, tmp_path: Path, **options) -> tuple[dict, dict]:
    options.setdefault("platforms", (AMD64,))
    out = {}
    for strategy in ("proxy", "sync"):
        root = tmp_path / strategy
        pipeline.cache(images, root, strategy=strategy, options=CacheOptions(**options))
        out[strategy] = snapshot(root)
    return out["proxy"], out["sync"]


def test_single_platform_and_pinned_single_images_are_identical(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    images = image_set(
        [
            c.ref(c.plain, "library/single"),
            c.ref(c.plain, "library/shared"),
            c.ref(c.plain, "library/docker"),
            c.ref(c.plain, "library/single", None, c.single.digest),
            c.ref(c.plain, "library/docker", "pinned", c.docker.digest),
        ]
    )
    proxy, sync = both(images, tmp_path)
    assert proxy == sync
    assert proxy["repositories"]["library/single"]["tags"] == {"1": c.single.digest}
    assert proxy["repositories"]["library/docker"]["tags"] == {
        "1": c.docker.digest,
        "pinned": c.docker.digest,
    }


def test_all_platforms_are_identical(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    images = image_set([c.ref(c.plain, "library/multi"), c.ref(c.plain, "library/dockerlist")])
    proxy, sync = both(images, tmp_path, all_platforms=True)
    assert proxy == sync
    assert proxy["repositories"]["library/multi"]["tags"] == {"1": c.multi.digest}
    assert c.multi.blob_digests <= proxy["blobs"]


def test_multi_platform_without_all_differs_as_documented(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    amd = c.multi.for_platform("linux/amd64")
    proxy, sync = both(image_set([c.ref(c.plain, "library/multi")]), tmp_path)
    # proxy: the tag names the unchanged index; only the amd64 child is stored.
    assert proxy["repositories"]["library/multi"]["tags"] == {"1": c.multi.digest}
    assert proxy["repositories"]["library/multi"]["revisions"] == {c.multi.digest, amd.digest}
    # sync: the tag names the amd64 manifest, as skopeo copies it.
    assert sync["repositories"]["library/multi"]["tags"] == {"1": amd.digest}
    assert sync["repositories"]["library/multi"]["revisions"] == {amd.digest}
    # The same image content either way: config and layers of amd64, nothing else.
    assert (
        proxy["repositories"]["library/multi"]["layers"]
        == sync["repositories"]["library/multi"]["layers"]
        == amd.blob_digests
    )
    assert proxy["blobs"] - {c.multi.digest} == sync["blobs"]


def test_a_pinned_index_differs_as_documented(conformance_catalog: Catalog, tmp_path):
    """The pin's digest is kept by both; proxy stores the selected child (sparse), sync
    must copy every child (the registry refuses an incomplete index on upload)."""
    c = conformance_catalog
    pinned = c.ref(c.plain, "library/multi", None, c.multi.digest)
    proxy, sync = both(image_set([pinned]), tmp_path)
    for snap in (proxy, sync):
        assert c.multi.digest in snap["repositories"]["library/multi"]["revisions"]
        assert snap["repositories"]["library/multi"]["tags"] == {}
    assert proxy["blobs"] < sync["blobs"]
    assert sync["blobs"] >= c.multi.blob_digests | {c.multi.digest}
    assert c.multi.for_platform("linux/amd64").blob_digests <= proxy["blobs"]


def diff_ids(root: Path, repository: str, tag: str) -> list[str]:
    layout = DistributionLayout(root)
    manifest = layout.get_manifest(repository, tag)
    return json.loads(layout.read_blob(manifest.config.digest))["rootfs"]["diff_ids"]


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_archives_have_the_same_layers(conformance_catalog: Catalog, tmp_path, transport):
    c = conformance_catalog
    path = c.docker_archive if transport == "docker-archive" else c.oci_archive
    entry = ArchiveEntry(
        transport, path, ImageReference.parse("archive/app:1"), Location("images/skopeo/tar.txt", 1)
    )
    images = image_set([], [entry])
    for strategy in ("proxy", "sync"):
        pipeline.cache(
            images, tmp_path / strategy, strategy=strategy, options=CacheOptions(platforms=(AMD64,))
        )
    expected = [layer.diff_id for layer in c.archive_image.layers]
    assert (
        diff_ids(tmp_path / "proxy", "archive/app", "1")
        == diff_ids(tmp_path / "sync", "archive/app", "1")
        == expected
    )
    if transport == "oci-archive":  # copied as they are: identical manifests
        assert snapshot(tmp_path / "proxy") == snapshot(tmp_path / "sync")
