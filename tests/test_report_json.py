"""`build --json` and `registry save --json`: the run's report as one JSON object on
stdout, the shape the README documents ("sealpy registry save --json")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealpy.core.cli import main

TOP = ["strategy", "images", "totals", "seconds", "errors"]
IMAGE = [
    "reference",
    "stored_as",
    "digest",
    "platforms",
    "blobs_fetched",
    "blobs_reused",
    "bytes_fetched",
    "seconds",
    "served_by",
    "attachments",
]
TOTALS = ["images", "blobs_fetched", "blobs_reused", "bytes_fetched", "requests", "attachments"]
SUMMED = [*TOTALS[:4], "attachments"]  # totals that add up the images' own


def save(context: Path, *refs: object, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "registry",
        "save",
        "--json",
        "--strategy",
        "proxy",
        "--platform",
        "linux/amd64",
        *extra,
        "--images",
        ",".join(str(r) for r in refs),
        str(context),
    ]


def check_shape(data: dict) -> None:
    """Every key, in order, and its type: a new key is a documented change."""
    assert list(data)[: len(TOP)] == TOP
    assert isinstance(data["strategy"], str) and isinstance(data["seconds"], float)
    assert list(data["totals"]) == TOTALS
    assert all(isinstance(data["totals"][k], int) for k in SUMMED)
    assert data["totals"]["requests"] is None or isinstance(data["totals"]["requests"], int)
    assert all(isinstance(e, str) for e in data["errors"])
    for image in data["images"]:
        assert list(image) == IMAGE
        assert all(isinstance(image[k], str) for k in IMAGE[:3])
        assert all(isinstance(p, str) for p in image["platforms"])
        assert all(isinstance(image[k], int) for k in IMAGE[4:7])
        assert isinstance(image["seconds"], float)
        assert image["served_by"] is None or isinstance(image["served_by"], str)
        assert isinstance(image["attachments"], int)
    for key in SUMMED:
        per_image = len(data["images"]) if key == "images" else None
        expected = per_image if per_image is not None else sum(i[key] for i in data["images"])
        assert data["totals"][key] == expected


def test_registry_save_json_is_one_object_with_every_image_and_the_totals(
    conformance_catalog, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    c = conformance_catalog
    single, multi = c.ref(c.plain, "library/single"), c.ref(c.plain, "library/multi")
    context = tmp_path / "ctx"
    context.mkdir()
    assert main(save(context, single, multi)) == 0
    out, err = capfd.readouterr()
    data = json.loads(out)  # exactly one JSON document: nothing else on stdout
    check_shape(data)
    assert list(data) == TOP
    assert data["strategy"] == "proxy" and data["errors"] == []
    by_ref = {i["reference"]: i for i in data["images"]}
    assert set(by_ref) == {str(single), str(multi)}
    first = by_ref[str(single)]
    assert first["stored_as"] == "library/single:1"
    assert first["digest"] == c.single.digest
    assert first["served_by"] == c.plain.host  # no mirror: the registry itself
    # A blob both images have is fetched once, for whichever image asked first.
    assert first["blobs_fetched"] + first["blobs_reused"] == len(c.single.blob_digests)
    assert first["blobs_fetched"] > 0
    assert first["bytes_fetched"] > 0
    assert by_ref[str(multi)]["platforms"] == ["linux/amd64"]
    assert data["totals"]["requests"] > 0
    # Human output stays on stderr, without the progress display.
    assert "images cached by proxy" in err and "info caching" not in err

    assert main(save(context, single)) == 0  # a re-run fetches nothing: all reused
    (again,) = json.loads(capfd.readouterr().out)["images"]
    assert (again["blobs_fetched"], again["blobs_reused"]) == (0, len(c.single.blob_digests))
    assert again["bytes_fetched"] == 0


def test_a_failed_save_prints_what_was_cached_and_the_error_and_exits_non_zero(
    conformance_catalog, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    c = conformance_catalog
    good, bad = c.ref(c.plain, "library/single"), c.ref(c.plain, "library/absent")
    context = tmp_path / "ctx"
    context.mkdir()
    assert main(save(context, good, bad)) != 0
    out, err = capfd.readouterr()
    data = json.loads(out)
    check_shape(data)
    assert [i["reference"] for i in data["images"]] == [str(good)]
    (error,) = data["errors"]
    assert str(bad) in error and "not found" in error
    assert err.strip().splitlines()[-1] == f"error: {error}"


def test_nothing_to_cache_is_an_empty_report(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    context = tmp_path / "ctx"
    context.mkdir()
    assert main(["registry", "save", "--json", "--strategy", "proxy", str(context)]) == 0
    data = json.loads(capfd.readouterr().out)
    check_shape(data)
    assert data["images"] == [] and data["totals"]["images"] == 0
    assert data["strategy"] == "proxy"


def test_build_json_adds_the_built_image_and_sends_build_output_to_stderr(
    conformance_catalog, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    c = conformance_catalog
    ref = c.ref(c.plain, "library/single")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    args = ["build", "--json", "--platform", "linux/amd64", "--images", str(ref)]
    root = ["--root", str(tmp_path / "store")]
    assert main([*args, *root, "-t", "demo/app:1", str(context)]) == 0
    out, err = capfd.readouterr()
    data = json.loads(out)
    check_shape(data)
    assert list(data) == [*TOP, "image"]
    assert [i["reference"] for i in data["images"]] == [str(ref)]
    image = data["image"]
    assert list(image) == ["digest", "names", "image_ids"]
    assert image["digest"].startswith("sha256:") and image["names"] == ["localhost/demo/app:1"]
    assert [i.startswith("sha256:") for i in image["image_ids"]] == [True]
    assert "STEP 1/2: FROM scratch" in err and "Successfully tagged" not in out + err
