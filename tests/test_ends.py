"""End conformance, in the spirit of go-containerregistry's ``validate``: every end the copy
engine writes to — a remote registry, a distribution directory, an OCI layout, the store,
an ``oci-archive``, a ``docker-archive`` — is given an image and an index by the engine
(from the deterministic factory), and the end's own source reads them back: the same
manifest bytes, digests and media types, every blob byte for byte and verified.

A docker-archive holds one platform per image and no index (``docker save``'s format): it
refuses an index, and it stores layers uncompressed, so what its source reads back is a
new Docker manifest with the same config and layers whose uncompressed digests are the
image's diff_ids — checked as such below."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealpy.core.errors import DigestMismatchError
from sealpy.core.image import media
from sealpy.core.image.media import Descriptor
from sealpy.core.reference import ImageReference
from sealpy.core.store.layout import Store
from sealpy.core.testing.images import ImageFactory, TestImage, TestIndex
from sealpy.core.transport.archive import DockerArchiveSource, OCIArchiveSource
from sealpy.core.transport.archive_write import (
    ArchiveDestination,
    DockerArchiveDestination,
    OCIArchiveDestination,
)
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.copy import CopyJob, ImageDestination, ImageSource, copy_images
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.ocilayout import OCILayout
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination

NAME = "ends/image:1"


@dataclass
class End:
    """How to write into one end (``destination``), finish it (``finish``: an archive is
    written at the end) and read it back (``source``, ``reference`` of the named image)."""

    destination: ImageDestination
    source: Callable[[], ImageSource]
    reference: str
    finish: Callable[[], None] = lambda: None


@pytest.fixture(scope="module")
def items(image_factory: ImageFactory) -> dict[str, TestImage | TestIndex]:
    return {
        "oci image": image_factory.image("ends-image", [3000, 700]),
        "docker image": image_factory.image("ends-docker", [900], docker=True),
        "oci index": image_factory.multi_platform("ends-index", layers=[1200]),
        "docker index": image_factory.multi_platform("ends-list", layers=[500], docker=True),
    }


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient() as c:
        yield c


def _remote(tmp_path: Path, client: RegistryClient, registry: str, case: str) -> End:
    ref = ImageReference(registry, f"ends/{case.replace(' ', '-')}", "1", None)
    repository = client.repository(ref)
    return End(RemotePushDestination(repository), lambda: repository, "1")


def _distribution(tmp_path: Path, *_: object) -> End:
    repository = DistributionLayout(tmp_path / "dist", durable=False).repository("ends/image")
    return End(repository, lambda: repository, "1")


def _oci_layout(tmp_path: Path, *_: object) -> End:
    image = OCILayout(tmp_path / "layout").image(NAME)
    return End(image, lambda: image, "")


def _store(tmp_path: Path, *_: object) -> End:
    store = Store(tmp_path / "store")
    return End(store.destination(NAME), lambda: store.layout.image(NAME), "")


def _oci_archive(tmp_path: Path, *_: object) -> End:
    path = tmp_path / "image.tar"
    archive = OCIArchiveDestination(path)
    return End(archive.image(NAME), lambda: OCIArchiveSource(path), NAME, archive.commit)


ENDS = {
    "remote registry": _remote,
    "distribution directory": _distribution,
    "OCI layout": _oci_layout,
    "store": _store,
    "oci-archive": _oci_archive,
}
# The store keeps OCI media types only: Docker ones are converted (test_store.py checks
# that), so it is given OCI images only here.
CASES = [
    (end, case)
    for end in ENDS
    for case in ("oci image", "oci index", "docker image", "docker index")
    if end != "store" or case.startswith("oci")
]


def _copy(factory: ImageFactory, item: TestImage | TestIndex, destination: ImageDestination):
    """Copy ``item`` (every platform) from the factory's layout with the engine."""
    job = CopyJob(label="ends", source=factory.layout.image(""), reference=item.digest,
                  destination=destination, tag="1")  # fmt: skip
    return copy_images([job], platforms=(), all_platforms=True, max_parallel=2)


def _write(factory: ImageFactory, item: TestImage | TestIndex, end: End) -> None:
    outcome = _copy(factory, item, end.destination)
    assert not outcome.failures, outcome.failures
    assert outcome.results[0].digest == item.digest
    end.finish()


def _fetch(source: ImageSource, descriptor: Descriptor, scratch: Path) -> bytes:
    """A blob through the source's own fetch, into a verifying writer."""
    partial = scratch / f"{descriptor.digest[7:]}.partial"
    writer = BlobWriter(partial, lambda d: scratch / d[7:], digest=descriptor.digest,
                        size=descriptor.size, durable=False, resume=False)  # fmt: skip
    with writer:
        source.fetch_blob(descriptor, writer)
        assert writer.verify() == descriptor.digest
    return partial.read_bytes()


def _read_back(
    factory: ImageFactory, source: ImageSource, reference: str, item: TestImage | TestIndex,
    scratch: Path,
) -> None:  # fmt: skip
    top = source.get_manifest(reference)
    assert (top.data, top.media_type, top.digest) == (
        item.manifest.data, item.manifest.media_type, item.digest,
    )  # fmt: skip
    images = item.images if isinstance(item, TestIndex) else (item,)
    for image in images:
        manifest = source.get_manifest(image.digest)
        assert (manifest.data, manifest.media_type) == (image.manifest.data,
                                                         image.manifest.media_type)  # fmt: skip
        for blob in manifest.blobs:
            assert _fetch(source, blob, scratch) == factory.layout.read_blob(blob.digest)
    if isinstance(item, TestIndex):
        assert [c.digest for c in top.children] == [i.digest for i in images]


@pytest.mark.parametrize(("end_name", "case"), CASES)
def test_an_end_gives_back_what_was_written(
    end_name, case, items, image_factory, plain_registry, client, tmp_path
):
    item = items[case]
    end = ENDS[end_name](tmp_path, client, plain_registry.host, case)
    _write(image_factory, item, end)
    scratch = tmp_path / "read"
    scratch.mkdir()
    _read_back(image_factory, end.source(), end.reference, item, scratch)


# --- docker-archive: one platform per image, layers uncompressed ---------------------------


def test_docker_archive_gives_back_config_and_uncompressed_layers(items, image_factory, tmp_path):
    for case in ("oci image", "docker image"):
        image = items[case]
        assert isinstance(image, TestImage)
        path = tmp_path / f"{case}.tar"
        with DockerArchiveDestination(path) as archive:
            assert not _copy(image_factory, image, archive.image("ends/image:1")).failures
            archive.commit()
        sink = OCILayout(tmp_path / f"sink-{case}")
        source = DockerArchiveSource(path, sink)
        manifest = source.get_manifest("")
        assert manifest.media_type == media.DOCKER_MANIFEST
        assert manifest.config.digest == image.config.digest
        assert manifest.config.media_type == media.DOCKER_CONFIG
        scratch = tmp_path / f"read-{case}"
        scratch.mkdir()
        config = _fetch(source, manifest.config, scratch)
        assert config == image_factory.layout.read_blob(image.config.digest)
        uncompressed = []
        for layer in manifest.layers:
            assert layer.media_type == media.DOCKER_LAYER_GZIP
            data = gzip.decompress(_fetch(source, layer, scratch))
            uncompressed.append("sha256:" + hashlib.sha256(data).hexdigest())
        assert uncompressed == [layer.diff_id for layer in image.layers]
        names = json.loads(_member(path, "manifest.json"))
        assert names[0]["RepoTags"] == ["ends/image:1"]
        assert names[0]["Layers"] == [f"{d[7:]}.tar" for d in uncompressed]


def test_docker_archive_refuses_an_index(items, image_factory, tmp_path):
    path = tmp_path / "index.tar"
    with DockerArchiveDestination(path) as archive:
        outcome = _copy(image_factory, items["oci index"], archive.image("x"))
    assert "one platform per image" in str(outcome.failures[0].error)
    assert list(tmp_path.iterdir()) == []


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


# --- archives: any source, nothing half-written -----------------------------------------------


@pytest.mark.parametrize("archive_type", [OCIArchiveDestination, DockerArchiveDestination])
def test_an_archive_takes_blobs_from_a_registry_and_leaves_no_scratch(
    archive_type, items, image_factory, plain_registry, client, tmp_path
):
    image = items["oci image"]
    ref = image_factory.push(image, plain_registry.host, "ends/from-remote", "1")
    out = tmp_path / "out"
    out.mkdir()
    with archive_type(out / "a.tar") as archive:
        job = CopyJob(label="ends", source=client.repository(ref), reference="1",
                      destination=archive.image(NAME), tag="1")  # fmt: skip
        assert not copy_images([job], platforms=(), all_platforms=True).failures
        assert any(p.name.endswith(".blobs") for p in out.iterdir())  # staged, verified
        archive.commit()
    assert [p.name for p in out.iterdir()] == ["a.tar"]
    if archive_type is OCIArchiveDestination:
        scratch = tmp_path / "read"
        scratch.mkdir()
        _read_back(image_factory, OCIArchiveSource(out / "a.tar"), NAME, image, scratch)


@contextmanager
def _corrupted(factory: ImageFactory, digest: str) -> Iterator[None]:
    path = factory.layout.blob_path(digest)
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        yield
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("archive_type", [OCIArchiveDestination, DockerArchiveDestination])
def test_a_corrupt_blob_leaves_no_archive(archive_type, image_factory, tmp_path):
    image = image_factory.image("ends-corrupt", [5000])
    out = tmp_path / "out"
    out.mkdir()
    archive: ArchiveDestination
    with (
        _corrupted(image_factory, image.layers[0].digest),
        pytest.raises(DigestMismatchError),
        archive_type(out / "a.tar") as archive,
    ):
        assert not _copy(image_factory, image, archive.image(NAME)).failures
        archive.commit()
    assert list(out.iterdir()) == []
