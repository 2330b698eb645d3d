"""The image package: walking a manifest tree (order, each manifest once, what is refused),
new manifests and indexes byte for byte, canonical JSON and the config readers. In memory,
no registry."""

from __future__ import annotations

import hashlib

import pytest

from sealpy.core.errors import ManifestError
from sealpy.core.image import config as image_config
from sealpy.core.image import media
from sealpy.core.image.compose import canonical_json, new_index, new_manifest, platform_index
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.image.walk import MAX_DEPTH, is_complete, walk

AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image(seed: str) -> Manifest:
    config = Descriptor(media.OCI_CONFIG, digest_of(f"config {seed}"), 10)
    return new_manifest(config, [Descriptor(media.OCI_LAYER_GZIP, digest_of(f"layer {seed}"), 20)])


class Source:
    """Manifests by digest, counting what the walk fetches."""

    def __init__(self, *manifests: Manifest) -> None:
        self.manifests = {m.digest: m for m in manifests}
        self.fetched: list[str] = []

    def add(self, digest: str, manifest: Manifest) -> None:
        self.manifests[digest] = manifest

    def __call__(self, descriptor: Descriptor) -> Manifest | None:
        self.fetched.append(descriptor.digest)
        return self.manifests.get(descriptor.digest)


def names(nodes, known: dict[str, str]) -> list[str]:
    return [known[n.manifest.digest] for n in nodes]


# --- walk -------------------------------------------------------------------------------------


def test_walk_yields_children_before_parents_in_index_order_each_once():
    a, b, c, d = image("a"), image("b"), image("c"), image("d")
    nested = new_index([(b, AMD64), (c, ARM64)])
    # `a` is listed twice, and `b` again after the nested index that holds it.
    top = new_index([(a, AMD64), (nested, None), (a, ARM64), (b, AMD64), (d, None)])
    source = Source(a, b, c, d, nested)
    known = {a.digest: "a", b.digest: "b", c.digest: "c", d.digest: "d"}
    known |= {nested.digest: "nested", top.digest: "top"}

    nodes = list(walk(top, source))

    assert names(nodes, known) == ["a", "b", "c", "nested", "d", "top"]
    assert sorted(source.fetched) == sorted({a.digest, b.digest, c.digest, d.digest, nested.digest})
    assert [n.depth for n in nodes] == [1, 2, 2, 1, 1, 0]
    # Each node carries the entry that pointed at it, platform included.
    assert nodes[1].descriptor.platform == AMD64
    assert nodes[2].descriptor.platform == ARM64
    assert nodes[-1].descriptor == top.descriptor()


def test_walk_of_an_image_manifest_is_the_manifest_alone():
    a = image("a")
    source = Source()
    assert [n.manifest for n in walk(a, source)] == [a]
    assert source.fetched == []


def test_walk_leaves_out_children_fetch_does_not_have_and_follows_the_selection():
    a, b, c = image("a"), image("b"), image("c")
    top = new_index([(a, AMD64), (b, ARM64), (c, AMD64)])
    missing = Source(a, c)
    assert [n.manifest for n in walk(top, missing)] == [a, c, top]

    source = Source(a, b, c)
    chosen = list(walk(top, source, select=lambda index: index.children[1:2]))
    assert [n.manifest for n in chosen] == [b, top]
    assert source.fetched == [b.digest]


def test_walk_is_lazy():
    a, b = image("a"), image("b")
    top = new_index([(a, AMD64), (b, ARM64)])
    source = Source(a, b)
    first = next(iter(walk(top, source)))
    assert first.manifest == a
    assert source.fetched == [a.digest]


def test_walk_refuses_a_cycle():
    # Content addressing makes a real cycle impossible; a fetch function serving
    # something else for a digest can make one.
    top = new_index([(image("a"), None)])
    looping = new_index([(top, None)])
    source = Source()
    source.add(top.children[0].digest, looping)  # the child "is" an index listing top
    with pytest.raises(ManifestError, match="refers to itself"):
        list(walk(top, source))


def chain(depth: int) -> tuple[Manifest, Source]:
    """An image under ``depth`` indexes, each nested in the next."""
    current = image("bottom")
    source = Source(current)
    for _ in range(depth):
        current = new_index([(current, None)])
        source.add(current.digest, current)
    return current, source


def test_walk_accepts_indexes_nested_up_to_the_limit_and_refuses_deeper():
    top, source = chain(MAX_DEPTH)
    nodes = list(walk(top, source))
    assert len(nodes) == MAX_DEPTH + 1
    assert nodes[0].depth == MAX_DEPTH and not nodes[0].manifest.is_index

    top, source = chain(MAX_DEPTH + 1)
    with pytest.raises(ManifestError, match=f"more than {MAX_DEPTH} deep"):
        list(walk(top, source))
    # Refused before the manifest beyond the limit is fetched.
    assert image("bottom").digest not in source.fetched


def test_is_complete_needs_every_manifest_and_blob_and_stops_at_the_first_gap():
    a, b, c = image("a"), image("b"), image("c")
    top = new_index([(a, AMD64), (new_index([(b, None)]), None), (c, ARM64)])
    nested = top.children[1]
    every_blob = {d.digest for m in (a, b, c) for d in m.blobs}
    whole = Source(a, b, c)
    whole.add(nested.digest, new_index([(b, None)]))
    assert is_complete(top, whole, every_blob.__contains__)
    # A layer of the image under the nested index is missing.
    assert not is_complete(top, whole, (every_blob - {b.layers[0].digest}).__contains__)

    gap = Source(a, c)
    gap.add(nested.digest, new_index([(b, None)]))
    assert not is_complete(top, gap, every_blob.__contains__)
    assert c.digest not in gap.fetched  # nothing fetched after the missing manifest


# --- new documents ----------------------------------------------------------------------------

CONFIG = Descriptor(media.OCI_CONFIG, "sha256:" + "a" * 64, 7)
LAYER = Descriptor(media.OCI_LAYER_GZIP, "sha256:" + "b" * 64, 42)


def test_new_manifest_is_byte_exact():
    manifest = new_manifest(CONFIG, [LAYER], annotations={"z": "1", "a": "2"})
    expected = (
        '{"annotations":{"a":"2","z":"1"},'
        '"config":{"digest":"sha256:' + "a" * 64 + '",'
        '"mediaType":"application/vnd.oci.image.config.v1+json","size":7},'
        '"layers":[{"digest":"sha256:' + "b" * 64 + '",'
        '"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":42}],'
        '"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}'
    ).encode()
    assert manifest.data == expected
    assert manifest.media_type == media.OCI_MANIFEST
    assert manifest.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
    # No annotations: no field at all (an empty object would change the digest).
    assert b"annotations" not in new_manifest(CONFIG, [LAYER], annotations={}).data


def test_new_manifest_in_docker_format():
    docker = new_manifest(
        Descriptor(media.DOCKER_CONFIG, CONFIG.digest, 7), [], media_type=media.DOCKER_MANIFEST
    )
    assert docker.media_type == media.DOCKER_MANIFEST
    assert docker.json["mediaType"] == media.DOCKER_MANIFEST
    assert docker.json["layers"] == []


def test_new_index_is_byte_exact():
    child = image("a")
    index = new_index([(child, ARM64), (child, None)])
    entry = f'"digest":"{child.digest}","mediaType":"{media.OCI_MANIFEST}"'
    expected = (
        '{"manifests":['
        f'{{{entry},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"size":{child.size}}},'
        f'{{{entry},"size":{child.size}}}'
        '],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}'
    ).encode()
    assert index.data == expected
    assert new_index([(child, AMD64)], media_type=media.DOCKER_LIST).media_type == media.DOCKER_LIST


def test_platform_index_takes_each_platform_from_the_config():
    a, b = image("a"), image("b")
    configs = {
        a.digest: {"architecture": "amd64", "os": "linux", "variant": ""},
        b.digest: {"architecture": "arm", "os": "linux", "variant": "v7", "created": "x"},
    }
    index = platform_index([a, b], lambda m: configs[m.digest])
    assert [c.platform for c in index.children] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    assert (
        index.data
        == new_index([(a, AMD64), (b, {**AMD64, "architecture": "arm", "variant": "v7"})]).data
    )


def test_canonical_json_sorts_keys_without_spaces_and_escapes_non_ascii():
    assert canonical_json({"b": [1, {"d": None, "c": True}], "a": "é"}) == (
        b'{"a":"\\u00e9","b":[1,{"c":true,"d":null}]}'
    )


# --- configs ----------------------------------------------------------------------------------


def test_config_readers_accept_missing_and_null_fields_and_return_new_lists():
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:1"]}, "history": [{"a": 1}]}
    ids = image_config.diff_ids(config)
    ids.append("sha256:2")
    history = image_config.history(config)
    history.append({})
    assert config["rootfs"]["diff_ids"] == ["sha256:1"]
    assert config["history"] == [{"a": 1}]
    for empty in ({}, {"rootfs": None, "history": None}, {"rootfs": {"diff_ids": None}}):
        assert image_config.diff_ids(empty) == []
        assert image_config.history(empty) == []


def test_config_platform_and_timestamp():
    assert image_config.platform({}) == {"architecture": "", "os": ""}
    assert image_config.platform({"os": "linux", "architecture": "arm64", "variant": "v8"}) == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    assert image_config.timestamp(0) == "1970-01-01T00:00:00Z"
    assert image_config.timestamp(1700000000) == "2023-11-14T22:13:20Z"
