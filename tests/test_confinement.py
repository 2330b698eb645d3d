"""Hostile trees: nothing sealpy is given may make it read, write or delete outside it.

A registry directory with symlinks planted in it (verify, proxy, sync), tar.txt lines
naming archives outside the context, and layers whose whiteouts name ``..`` or ``.``."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.build.layers import open_layer, unpack
from sealpy.core.cache.verify import verify_registry
from sealpy.core.cli import main
from sealpy.core.errors import BuildError, ContextError, SealpyError
from sealpy.core.image.media import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    sha256_digest,
)
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.store.layout import Store
from sealpy.core.testing.conformance import AMD64
from sealpy.core.transport import confined
from sealpy.core.transport.confined import SymlinkRefusedError
from sealpy.core.transport.distribution import DistributionLayout

V2 = Path("docker/registry/v2")


def write_image(root: Path, repository: str = "library/app", tag: str = "1") -> Manifest:
    """A small complete image written into a distribution tree by sealpy's own writer."""
    layout = DistributionLayout(root)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer = gzip.compress(b"layer of " + repository.encode(), mtime=0)
    config_digest = layout.put_blob_bytes(config)
    layer_digest = layout.put_blob_bytes(layer)
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
    }
    manifest = Manifest.parse(json.dumps(document).encode(), DOCKER_MANIFEST)
    layout.put_manifest(repository, manifest)
    layout.set_tag(repository, tag, manifest.digest)
    return manifest


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path below ``directory`` with its content (None for a directory)."""
    return {
        str(p.relative_to(directory)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(directory.rglob("*"))
    }


def move_out(path: Path, outside: Path) -> None:
    """Move ``path`` to ``outside`` and leave a symlink to it in its place."""
    os.rename(path, outside)
    path.symlink_to(outside)


# --- 1. registry verify [--fix] ------------------------------------------------------------


def test_verify_fix_never_deletes_behind_a_symlinked_manifests_dir(tmp_path: Path, capsys):
    root = tmp_path / "registry"
    write_image(root)
    manifests = root / V2 / "repositories/library/app/_manifests"
    victim = tmp_path / "elsewhere"
    move_out(manifests, victim)
    # What lies behind the link looks broken to a reader that follows it.
    (victim / "tags" / "victim" / "current").mkdir(parents=True)
    (victim / "tags" / "victim" / "current" / "link").write_text("not a digest")
    before = snapshot(victim)

    code = main(["registry", "verify", "--fix", str(root)])
    out = capsys.readouterr().out
    assert f"{manifests.relative_to(root)} is a symlink to {victim}" in out
    assert snapshot(victim) == before  # nothing behind the link was touched
    assert not manifests.is_symlink() and not manifests.exists()  # the link itself went
    assert code == 0  # the image lost its manifests: the rest is consistent again
    assert verify_registry(root).problems == ()


def test_verify_fix_never_deletes_behind_a_symlinked_blob_prefix(tmp_path: Path):
    root = tmp_path / "registry"
    manifest = write_image(root)
    layer = manifest.layers[0].digest
    prefix = DistributionLayout(root).blob_path(layer).parent.parent
    victim = tmp_path / "elsewhere"
    move_out(prefix, victim)
    # Content behind the link that does not match its digest: a follower would "fix" it.
    (victim / layer.split(":")[1] / "data").write_bytes(b"precious, not the layer")
    before = snapshot(victim)

    result = verify_registry(root, fix=True)
    messages = [str(p) for p in result.problems]
    assert any(f"{prefix.relative_to(root)} is a symlink to {victim}" in m for m in messages)
    assert snapshot(victim) == before
    assert not os.path.lexists(prefix)
    # The layer is gone from the tree, so the image is incomplete and was removed too.
    assert any("image is incomplete" in m for m in messages)
    assert verify_registry(root).problems == ()


def test_verify_reports_symlinked_data_and_link_files(tmp_path: Path):
    root = tmp_path / "registry"
    manifest = write_image(root)
    layout = DistributionLayout(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A blob's data and a layer link as symlinks to files with the right content:
    # a reader following them sees nothing wrong; a stock registry never writes these.
    data = layout.blob_path(manifest.config.digest)
    move_out(data, outside / "config")
    link = layout.layer_link("library/app", manifest.layers[0].digest)
    move_out(link, outside / "link")
    before = snapshot(outside)

    problems = [str(p) for p in verify_registry(root).problems]
    assert any(
        f"{data.relative_to(root)} is a symlink to {outside / 'config'}" in m for m in problems
    )
    assert any(
        f"{link.relative_to(root)} is a symlink to {outside / 'link'}" in m for m in problems
    )

    result = verify_registry(root, fix=True)
    assert snapshot(outside) == before
    assert not os.path.lexists(data) and not os.path.lexists(link)
    assert result.remaining == ()


def test_verify_reports_a_symlink_pointing_inside_too(tmp_path: Path):
    root = tmp_path / "registry"
    write_image(root)
    repositories = root / V2 / "repositories"
    (repositories / "library" / "alias").symlink_to("app")
    problems = [str(p) for p in verify_registry(root).problems]
    assert problems == [
        "docker/registry/v2/repositories/library/alias is a symlink to app "
        "(a registry directory holds no symlinks)"
    ]


def test_verify_with_a_symlinked_docker_dir_removes_only_the_link(tmp_path: Path):
    root = tmp_path / "registry"
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere)
    root.mkdir()
    (root / "docker").symlink_to(elsewhere / "docker")
    before = snapshot(elsewhere)
    result = verify_registry(root, fix=True)
    assert [str(p) for p in result.problems] == [
        f"docker is a symlink to {elsewhere / 'docker'} (a registry directory holds no symlinks)"
    ]
    assert snapshot(elsewhere) == before
    assert not os.path.lexists(root / "docker")


def test_a_rerun_never_removes_leftovers_behind_a_symlink(tmp_path: Path):
    root = tmp_path / "registry"
    write_image(root)
    repositories = root / V2 / "repositories"
    victim = tmp_path / "elsewhere"
    move_out(repositories, victim)
    # Named like a temporary link file that a killed writer (no such pid) left behind.
    leftover = victim / ".link.999999999-1.tmp"
    leftover.write_text("someone else's file")
    DistributionLayout(root).remove_abandoned_writes()
    assert leftover.read_text() == "someone else's file"


# --- 2. the strategies never write through a symlink ---------------------------------------


def _poisoned(tmp_path: Path, where: str) -> tuple[Path, Path]:
    """A registry directory whose ``where`` (under docker/registry/v2) is a symlink to an
    empty directory outside it."""
    root = tmp_path / "registry"
    outside = tmp_path / "outside"
    outside.mkdir()
    link = root / V2 / where
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    return root, outside


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
@pytest.mark.parametrize("where", ["blobs", "repositories", "repositories/library"])
def test_strategies_refuse_to_write_through_a_symlink(
    image_factory, plain_registry, tmp_path: Path, strategy: str, where: str
):
    image = image_factory.image("confine/app", [2000, 3000])
    image_factory.push(image, plain_registry.host, "library/confined", "1")
    root, outside = _poisoned(tmp_path, where)
    with pytest.raises(SealpyError) as failure:
        pipeline.cache(
            ImageSet.of([f"{plain_registry.host}/library/confined:1"]),
            root,
            strategy=strategy,
            options=CacheOptions(platforms=(AMD64,)),
        )
    assert f"docker/registry/v2/{where}" in str(failure.value)
    assert "symlink" in str(failure.value)
    assert list(outside.iterdir()) == []


def test_proxy_refuses_a_symlinked_blob_prefix_named_by_digest(
    image_factory, plain_registry, tmp_path: Path
):
    image = image_factory.image("confine/prefix", [2500])
    image_factory.push(image, plain_registry.host, "library/prefixed", "1")
    layer = image.layers[0].digest.split(":")[1]
    root, outside = _poisoned(tmp_path, f"blobs/sha256/{layer[:2]}")
    with pytest.raises(SealpyError) as failure:
        pipeline.cache(
            ImageSet.of([f"{plain_registry.host}/library/prefixed:1"]),
            root,
            strategy="proxy",
            options=CacheOptions(platforms=(AMD64,)),
        )
    assert f"blobs/sha256/{layer[:2]} -> {outside}" in str(failure.value)
    assert list(outside.iterdir()) == []


# --- 3. tar.txt archives resolve inside the context ----------------------------------------


def _tar_txt_context(tmp_path: Path, line: str) -> Path:
    context = tmp_path / "ctx"
    (context / "images" / "skopeo").mkdir(parents=True)
    (context / "Kubefile").write_text("FROM scratch\nCOPY . .\n")
    (context / "images" / "skopeo" / "tar.txt").write_text(line + "\n")
    return context


@pytest.mark.parametrize(
    "path",
    [
        "../../../secret.tar",  # climbs out of the context
        "/../../../secret.tar",  # "absolute": joined onto images/skopeo/, still climbs out
        "sub/../../../../secret.tar",
    ],
)
def test_a_tar_txt_path_leaving_the_context_is_an_error(tmp_path: Path, path: str):
    (tmp_path / "secret.tar").write_bytes(b"not yours")
    context = _tar_txt_context(tmp_path, f"docker-archive:{path}@my/app:1")
    with pytest.raises(ContextError) as failure:
        pipeline.scan(context)
    message = str(failure.value)
    assert message.startswith("images/skopeo/tar.txt:1: ")
    assert "outside the build context" in message


def test_a_tar_txt_archive_symlinked_outside_is_an_error(tmp_path: Path):
    (tmp_path / "secret.tar").write_bytes(b"not yours")
    context = _tar_txt_context(tmp_path, "docker-archive:app.tar@my/app:1")
    (context / "images" / "skopeo" / "app.tar").symlink_to(tmp_path / "secret.tar")
    with pytest.raises(ContextError) as failure:
        pipeline.scan(context)
    assert "outside the build context" in str(failure.value)
    assert f"app.tar -> {tmp_path / 'secret.tar'}" in str(failure.value)


def test_a_tar_txt_behind_a_symlinked_directory_is_not_read(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.tar").write_bytes(b"not yours")
    (outside / "tar.txt").write_text("docker-archive:app.tar@my/app:1\n")
    context = tmp_path / "ctx"
    (context / "images").mkdir(parents=True)
    (context / "Kubefile").write_text("FROM scratch\nCOPY . .\n")
    (context / "images" / "skopeo").symlink_to(outside)
    with pytest.raises(ContextError) as failure:
        pipeline.scan(context)
    assert "images/skopeo/tar.txt" in str(failure.value)
    assert "outside the build context" in str(failure.value)


def test_a_tar_txt_path_and_symlink_staying_inside_are_fine(tmp_path: Path):
    context = _tar_txt_context(
        tmp_path, "docker-archive:../../archives/app.tar@my/app:1\noci-archive:link.tar@my/b:2"
    )
    (context / "archives").mkdir()
    (context / "archives" / "app.tar").write_bytes(b"x")
    (context / "images" / "skopeo" / "link.tar").symlink_to("../../archives/app.tar")
    archives = pipeline.scan(context).images.archives
    assert [a.path for a in archives] == [
        context.resolve() / "archives/app.tar",
        context.resolve() / "archives/app.tar",
    ]


# --- 4. whiteouts stay inside the rootfs being assembled -----------------------------------


def _tar(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize(
    "whiteout", [".wh...", "sub/.wh...", "sub/.wh..", ".wh..", ".wh.", "sub/.wh."]
)
def test_a_whiteout_naming_dot_dot_or_nothing_is_refused(tmp_path: Path, whiteout: str):
    scratch = tmp_path / "scratch"
    root = scratch / "rootfs"
    root.mkdir(parents=True)
    (scratch / "neighbour").write_text("another build's files")
    layer = _tar({"sub/kept": b"kept", "top": b"top", whiteout: b""})
    with (
        pytest.raises(BuildError) as failure,
        open_layer(io.BytesIO(layer)) as tar,
    ):
        unpack(tar, root, whiteouts=True, what="layer sha256:abc")
    assert f"layer sha256:abc: invalid whiteout {whiteout!r}" in str(failure.value)
    assert (scratch / "neighbour").read_text() == "another build's files"
    assert (root / "sub" / "kept").read_bytes() == b"kept"


def test_an_archive_member_named_like_a_whiteout_is_a_plain_file_without_whiteouts(
    tmp_path: Path,
):
    root = tmp_path / "root"
    root.mkdir()
    with open_layer(io.BytesIO(_tar({"sub/.wh..": b"x", ".wh.": b"y"}))) as tar:
        unpack(tar, root, whiteouts=False, what="ADD a.tar")
    assert (root / "sub" / ".wh..").read_bytes() == b"x"
    assert (root / ".wh.").read_bytes() == b"y"


def test_merge_refuses_an_invalid_whiteout_naming_the_layer(tmp_path: Path, capsys):
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    layers = []
    for members in ({"etc/app.conf": b"a"}, {"bin/tool": b"t"}, {".wh...": b"", "x": b"x"}):
        data = _tar(members)
        compressed = gzip.compress(data, mtime=0)
        digest = store.layout.put_blob_bytes(compressed)
        layers.append((Descriptor(OCI_LAYER_GZIP, digest, len(compressed)), sha256_digest(data)))
    for name, chosen in (("base", layers[:1]), ("evil", layers[1:])):
        config = store.put_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [d for _, d in chosen]},
            },
            OCI_CONFIG,
        )
        manifest = store.put_manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.to_json(),
                "layers": [d.to_json() for d, _ in chosen],
            }
        )
        store.name(f"localhost/{name}:v1", manifest)
    scratch = store.temp_dir()
    (scratch / "other-build").mkdir()
    code = main(["merge", "-t", "m", "base:v1", "evil:v1", "--root", str(store_dir)])
    err = capsys.readouterr().err
    assert code != 0
    assert f"evil:v1: layer {layers[2][0].digest}: invalid whiteout '.wh...'" in err
    assert "Traceback" not in err
    assert (scratch / "other-build").is_dir()  # <store>/.tmp survived


def test_copy_from_refuses_an_invalid_whiteout_naming_the_layer(tmp_path: Path):
    from sealpy.core.build.stagewrite import unpack_image

    store = Store(tmp_path / "store")
    compressed = gzip.compress(_tar({"x": b"x", "sub/.wh..": b""}), mtime=0)
    layer = Descriptor(OCI_LAYER_GZIP, store.layout.put_blob_bytes(compressed), len(compressed))
    scratch = store.temp_dir()
    root = scratch / "rootfs"
    root.mkdir()
    (scratch / "other-build").mkdir()
    with pytest.raises(BuildError) as failure:
        unpack_image(store, [layer], root, "evil:v1")
    assert f"COPY --from=evil:v1: layer {layer.digest}: invalid whiteout 'sub/.wh..'" in str(
        failure.value
    )
    assert (scratch / "other-build").is_dir()


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch) -> str:
    """Both ways of reaching a path: one openat2 call, or the walk where it is missing."""
    if request.param == "walk":
        monkeypatch.setattr(confined._openat2, "available", False)
    return request.param


def test_layout_writes_refuse_a_symlink_swapped_in_during_the_run(tmp_path: Path, resolver):
    root = tmp_path / "registry"
    manifest = write_image(root)  # the layout's directory cache is warm now
    layout = DistributionLayout(root)
    assert layout.get_manifest("library/app", "1") == manifest
    outside = tmp_path / "outside"
    outside.mkdir()
    layers = root / V2 / "repositories/library/app/_layers/sha256"
    for child in layers.iterdir():
        (child / "link").unlink()
        child.rmdir()
    layers.rmdir()
    layers.symlink_to(outside)
    with pytest.raises(SymlinkRefusedError) as failure:
        layout.link_blob("library/app", manifest.layers[0].digest)
    assert "repositories/library/app/_layers/sha256 -> " in str(failure.value)
    with pytest.raises(SymlinkRefusedError):
        layout.put_manifest("library/app", manifest)
    assert list(outside.iterdir()) == []
    # Reads do not follow it either: the layer link is simply not there.
    assert layout.layer_links("library/app") == []
    assert layout.stored_manifest("library/app", manifest.digest) == manifest
