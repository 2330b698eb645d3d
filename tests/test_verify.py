"""`sealpy registry verify`: finds every kind of damage, names repository and digest, and
--fix leaves a tree that a re-run completes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.cache.verify import check
from sealpy.core.cli import main
from sealpy.core.image import media
from sealpy.core.image.compose import new_index, new_manifest
from sealpy.core.image.media import Descriptor
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.testing.registry import skopeo_pull
from sealpy.core.transport.distribution import DistributionLayout


@pytest.fixture
def cached(conformance_catalog: Catalog, tmp_path) -> tuple[Path, Catalog, ImageSet]:
    c = conformance_catalog
    images = ImageSet.of(
        [
            c.ref(c.plain, "library/single"),
            c.ref(c.plain, "library/multi"),
            c.ref(c.plain, "library/shared"),
        ]
    )
    out = tmp_path / "registry"
    pipeline.cache(images, out, strategy="proxy", options=CacheOptions(platforms=(AMD64,)))
    return out, c, images


def verify(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["registry", "verify", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def test_a_clean_tree_passes(cached, capsys):
    out, _, _ = cached
    assert verify(capsys, str(out)) == (0, [])


def test_not_a_registry_tree_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["registry", "verify", str(tmp_path / "empty")]) == 2
    assert "is not a registry storage root" in capsys.readouterr().err


def corrupt_layer(out: Path, c: Catalog) -> str:
    layer = c.single.layers[2].digest
    blob = DistributionLayout(out).blob_path(layer)
    blob.write_bytes(b"garbage" + blob.read_bytes()[7:])
    return layer


def test_damage_is_reported_with_repository_and_digest(cached, capsys):
    out, c, _ = cached
    layout = DistributionLayout(out)
    layer = corrupt_layer(out, c)
    layout.layer_link("library/shared", c.shared.layers[1].digest).write_text("sha256:" + "0" * 64)
    (layout.tag_dir("library/multi", "1") / "current" / "link").write_text("nonsense")
    code, lines = verify(capsys, str(out))
    assert code == 1
    text = "\n".join(lines)
    assert f"blobs@{layer}: content has digest" in text
    assert f"library/single@{layer}: layer link points to a missing or corrupt blob" in text
    assert f"library/single@{c.single.digest}: image is incomplete" in text
    assert f"library/single@{c.single.digest}: tag 1 points to a missing or broken manifest" in text
    assert f"library/shared@{c.shared.layers[1].digest}: layer link holds" in text
    assert "library/multi: tag 1 has no valid current link" in text


def test_fix_then_rerun_restores_everything(cached, capsys, tmp_path, start_registry):
    out, c, images = cached
    layout = DistributionLayout(out)
    corrupt_layer(out, c)
    shutil.rmtree(layout.blob_path(c.shared.config.digest).parent)  # a missing blob
    code, _ = verify(capsys, "--fix", str(out))
    assert code == 0
    assert verify(capsys, str(out)) == (0, [])
    assert layout.resolve("library/single", "1") is None  # the broken image is gone ...
    report = pipeline.cache(images, out, strategy="proxy", options=CacheOptions(platforms=(AMD64,)))
    assert report.blobs_fetched == 2  # ... and only what was removed is fetched again
    assert verify(capsys, str(out)) == (0, [])
    server = start_registry(out)
    assert (
        skopeo_pull(f"docker://{server.host}/library/single:1", tmp_path / "p") == c.single.digest
    )


def test_an_incomplete_sparse_index_child_is_reported(cached, capsys):
    out, c, _ = cached
    layout = DistributionLayout(out)
    amd = c.multi.for_platform("linux/amd64")
    only_in_multi = amd.layers[1].digest
    shutil.rmtree(layout.layer_link("library/multi", only_in_multi).parent)
    code, lines = verify(capsys, str(out))
    assert code == 1
    assert any(
        line.startswith(f"library/multi@{amd.digest}: image is incomplete") for line in lines
    )
    assert any(line.startswith(f"library/multi@{c.multi.digest}: index child") for line in lines)


def test_a_rerun_removes_link_files_a_killed_writer_left(cached):
    out, _, images = cached
    layout = DistributionLayout(out)
    tag_current = layout.tag_dir("library/single", "1") / "current"
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid is free (and not reused this quickly)
    abandoned = tag_current / f".link.{finished.pid}-1.tmp"
    ours = tag_current / f".link.{os.getpid()}-1.tmp"
    abandoned.write_text("sha256:")
    ours.write_text("sha256:")
    assert main(["registry", "verify", str(out)]) == 1
    pipeline.cache(images, out, strategy="proxy", options=CacheOptions(platforms=(AMD64,)))
    assert not abandoned.exists()
    assert ours.exists()  # a live writer's file is left alone
    ours.unlink()
    assert main(["registry", "verify", str(out)]) == 0


@pytest.mark.parametrize("outer_first", [True, False])
def test_an_index_over_a_broken_nested_index_is_reported_whatever_the_listing_order(
    tmp_path, monkeypatch, outer_first
):
    """The verdict on an index needs the verdict on an index nested in it: indexes are
    judged children first, not in the order the directory lists them."""
    layout = DistributionLayout(tmp_path / "registry", durable=False)
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = layout.put_blob_bytes(config)
    image = new_manifest(
        Descriptor(media.OCI_CONFIG, config_digest, len(config)),
        [Descriptor(media.OCI_LAYER_GZIP, "sha256:" + "0" * 64, 10)],  # never stored
    )
    inner = new_index([(image, {"architecture": "amd64", "os": "linux"})])
    outer = new_index([(inner, None)])
    for manifest in (image, inner, outer):
        layout.put_manifest("library/nested", manifest)
    order = [outer.digest, inner.digest, image.digest]
    monkeypatch.setattr(
        DistributionLayout, "revisions", lambda self, repo: order if outer_first else order[::-1]
    )
    problems, _, _ = check(layout)
    reported = {p.digest: p.message for p in problems}
    assert reported[inner.digest] == f"index child {image.digest} is incomplete"
    assert reported[outer.digest] == f"index child {inner.digest} is incomplete"
