"""Deterministic layers from a build context: content, order, metadata, ignore files,
sources outside the context, archives, and streaming."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from _build_support import blob, build, config_of, manifest_of, member_names, members

from sealpy.core.build.context import IgnoreMatcher, Ownership, Tree, plan_sources
from sealpy.core.build.layers import write_layer
from sealpy.core.errors import BuildError
from sealpy.core.transport.ocilayout import OCILayout


def make_context(root: Path, kubefile: str = "FROM scratch\nCOPY app /app\n") -> Path:
    app = root / "app"
    (app / "bin").mkdir(parents=True)
    (app / "conf").mkdir()
    (app / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(app / "bin" / "run.sh", 0o750)
    (app / "conf" / "secret").write_text("s3cret")
    os.chmod(app / "conf" / "secret", 0o600)
    (app / "conf" / "a.yaml").write_text("a: 1\n")
    os.link(app / "conf" / "a.yaml", app / "conf" / "z-hardlink.yaml")
    os.symlink("conf/a.yaml", app / "link.yaml")
    (root / "Kubefile").write_text(kubefile)
    return root


def layer_of(store: Path, name: str = "localhost/test:latest", index: int = -1) -> str:
    return manifest_of(store, name)["layers"][index]["digest"]


def test_same_context_twice_gives_the_same_digest_whatever_the_file_times_and_owners(
    tmp_path: Path,
):
    context = make_context(tmp_path / "ctx")
    first = build(context, tmp_path / "store1").result
    for path in (context / "app").rglob("*"):
        os.utime(path, (123456, 123456), follow_symlinks=False)
    os.chown(context / "app" / "conf" / "secret", 1234, 4321)
    second = build(context, tmp_path / "store2").result
    assert first.digest == second.digest
    again = build(context, tmp_path / "store1").result
    assert again.digest == first.digest


def test_layer_entries_are_sorted_owned_by_root_with_modes_links_and_fixed_times(tmp_path: Path):
    context = make_context(tmp_path / "ctx")
    store = tmp_path / "store"
    build(context, store)
    infos = {m.name: m for m in members(store, layer_of(store))}
    # (tarfile drops the trailing "/" the directory members are written with)
    assert list(infos) == [
        "app",
        "app/bin",
        "app/bin/run.sh",
        "app/conf",
        "app/conf/a.yaml",
        "app/conf/secret",
        "app/conf/z-hardlink.yaml",
        "app/link.yaml",
    ]
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.mtime == 0 for m in infos.values())
    assert infos["app/bin/run.sh"].mode == 0o750
    assert infos["app/conf/secret"].mode == 0o600
    assert infos["app/link.yaml"].issym() and infos["app/link.yaml"].linkname == "conf/a.yaml"
    hard = infos["app/conf/z-hardlink.yaml"]
    assert hard.islnk() and hard.linkname == "app/conf/a.yaml"
    raw = blob(store, layer_of(store)).read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert raw[3] & 0x08 == 0  # no file name in the gzip header


def test_source_date_epoch_sets_every_timestamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    context = make_context(tmp_path / "ctx")
    default = build(context, tmp_path / "store0").result
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    store = tmp_path / "store"
    dated = build(context, store).result
    assert dated.digest != default.digest
    config = config_of(store, manifest_of(store, "localhost/test:latest"))
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in config["history"]} == {"2023-11-14T22:13:20Z"}
    assert {m.mtime for m in members(store, layer_of(store))} == {1700000000}
    assert build(context, tmp_path / "store2").result.digest == dated.digest


def test_dockerignore_is_honoured_with_exceptions(tmp_path: Path):
    context = make_context(tmp_path / "ctx", "FROM scratch\nCOPY . /ctx/\n")
    (context / "debug.log").write_text("x")
    (context / "keep.log").write_text("x")
    (context / "app" / "tmp").mkdir()
    (context / "app" / "tmp" / "junk").write_text("x")
    (context / ".dockerignore").write_text("# comment\n*.log\n!keep.log\n**/tmp\nKubefile\n")
    store = tmp_path / "store"
    build(context, store)
    names = member_names(store, layer_of(store))
    assert "ctx/keep.log" in names and "ctx/app/conf/a.yaml" in names
    assert not any(n.startswith(("ctx/debug.log", "ctx/app/tmp", "ctx/Kubefile")) for n in names)


def test_sealignore_leaves_out_images_not_files(tmp_path: Path):
    # .sealignore is the scan's list of images to leave out; COPY does not read it, even
    # when its lines look like paths of the context
    context = make_context(tmp_path / "ctx", "FROM scratch\nCOPY . /ctx/\n")
    (context / ".sealignore").write_text("app\napp/conf/*\n*.yaml\nKubefile\nbusybox:1.36\n")
    store = tmp_path / "store"
    build(context, store)
    names = member_names(store, layer_of(store))
    for name in ("ctx/app/conf/a.yaml", "ctx/app/link.yaml", "ctx/Kubefile", "ctx/.sealignore"):
        assert name in names


def test_containerignore_wins_over_dockerignore(tmp_path: Path):
    context = make_context(tmp_path / "ctx", "FROM scratch\nCOPY app /app\n")
    (context / ".dockerignore").write_text("app/conf\n")
    (context / ".containerignore").write_text("app/bin\n")
    store = tmp_path / "store"
    build(context, store)
    names = member_names(store, layer_of(store))
    assert "app/conf/a.yaml" in names and not any(n.startswith("app/bin") for n in names)


def test_copying_an_ignored_path_by_name_is_an_error(tmp_path: Path):
    context = make_context(tmp_path / "ctx", "FROM scratch\nCOPY app/conf/secret /s\n")
    (context / ".dockerignore").write_text("**/secret\n")
    with pytest.raises(BuildError, match=r"Kubefile:2: COPY: COPY app/conf/secret: excluded by"):
        build(context, tmp_path / "store")


def test_ignore_patterns_match_like_docker():
    matcher = IgnoreMatcher(["registry/**/*.tmp", "/docs", "!docs/README.md", "a?c"])
    assert matcher.ignored("registry/x/y/z.tmp") and matcher.ignored("registry/z.tmp")
    assert matcher.ignored("docs/guide.md") and not matcher.ignored("docs/README.md")
    assert matcher.ignored("abc/d") and not matcher.ignored("abbc")


def test_file_to_directory_and_file_to_file_and_globs(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx",
        "FROM scratch\nWORKDIR /srv\nCOPY app/conf/a.yaml app/bin/*.sh conf/\n"
        "COPY app/conf/secret /etc/renamed\n",
    )
    store = tmp_path / "store"
    build(context, store)
    assert member_names(store, layer_of(store, index=0)) == ["srv"]  # WORKDIR creates it
    assert member_names(store, layer_of(store, index=1)) == ["srv/conf/a.yaml", "srv/conf/run.sh"]
    assert member_names(store, layer_of(store, index=2)) == ["etc/renamed"]


def test_workdir_creates_only_the_directories_the_image_lacks(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx",
        "FROM scratch\nCOPY app /opt/app\nWORKDIR /opt/app/conf\nWORKDIR data/x\n"
        "WORKDIR /opt\nWORKDIR /\n",
    )
    store = tmp_path / "store"
    build(context, store)
    manifest = manifest_of(store, "localhost/test:latest")
    assert len(manifest["layers"]) == 2  # the COPY, then data/x under the existing conf
    infos = members(store, manifest["layers"][1]["digest"])
    assert [(m.name, m.isdir(), m.mode, m.uid) for m in infos] == [
        ("opt/app/conf/data", True, 0o755, 0),
        ("opt/app/conf/data/x", True, 0o755, 0),
    ]
    history = config_of(store, manifest)["history"]
    assert [bool(h.get("empty_layer")) for h in history] == [False, True, False, True, True]


def test_several_sources_need_a_directory_destination(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx", "FROM scratch\nCOPY app/conf/a.yaml app/bin/run.sh /dst\n"
    )
    with pytest.raises(BuildError, match="several sources needs a directory destination"):
        build(context, tmp_path / "store")


@pytest.mark.parametrize(
    ("setup", "source", "message"),
    [
        (lambda c: None, "../outside", r"\.\./outside: outside the build context"),
        (
            lambda c: os.symlink("/etc", c / "etc-link"),
            "etc-link/passwd",
            r"outside the build context \(symlink etc-link -> /etc\)",
        ),
        (lambda c: os.symlink("../..", c / "up"), "up", "outside the build context"),
        (lambda c: os.symlink("loop", c / "loop"), "loop", "symlink loop"),
        (lambda c: (os.symlink("b", c / "a"), os.symlink("a", c / "b")), "a/x", "symlink loop"),
        (
            lambda c: None,
            "missing.txt",
            "missing.txt: no such file or directory in the build context",
        ),
        (lambda c: None, "nothing-*.yaml", "no file in the build context matches"),
    ],
)
def test_bad_sources_fail_before_anything_is_written(tmp_path: Path, setup, source, message):
    (tmp_path / "outside").write_text("host secret")
    context = make_context(tmp_path / "ctx", f"FROM scratch\nCOPY app /app\nCOPY {source} /x\n")
    setup(context)
    store = tmp_path / "store"
    with pytest.raises(BuildError, match=message):
        build(context, store)
    assert not store.exists() or not any((store / "blobs" / "sha256").iterdir())


def test_symlinks_inside_a_copied_tree_are_kept_as_links_not_followed(tmp_path: Path):
    context = make_context(tmp_path / "ctx")
    os.symlink("/etc/passwd", context / "app" / "passwd")
    store = tmp_path / "store"
    build(context, store)
    infos = {m.name: m for m in members(store, layer_of(store))}
    assert infos["app/passwd"].issym() and infos["app/passwd"].linkname == "/etc/passwd"


def test_add_unpacks_a_local_tar_and_refuses_urls(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx", "FROM scratch\nADD bundle.tar.gz /opt/\nADD app/conf/a.yaml /a.yaml\n"
    )
    with tarfile.open(context / "bundle.tar.gz", "w:gz") as tar:
        data = b"payload"
        info = tarfile.TarInfo("bundle/data.bin")
        info.size, info.mode = len(data), 0o640
        tar.addfile(info, io.BytesIO(data))
    store = tmp_path / "store"
    build(context, store)
    infos = {m.name: m for m in members(store, layer_of(store, index=0))}
    assert list(infos) == ["opt/bundle", "opt/bundle/data.bin"]
    assert infos["opt/bundle/data.bin"].mode == 0o640
    assert member_names(store, layer_of(store, index=1)) == ["a.yaml"]
    (context / "Kubefile").write_text("FROM scratch\nADD https://example.com/x.tgz /x\n")
    with pytest.raises(
        BuildError,
        match=r"Kubefile:2: ADD: https://example\.com/x\.tgz: ADD of a URL is not supported",
    ):
        build(context, store)


def test_add_unpacks_archives_a_wildcard_matches_and_copies_a_file_of_zeros(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx", "FROM scratch\nADD bundle-* /opt/\nADD zeros.tar /z/\n"
    )
    for name, mode in (("bundle-1.tar.gz", "w:gz"), ("bundle-2.tar", "w")):
        with tarfile.open(context / name, mode) as tar:
            info = tarfile.TarInfo(f"{name.split('.')[0]}/data.bin")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    (context / "bundle-notes.txt").write_text("notes")
    # 1024 zero bytes: tarfile.is_tarfile says yes (an empty tar's end marker); Docker
    # finds no member and copies the file
    (context / "zeros.tar").write_bytes(bytes(1024))
    store = tmp_path / "store"
    build(context, store)
    assert member_names(store, layer_of(store, index=0)) == [
        "opt/bundle-1",
        "opt/bundle-1/data.bin",
        "opt/bundle-2",
        "opt/bundle-2/data.bin",
        "opt/bundle-notes.txt",
    ]
    zeros = {m.name: m for m in members(store, layer_of(store, index=1))}
    assert list(zeros) == ["z/zeros.tar"] and zeros["z/zeros.tar"].size == 1024


def test_add_with_a_wildcard_matching_several_files_needs_a_directory(tmp_path: Path):
    context = make_context(tmp_path / "ctx", "FROM scratch\nADD [ab].* /opt/x\n")
    with tarfile.open(context / "a.tar", "w") as tar:
        info = tarfile.TarInfo("inner")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (context / "b.txt").write_text("b")
    with pytest.raises(BuildError, match=r"matches several files and needs a directory"):
        build(context, tmp_path / "store")


def test_the_umask_does_not_change_the_digest(tmp_path: Path):
    # Directories an archive (or an image's layer) implies but does not list are created
    # while unpacking: their mode goes into the layer, so it must not come from the umask.
    context = make_context(
        tmp_path / "ctx",
        "FROM scratch\nADD bundle.tar /opt/\nFROM scratch\nCOPY --from=0 /opt /opt\n",
    )
    with tarfile.open(context / "bundle.tar", "w") as tar:
        info = tarfile.TarInfo("bundle/deep/data.bin")
        info.size, info.mode = 1, 0o644
        tar.addfile(info, io.BytesIO(b"x"))
    digests = []
    for umask in (0o022, 0o077):
        previous = os.umask(umask)
        try:
            store = tmp_path / f"store-{umask:o}"
            digests.append(build(context, store).result.digest)
        finally:
            os.umask(previous)
        modes = {m.name: m.mode for m in members(store, layer_of(store)) if m.isdir()}
        assert modes == {"opt": 0o755, "opt/bundle": 0o755, "opt/bundle/deep": 0o755}
    assert digests[0] == digests[1]


def test_an_archive_member_climbing_out_is_refused(tmp_path: Path):
    context = make_context(tmp_path / "ctx", "FROM scratch\nADD evil.tar /opt/\n")
    with tarfile.open(context / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BuildError, match="points outside the archive"):
        build(context, tmp_path / "store")
    assert not (tmp_path / "escaped").exists()


def test_chown_and_chmod_flags(tmp_path: Path):
    context = make_context(
        tmp_path / "ctx", "FROM scratch\nCOPY --chown=1000:2000 --chmod=0640 app/conf /conf\n"
    )
    store = tmp_path / "store"
    build(context, store)
    infos = members(store, layer_of(store))
    assert {(m.uid, m.gid, m.mode) for m in infos if m.isfile()} == {(1000, 2000, 0o640)}


def test_a_layer_is_streamed_not_held_in_memory(tmp_path: Path):
    big = tmp_path / "ctx" / "big.bin"
    big.parent.mkdir()
    chunk = os.urandom(1 << 16) * 16  # 1 MiB, compresses well: the test stays fast
    with open(big, "wb") as f:
        for _ in range(48):
            f.write(chunk)
    tree = Tree((tmp_path / "ctx").resolve())
    entries, _ = plan_sources(tree, ["big.bin"], "/big.bin", "/", Ownership())
    layout = OCILayout(tmp_path / "layout")
    tracemalloc.start()
    try:
        layer = write_layer(entries, layout.new_blob_writer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layer.tar_size > 48 << 20
    assert peak < 8 << 20, f"peak {peak} bytes while writing a 48 MiB layer"
    with (
        gzip.open(layout.blob_path(layer.descriptor.digest)) as f,
        tarfile.open(fileobj=f, mode="r|") as tar,
    ):
        assert [m.size for m in tar] == [48 << 20]


def test_compressed_files_are_stored_and_the_stream_is_one_valid_gzip(tmp_path: Path):
    context = tmp_path / "ctx"
    (context / "registry").mkdir(parents=True)
    blob_data = gzip.compress(os.urandom(256 << 10), mtime=0)
    (context / "registry" / "blob.gz").write_bytes(blob_data)
    (context / "registry" / "z-notes.txt").write_text("cluster image notes\n" * 5000)
    tree = Tree(context.resolve())
    entries, _ = plan_sources(tree, ["registry"], "/registry", "/", Ownership())
    layout = OCILayout(tmp_path / "layout")
    layer = write_layer(entries, layout.new_blob_writer)
    path = layout.blob_path(layer.descriptor.digest)
    subprocess.run(["gzip", "-t", str(path)], check=True)  # GNU gzip reads it whole
    raw = subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    # the gzip blob costs its own size (stored), the text compresses well
    assert len(blob_data) < layer.descriptor.size < len(blob_data) + (8 << 10)
    again = write_layer(entries, OCILayout(tmp_path / "again").new_blob_writer)
    assert again.descriptor == layer.descriptor
