"""The built cluster image must not depend on how the blobs of ``registry/`` landed on disk
(issue 18): downloaded by the proxy strategy (mode from the umask, one link), hard-linked
read-only from a machine-wide blob cache (mode 0444, several links, the cache file's
times), copied read-only from a cache on another file system, or a warm re-run — the
native builder gives the same manifest and layer digests in every case.

The cache itself is simulated here (moving each ``data`` file into a separate directory
and linking or copying it back), so the test checks the builder alone."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path

from _build_support import blob, build, cached_context, manifest_of, members

from sealpy.core import pipeline
from sealpy.core.build.context import Entry, Ownership, Tree, plan_sources
from sealpy.core.model import ImageSet

_BLOB_DATA = re.compile(r"docker/registry/v2/blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})/data$")
NAME = "localhost/test:latest"


def is_blob(name: str) -> bool:
    match = _BLOB_DATA.search(name)
    return match is not None and match.group(2).startswith(match.group(1))


def blob_files(registry: Path) -> list[Path]:
    found = [p for p in sorted(registry.rglob("data")) if is_blob(p.as_posix())]
    assert found, f"no blob data files under {registry}"
    return found


def to_cache(context: Path, cache: Path, *, link: bool) -> None:
    """Put every blob of ``context/registry`` into ``cache`` (read-only, as the blob cache
    keeps them) and back into the context as a hard link (``link``) or as a read-only copy
    with other times (the cross-file-system case)."""
    cache.mkdir(parents=True, exist_ok=True)
    for number, data in enumerate(blob_files(context / "registry")):
        hex_digest = data.parent.name
        cached = cache / hex_digest
        if not cached.exists():
            shutil.copyfile(data, cached)
            os.chmod(cached, 0o444)
            os.utime(cached, (1_000_000 + number, 1_000_000 + number))
        data.unlink()
        if link:
            os.link(cached, data)
        else:
            shutil.copyfile(cached, data)
            os.chmod(data, 0o444)
            os.utime(data, (2_000_000 + number, 2_000_000 + number))


def digests(store: Path, built_digest: str) -> tuple[str, list[str]]:
    manifest = manifest_of(store, NAME)
    return built_digest, [layer["digest"] for layer in manifest["layers"]]


def test_the_image_digest_is_the_same_with_the_cache_off_linked_copied_and_warm(
    tmp_path: Path, image_factory, plain_registry
):
    base, ref, _ = cached_context(tmp_path / "off", image_factory, plain_registry)
    for data in blob_files(base / "registry"):
        st = data.stat()
        assert st.st_nlink == 1 and stat.S_IMODE(st.st_mode) & 0o200  # written, not linked

    linked = tmp_path / "linked" / "ctx"
    copied = tmp_path / "copied" / "ctx"
    for context in (linked, copied):
        shutil.copytree(base, context)
    # One cache for both, on the same file system as the contexts: hard links share inodes.
    cache = tmp_path / "cache"
    to_cache(linked, cache, link=True)
    to_cache(copied, cache, link=False)
    for data in blob_files(linked / "registry"):
        st = data.stat()
        assert st.st_nlink >= 2 and stat.S_IMODE(st.st_mode) == 0o444
    for data in blob_files(copied / "registry"):
        st = data.stat()
        assert st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o444

    results = {}
    for case, context in (("off", base), ("linked", linked), ("copied", copied)):
        store = tmp_path / f"store-{case}"
        results[case] = digests(store, build(context, store).result.digest)

    # A warm re-run: caching again finds every blob (linked from the cache) in place, and
    # the second build into the same store gives the same image.
    pipeline.cache(ImageSet.of([ref]), linked / "registry", strategy="proxy")
    results["warm"] = digests(
        tmp_path / "store-linked", build(linked, tmp_path / "store-linked").result.digest
    )

    assert results["linked"] == results["off"]
    assert results["copied"] == results["off"]
    assert results["warm"] == results["off"]


def test_blob_files_enter_the_layer_as_0644_regular_files_and_nothing_else_changes(
    tmp_path: Path, image_factory, plain_registry
):
    context, _, _ = cached_context(tmp_path, image_factory, plain_registry)
    # A second registry tree holding the same blobs, in the same layer (COPY . ./): with a
    # cache both trees' blob files are links to one cached file; still no tar hard links.
    shutil.copytree(context / "registry", context / "second" / "registry")
    to_cache(context, tmp_path / "cache", link=True)
    to_cache(context / "second", tmp_path / "cache", link=True)
    # Files that are not blob data files keep the mode they have on disk (as buildah).
    registry = context / "registry" / "docker" / "registry" / "v2"
    a_link = next(registry.rglob("link"))
    os.chmod(a_link, 0o600)
    decoy = registry / "blobs" / "sha256" / "ab" / ("0" * 64)
    decoy.mkdir(parents=True)
    (decoy / "data").write_bytes(b"not a blob: its prefix does not match")
    os.chmod(decoy / "data", 0o444)
    (context / "Kubefile").write_text("FROM scratch\nCOPY . ./\n")

    store = tmp_path / "store"
    build(context, store)
    manifest = manifest_of(store, NAME)
    [layer] = manifest["layers"]
    entries = {m.name: m for m in members(store, layer["digest"])}
    blob_entries = [m for name, m in entries.items() if is_blob(name)]
    assert len(blob_entries) == 2 * len(blob_files(context / "registry"))
    for member in blob_entries:
        assert member.type == tarfile.REGTYPE, member.name
        assert member.mode == 0o644, (member.name, oct(member.mode))
    assert not any(m.islnk() for m in entries.values())
    assert entries[a_link.relative_to(context).as_posix()].mode == 0o600
    assert entries[(decoy / "data").relative_to(context).as_posix()].mode == 0o444
    # The bytes are the blobs themselves.
    with tarfile.open(blob(store, layer["digest"]), "r:gz") as tar:
        for member in tar:
            if is_blob(member.name):
                f = tar.extractfile(member)
                assert f is not None
                expected = member.name.split("/")[-2]
                assert hashlib.sha256(f.read()).hexdigest() == expected


def test_the_rule_holds_for_a_blob_file_named_alone_and_yields_to_chmod(tmp_path: Path):
    hex_digest = hashlib.sha256(b"blob").hexdigest()
    relpath = f"registry/docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"
    data = tmp_path / relpath
    data.parent.mkdir(parents=True)
    data.write_bytes(b"blob")
    os.chmod(data, 0o444)
    os.link(data, tmp_path / "elsewhere")

    def planned(tree: Tree, ownership: Ownership) -> Entry:
        [entry] = plan_sources(tree, [relpath], "/x", "/", ownership)[0]
        return entry

    context = Tree(tmp_path, fixed_blobs=True)
    entry = planned(context, Ownership())
    assert (entry.kind, entry.mode, entry.inode) == ("file", 0o644, None)
    assert planned(context, Ownership(mode=0o600)).mode == 0o600
    # Unpacked images and archives (COPY --from, ADD) keep the modes their tars give.
    assert planned(Tree(tmp_path, jail=True), Ownership()).mode == 0o444
