"""``sealpy lock`` and the lock in use: written stable, kept or updated, fetched by its
digests when a tag moved upstream (proxy and sync), and refused when the context or the
inputs no longer match it, when ``--locked`` finds none, or when a digest is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sealpy.core.cli import main
from sealpy.core.image.media import digest_hex
from sealpy.core.transport.distribution import DistributionLayout

PLATFORM = "--platform=linux/amd64"


def cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def context_with(tmp_path: Path, *refs: object) -> Path:
    """A context whose manifests/app.yaml names ``refs``, one ``image:`` line each."""
    context = tmp_path / "ctx"
    (context / "manifests").mkdir(parents=True, exist_ok=True)
    lines = [f"    image: {ref}" for ref in refs]
    (context / "manifests" / "app.yaml").write_text("spec:\n" + "\n".join(lines) + "\n")
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    return context


def read_lock(context: Path) -> dict:
    return json.loads((context / "sealpy.lock").read_text())


def locked_digest(context: Path, ref: object) -> str:
    return next(i["digest"] for i in read_lock(context)["images"] if i["reference"] == str(ref))


def remove_manifest(registry_root: Path, repository: str, digest: str) -> None:
    """Make a digest unknown to a registry: remove the revision link of the repository."""
    link = (
        registry_root
        / "docker/registry/v2/repositories"
        / repository
        / "_manifests/revisions/sha256"
        / digest_hex(digest)
    )
    shutil.rmtree(link)


@pytest.fixture
def source(tmp_path, start_registry):
    return start_registry(tmp_path / "source-root")


def test_lock_records_digests_platforms_sources_and_inputs_and_a_rerun_is_identical(
    capsys, tmp_path, image_factory, source
):
    single = image_factory.image("lock/single", [1000])
    multi = image_factory.multi_platform("lock/multi", ("linux/amd64", "linux/arm64"))
    a = image_factory.push(single, source.host, "library/zeta", "1")
    b = image_factory.push(multi, source.host, "library/alpha", "2")
    context = context_with(tmp_path, a, b)

    code, _, err = cli(capsys, "lock", PLATFORM, "--images", a, context)
    assert code == 0, err
    text = (context / "sealpy.lock").read_text()
    lock = json.loads(text)
    assert lock["version"] == 1
    assert lock["inputs"] == {
        "all_platforms": False,
        "api_versions": [],
        "images": [str(a)],
        "kube_version": "v1.20.0",
        "platforms": ["linux/amd64"],
    }
    refs = [i["reference"] for i in lock["images"]]
    assert refs == sorted(refs) == sorted([str(a), str(b)])
    by_ref = {i["reference"]: i for i in lock["images"]}
    assert by_ref[str(a)]["digest"] == single.digest
    assert by_ref[str(a)]["platforms"] == []
    assert by_ref[str(a)]["sources"] == [
        {"file": "<command line>", "line": None},
        {"file": "manifests/app.yaml", "line": 2},
    ]
    assert by_ref[str(b)]["digest"] == multi.digest  # the index, not a platform's manifest
    amd64 = multi.for_platform("linux/amd64").digest
    assert by_ref[str(b)]["platforms"] == [{"platform": "linux/amd64", "digest": amd64}]
    assert by_ref[str(b)]["signatures"] == []
    assert text == json.dumps(lock, indent=2, sort_keys=True) + "\n"  # sorted keys, stable

    code, _, err = cli(capsys, "lock", PLATFORM, "--images", a, context)
    assert code == 0, err
    assert "unchanged" in err
    assert (context / "sealpy.lock").read_text() == text  # byte-identical
    code, _, err = cli(capsys, "lock", PLATFORM, "--update", "--images", a, context)
    assert code == 0, err
    assert (context / "sealpy.lock").read_text() == text  # nothing moved: identical too


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
@pytest.mark.parametrize("multi", [False, True], ids=["single", "index"])
def test_a_moved_tag_is_fetched_by_its_locked_digest_until_lock_update(
    capsys, tmp_path, image_factory, source, strategy, multi
):
    if multi:
        old = image_factory.multi_platform(f"lock/old-{strategy}", ("linux/amd64", "linux/arm64"))
        new = image_factory.multi_platform(f"lock/new-{strategy}", ("linux/amd64", "linux/arm64"))
    else:
        old = image_factory.image(f"lock/old-{strategy}", [1500])
        new = image_factory.image(f"lock/new-{strategy}", [1500])
    ref = image_factory.push(old, source.host, "library/app", "1")
    context = context_with(tmp_path, ref)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    image_factory.push(new, source.host, "library/app", "1")  # the tag moves upstream

    def stored() -> str | None:
        return DistributionLayout(context / "registry").resolve("library/app", "1")

    def expected(item) -> str:
        # proxy stores the index; sync (as skopeo without --all) the platform's manifest
        if multi and strategy == "sync":
            return item.for_platform("linux/amd64").digest
        return item.digest

    code, _, err = cli(capsys, "registry", "save", "--strategy", strategy, PLATFORM, context)
    assert code == 0, err
    assert stored() == expected(old)
    assert locked_digest(context, ref) == old.digest

    code, _, err = cli(capsys, "lock", "--update", PLATFORM, context)
    assert code == 0, err
    assert f"updated {ref}@{new.digest}" in err
    assert locked_digest(context, ref) == new.digest
    code, _, err = cli(capsys, "registry", "save", "--strategy", strategy, PLATFORM, context)
    assert code == 0, err
    assert stored() == expected(new)


def test_lock_without_update_keeps_digests_adds_new_images_and_drops_removed_ones(
    capsys, tmp_path, image_factory, source
):
    a1 = image_factory.image("lock/keep-a1", [300])
    a2 = image_factory.image("lock/keep-a2", [300])
    b = image_factory.image("lock/keep-b", [300])
    ref_a = image_factory.push(a1, source.host, "library/a", "1")
    ref_b = image_factory.push(b, source.host, "library/b", "1")
    context = context_with(tmp_path, ref_a)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    image_factory.push(a2, source.host, "library/a", "1")

    context_with(tmp_path, ref_a, ref_b)
    code, _, err = cli(capsys, "lock", PLATFORM, context)
    assert code == 0, err
    assert locked_digest(context, ref_a) == a1.digest  # kept, although the tag moved
    assert locked_digest(context, ref_b) == b.digest
    assert f"added   {ref_b}@{b.digest}" in err

    context_with(tmp_path, ref_b)
    code, _, err = cli(capsys, "lock", PLATFORM, context)
    assert code == 0, err
    assert [i["reference"] for i in read_lock(context)["images"]] == [str(ref_b)]
    assert f"removed {ref_a}" in err


@pytest.mark.parametrize("command", ["save", "build"])
def test_a_context_that_no_longer_matches_the_lock_is_an_error_listing_the_changes(
    capsys, tmp_path, image_factory, source, command
):
    a = image_factory.image("lock/match-a", [300])
    b = image_factory.image("lock/match-b", [300])
    ref_a = image_factory.push(a, source.host, "library/a", "1")
    ref_b = image_factory.push(b, source.host, "library/b", "1")
    context = context_with(tmp_path, ref_a)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    context_with(tmp_path, ref_b)  # a replaced by b
    store = tmp_path / "store"

    def run(*flags: object) -> tuple[int, str, str]:
        if command == "save":
            return cli(capsys, "registry", "save", PLATFORM, *flags, context)
        return cli(capsys, "build", PLATFORM, "--root", store, "-t", "x", *flags, context)

    code, _, err = run()
    assert code != 0
    lines = err.splitlines()
    assert lines[0].startswith("error: the context no longer matches")
    assert "1 added, 1 removed" in lines[0] and "sealpy lock" in lines[0]
    assert f"  added   {ref_b} (manifests/app.yaml:2)" in lines
    assert f"  removed {ref_a}" in lines
    assert "Traceback" not in err
    assert not (context / "registry").exists()  # nothing half-written
    assert not store.exists() or not any(store.rglob("index.json"))

    context_with(tmp_path, ref_a)  # back to what is locked, but charts for another version
    code, _, err = run("--kube-version", "v1.29.0")
    assert code != 0
    assert "  changed --kube-version: v1.20.0 (locked) -> v1.29.0" in err.splitlines()
    code, _, err = run("--platform", "linux/arm64")
    assert code != 0
    assert "--platform: linux/amd64 (locked) -> linux/amd64,linux/arm64" in err
    code, _, err = run()
    assert code == 0, err


@pytest.mark.parametrize("command", ["save", "build"])
def test_locked_without_a_lock_is_an_error(capsys, tmp_path, image_factory, source, command):
    ref = image_factory.push(image_factory.image("lock/none", [200]), source.host, "library/a", "1")
    context = context_with(tmp_path, ref)
    if command == "save":
        code, _, err = cli(capsys, "registry", "save", "--locked", context)
    else:
        code, _, err = cli(capsys, "build", "--locked", "--root", tmp_path / "s", context)
    assert code != 0
    assert err.startswith("error: --locked: ") and "sealpy.lock does not exist" in err
    assert len(err.splitlines()) == 1
    assert not (context / "registry").exists()
    code, _, err = cli(capsys, "registry", "save", "--locked=false", PLATFORM, context)
    assert code == 0, err  # without --locked a missing lock is fine


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_a_locked_digest_gone_upstream_is_an_error_naming_image_and_digest(
    capsys, tmp_path, image_factory, source, strategy
):
    old = image_factory.image(f"lock/gone-old-{strategy}", [400])
    new = image_factory.image(f"lock/gone-new-{strategy}", [400])
    ref = image_factory.push(old, source.host, "library/gone", "1")
    context = context_with(tmp_path, ref)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    image_factory.push(new, source.host, "library/gone", "1")
    remove_manifest(source.root, "library/gone", old.digest)

    code, _, err = cli(
        capsys, "registry", "save", "--strategy", strategy, "--retry-times=0", PLATFORM, context
    )
    assert code != 0
    assert str(ref) in err and old.digest in err
    assert "Traceback" not in err
    assert DistributionLayout(context / "registry").resolve("library/gone", "1") is None


def test_a_malformed_lock_is_a_one_line_error(capsys, tmp_path, image_factory, source):
    ref = image_factory.push(image_factory.image("lock/bad", [200]), source.host, "library/a", "1")
    context = context_with(tmp_path, ref)
    (context / "sealpy.lock").write_text('{"version": 1, "inputs": {}, "images": [{}]}')
    code, _, err = cli(capsys, "registry", "save", PLATFORM, context)
    assert code != 0
    assert err.startswith("error: ") and "sealpy.lock" in err and len(err.splitlines()) == 1
    (context / "sealpy.lock").write_text('{"version": 7}')
    code, _, err = cli(capsys, "registry", "save", PLATFORM, context)
    assert code != 0 and "version 7 is not supported" in err


def test_lock_with_other_platforms_keeps_the_index_digest_and_chooses_its_children_again(
    capsys, tmp_path, image_factory, source
):
    old = image_factory.multi_platform("lock/plat-old", ("linux/amd64", "linux/arm64"))
    new = image_factory.multi_platform("lock/plat-new", ("linux/amd64", "linux/arm64"))
    ref = image_factory.push(old, source.host, "library/p", "1")
    context = context_with(tmp_path, ref)
    assert cli(capsys, "lock", PLATFORM, context)[0] == 0
    image_factory.push(new, source.host, "library/p", "1")

    code, _, err = cli(capsys, "lock", "--platform=linux/arm64", context)
    assert code == 0, err
    (entry,) = read_lock(context)["images"]
    assert entry["digest"] == old.digest  # kept: no --update
    arm64 = old.for_platform("linux/arm64").digest
    assert entry["platforms"] == [{"platform": "linux/arm64/v8", "digest": arm64}]
    assert read_lock(context)["inputs"]["platforms"] == ["linux/arm64/v8"]


def test_lock_records_the_signature_manifests_of_each_locked_manifest(
    capsys, tmp_path, image_factory, source
):
    from sealpy.core.testing.signing import TestSigner

    multi = image_factory.multi_platform("lock/signed", ("linux/amd64", "linux/arm64"))
    ref = image_factory.push(multi, source.host, "library/signed", "1")
    plain = image_factory.push(image_factory.image("lock/plain", [900]), source.host, "p/x", "1")
    signer = TestSigner()
    index_sig = signer.push_signature(source.host, "library/signed", multi.digest, str(ref))
    amd64 = multi.for_platform("linux/amd64")
    child_sig = signer.push_signature(source.host, "library/signed", amd64.digest, str(ref))
    context = context_with(tmp_path, ref, plain)
    code, _, err = cli(capsys, "lock", "--platform", "linux/amd64", context)
    assert code == 0, err
    images = {i["reference"]: i for i in read_lock(context)["images"]}
    assert images[str(ref)]["signatures"] == sorted(
        [index_sig.manifest.digest, child_sig.manifest.digest]
    )
    assert images[str(plain)]["signatures"] == []
