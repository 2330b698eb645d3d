"""Link files a registry left empty or garbled (it ran out of disk mid-run): `registry
verify` reports them, `--fix` repairs those whose blob is there and removes the rest, and a
`sync` re-run over such a tree completes (the registry it starts answers 500 for them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.cache.verify import repair_links
from sealpy.core.cli import main
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.transport.distribution import DistributionLayout


def images_of(c: Catalog) -> ImageSet:
    return ImageSet.of([c.ref(c.plain, "library/single"), c.ref(c.plain, "library/shared")])


def cache(images: ImageSet, out: Path, strategy: str) -> None:
    pipeline.cache(images, out, strategy=strategy, options=CacheOptions(platforms=(AMD64,)))


def verify(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["registry", "verify", *args])
    return code, capsys.readouterr().out


def plant_disk_full_damage(out: Path, c: Catalog) -> dict[str, Path]:
    """What a registry leaves when writes start failing: empty links (a layer's, a
    manifest revision's, a tag's history), one with a newline, one garbled, and a
    repository that got no further than a layer link."""
    layout = DistributionLayout(out)
    single = c.single
    planted = {
        "layer": layout.layer_link("library/single", single.layers[0].digest),
        "config": layout.layer_link("library/single", single.config.digest),
        "revision": layout.revision_link("library/single", single.digest),
        "history": layout.tag_dir("library/single", "1")
        / "index/sha256"
        / single.digest[7:]
        / "link",
        "shared-layer": layout.layer_link("library/shared", c.shared.layers[1].digest),
        "unfinished": layout.layer_link("team/unfinished", single.layers[1].digest),
        "unfinished-absent": layout.layer_link("team/unfinished", "sha256:" + "ab" * 32),
    }
    for link in planted.values():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_bytes(b"")
    planted["config"].write_bytes(single.config.digest.encode() + b"\n")
    planted["shared-layer"].write_bytes(b"sha256:\x00\x00garbage")
    return planted


def test_verify_reports_empty_and_garbled_link_files(
    conformance_catalog: Catalog, tmp_path, capsys
):
    c = conformance_catalog
    out = tmp_path / "registry"
    cache(images_of(c), out, "proxy")
    plant_disk_full_damage(out, c)
    code, text = verify(capsys, str(out))
    assert code == 1
    assert f"library/single@{c.single.layers[0].digest}: layer link is empty" in text
    assert f"library/single@{c.single.config.digest}: layer link is malformed" in text
    assert f"library/single@{c.single.digest}: manifest revision link is empty" in text
    assert f"library/single@{c.single.digest}: tag 1 index link is empty" in text
    assert f"library/shared@{c.shared.layers[1].digest}: layer link is malformed" in text
    assert f"team/unfinished@{c.single.layers[1].digest}: layer link is empty" in text
    assert "team/unfinished@sha256:" + "ab" * 32 + ": layer link is empty" in text


def test_fix_rewrites_links_to_intact_blobs_and_removes_the_rest(
    conformance_catalog: Catalog, tmp_path, capsys
):
    c = conformance_catalog
    out = tmp_path / "registry"
    cache(images_of(c), out, "proxy")
    planted = plant_disk_full_damage(out, c)
    assert verify(capsys, "--fix", str(out))[0] == 0
    assert verify(capsys, str(out)) == (0, "")
    layout = DistributionLayout(out)
    # Nothing needs fetching again: the images are whole once their links are.
    assert layout.resolve("library/single", "1") == c.single.digest
    assert layout.stored_manifest("library/single", c.single.digest) is not None
    assert planted["layer"].read_bytes() == c.single.layers[0].digest.encode()
    assert planted["config"].read_bytes() == c.single.config.digest.encode()
    assert not planted["unfinished-absent"].parent.exists()
    report = pipeline.cache(
        images_of(c), out, strategy="proxy", options=CacheOptions(platforms=(AMD64,))
    )
    assert report.blobs_fetched == 0


def test_repair_links_needs_no_hashing_and_leaves_good_links(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    out = tmp_path / "registry"
    cache(images_of(c), out, "proxy")
    assert repair_links(DistributionLayout(out)) == []
    planted = plant_disk_full_damage(out, c)
    changed = repair_links(DistributionLayout(out))
    assert len(changed) == len(planted)
    assert "team/unfinished: layer link was empty: removed" in changed
    assert repair_links(DistributionLayout(out)) == []


@pytest.mark.parametrize("first", ["sync", "proxy"])
def test_a_sync_rerun_over_empty_link_files_completes(
    conformance_catalog: Catalog, tmp_path, capsys, first
):
    c = conformance_catalog
    out = tmp_path / "registry"
    cache(images_of(c), out, first)
    layout = DistributionLayout(out)
    planted = plant_disk_full_damage(out, c)
    current = layout.tag_dir("library/single", "1") / "current" / "link"
    current.write_bytes(b"")
    cache(images_of(c), out, "sync")
    assert verify(capsys, str(out)) == (0, "")
    assert layout.resolve("library/single", "1") == c.single.digest
    assert layout.resolve("library/shared", "1") == c.shared.digest
    assert planted["layer"].read_bytes() == c.single.layers[0].digest.encode()
