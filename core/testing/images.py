"""A deterministic OCI test-image factory.

Images are built from seeds: the same seed, sizes and options always give the same
bytes and digests, on any machine. Blobs are written to an OCI layout directory (so
skopeo can read them as ``oci:<dir>:<name>``) and streamed, so a 250 MiB layer never sits
in memory. Tests, benchmarks and plugin authors use it to fill real registries::

    factory = ImageFactory(tmp_path / "images")
    base = factory.layer(4096, "base")
    app = factory.image("app", [base, 1024])                 # single platform, OCI types
    multi = factory.multi_platform("tool", ["linux/amd64", "linux/arm64"])
    factory.push(app, "127.0.0.1:5000", "library/app", "1.0")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.image import media
from sealpy.core.image.compose import canonical_json, new_index, new_manifest
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.transport.blobio import HashingTee
from sealpy.core.transport.ocilayout import OCILayout

EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Layer:
    """A layer blob: its descriptor, its diff_id (digest of the uncompressed tar) and the
    uncompressed size."""

    descriptor: Descriptor
    diff_id: str
    tar_size: int

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(frozen=True)
class TestImage:
    """A single-platform image in the factory's layout."""

    __test__ = False  # not a pytest test class

    manifest: Manifest
    config: Descriptor
    layers: tuple[Layer, ...]
    platform: Platform

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blob_digests(self) -> set[str]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.descriptor.size for layer in self.layers)


@dataclass(frozen=True)
class TestIndex:
    """A multi-platform image: an index over :class:`TestImage` children."""

    __test__ = False

    manifest: Manifest
    images: tuple[TestImage, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def for_platform(self, platform: str | Platform) -> TestImage:
        wanted = Platform.parse(platform) if isinstance(platform, str) else platform
        for image in self.images:
            if image.platform == wanted:
                return image
        raise KeyError(str(wanted))

    @property
    def blob_digests(self) -> set[str]:
        return set().union(*(i.blob_digests for i in self.images))


class _PatternStream:
    """Deterministic bytes from a seed: random (incompressible) or a repeated phrase."""

    def __init__(self, seed: str, size: int, compressible: bool) -> None:
        self._left = size
        self._rng = random.Random(hashlib.sha256(seed.encode()).digest())
        self._phrase = (f"sealpy test data {seed} " * 64).encode()
        self._compressible = compressible

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        if n <= 0:
            return b""
        if self._compressible:
            reps = n // len(self._phrase) + 1
            data = (self._phrase * reps)[:n]
        else:
            data = self._rng.randbytes(n)
        self._left -= n
        return data


class _WriterFile:
    def __init__(self, writer) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class ImageFactory:
    """Makes deterministic images in an OCI layout at ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.layout = OCILayout(directory)
        self.layout.ensure()

    @property
    def directory(self) -> Path:
        return self.layout.root

    # --- layers ------------------------------------------------------------------------

    def layer(
        self,
        size: int,
        seed: str,
        *,
        compressible: bool = False,
        compression: str = "gzip",
        docker: bool = False,
    ) -> Layer:
        """A layer holding one file of ``size`` deterministic bytes named after ``seed``.

        ``compression`` is ``gzip`` (level 1, mtime 0: deterministic) or ``none``."""
        if compression == "gzip":
            media_type = media.DOCKER_LAYER_GZIP if docker else media.OCI_LAYER_GZIP
        elif compression == "none":
            media_type = (
                "application/vnd.docker.image.rootfs.diff.tar" if docker else media.OCI_LAYER
            )
        else:
            raise ValueError(f"compression must be gzip or none, not {compression!r}")
        writer = self.layout.new_blob_writer(media_type)
        try:
            sink = _WriterFile(writer)
            gz = None
            if compression == "gzip":
                gz = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, compresslevel=1)  # type: ignore[arg-type]
            tee = HashingTee(gz or sink)
            with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                tar.addfile(
                    _tarinfo(f"data/{seed}.bin", size), _PatternStream(seed, size, compressible)
                )
            if gz is not None:
                gz.close()
            descriptor = writer.commit()
        finally:
            writer.close()
        return Layer(descriptor, "sha256:" + tee.hash.hexdigest(), tee.size)

    # --- images --------------------------------------------------------------------------

    def image(
        self,
        seed: str,
        layers: Sequence[Layer | int] = (1024,),
        *,
        platform: str | Platform = "linux/amd64",
        docker: bool = False,
        labels: dict[str, str] | None = None,
        compressible: bool = False,
    ) -> TestImage:
        """A single-platform image. ``layers`` are :class:`Layer` objects (to share them
        between images) or sizes, made into layers seeded from ``seed``."""
        plat = Platform.parse(platform) if isinstance(platform, str) else platform
        made = [
            spec
            if isinstance(spec, Layer)
            else self.layer(spec, f"{seed}/{plat}/{i}", docker=docker, compressible=compressible)
            for i, spec in enumerate(layers)
        ]
        config_doc: dict = {
            "architecture": plat.architecture,
            "os": plat.os,
            "created": EPOCH,
            "config": {"Labels": dict(labels or {}, **{"io.sealpy.test.seed": seed})},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in made]},
            "history": [
                {"created": EPOCH, "created_by": f"sealpy test layer {i}"} for i in range(len(made))
            ],
        }
        if plat.variant:
            config_doc["variant"] = plat.variant
        config = canonical_json(config_doc)
        config_digest = self.layout.put_blob_bytes(config)
        config_type = media.DOCKER_CONFIG if docker else media.OCI_CONFIG
        manifest_type = media.DOCKER_MANIFEST if docker else media.OCI_MANIFEST
        config_descriptor = Descriptor(config_type, config_digest, len(config))
        manifest = new_manifest(
            config_descriptor, [layer.descriptor for layer in made], media_type=manifest_type
        )
        self.layout.put_manifest(manifest)
        return TestImage(manifest, config_descriptor, tuple(made), plat)

    def index(self, images: Sequence[TestImage], *, docker: bool = False) -> TestIndex:
        index_type = media.DOCKER_LIST if docker else media.OCI_INDEX
        entries = []
        for image in images:
            platform = {"architecture": image.platform.architecture, "os": image.platform.os}
            if image.platform.variant:
                platform["variant"] = image.platform.variant
            entries.append((image.manifest, platform))
        manifest = new_index(entries, media_type=index_type)
        self.layout.put_manifest(manifest)
        return TestIndex(manifest, tuple(images))

    def multi_platform(
        self,
        seed: str,
        platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
        layers: Sequence[Layer | int] = (1024,),
        *,
        docker: bool = False,
    ) -> TestIndex:
        """An index with one image per platform (layers differ per platform unless shared)."""
        return self.index(
            [self.image(seed, layers, platform=p, docker=docker) for p in platforms], docker=docker
        )

    # --- getting images out -------------------------------------------------------------

    def name(self, item: TestImage | TestIndex, name: str) -> str:
        """Name ``item`` in the layout, for ``skopeo copy oci:<dir>:<name> ...``."""
        self.layout.set_ref(name, item.manifest.descriptor())
        return f"oci:{self.directory}:{name}"

    def push(
        self,
        item: TestImage | TestIndex,
        registry: str,
        repository: str,
        tag: str | None = None,
        *,
        client=None,
    ) -> ImageReference:
        """Push ``item`` (every platform) to ``registry`` with the project's own client."""
        from sealpy.core.errors import SealpyError
        from sealpy.core.transport.copy import CopyJob, copy_images
        from sealpy.core.transport.remote import RegistryClient, RemotePushDestination

        ref = ImageReference(registry, repository, tag, None if tag else item.digest)
        own_client = client is None
        client = client or RegistryClient()
        try:
            job = CopyJob(
                label=str(ref),
                source=self.layout.image(""),
                reference=item.digest,
                destination=RemotePushDestination(client.repository(ref)),
                tag=tag,
            )
            outcome = copy_images([job], platforms=(), all_platforms=True, max_parallel=4)
        finally:
            if own_client:
                client.close()
        if outcome.failures:
            raise SealpyError(str(outcome.failures[0].error))
        return ref

    def docker_archive(self, image: TestImage, path: Path, repo_tag: str | None = None) -> Path:
        """Write ``image`` as ``docker save`` does: uncompressed layers, manifest.json."""
        config = self.layout.read_blob(image.config.digest)
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            config_name = f"{media.digest_hex(image.config.digest)}.json"
            tar.addfile(_tarinfo(config_name, len(config)), io.BytesIO(config))
            layer_names = []
            for layer in image.layers:
                name = f"{media.digest_hex(layer.diff_id)}/layer.tar"
                with self.layout.open_blob(layer.digest) as raw:
                    stream = (
                        gzip.GzipFile(fileobj=raw)
                        if layer.descriptor.media_type.endswith("gzip")
                        else raw
                    )
                    tar.addfile(_tarinfo(name, layer.tar_size), stream)
                layer_names.append(name)
            manifest = [
                {
                    "Config": config_name,
                    "RepoTags": [repo_tag] if repo_tag else [],
                    "Layers": layer_names,
                }
            ]
            data = json.dumps(manifest).encode()
            tar.addfile(_tarinfo("manifest.json", len(data)), io.BytesIO(data))
        return path

    def oci_archive(self, item: TestImage | TestIndex, path: Path, name: str | None = None) -> Path:
        """Write ``item`` as an ``oci-archive``: a tar of an OCI layout holding only it."""
        images = item.images if isinstance(item, TestIndex) else (item,)
        digests = [item.digest]
        for image in images:
            digests.append(image.digest)
            digests.extend(sorted(image.blob_digests))
        entry = item.manifest.descriptor().to_json()
        if name:
            entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        index = canonical_json(
            {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [entry]}
        )
        layout = canonical_json({"imageLayoutVersion": "1.0.0"})
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo("oci-layout", len(layout)), io.BytesIO(layout))
            tar.addfile(_tarinfo("index.json", len(index)), io.BytesIO(index))
            for digest in dict.fromkeys(digests):
                blob = self.layout.blob_path(digest)
                with open(blob, "rb") as f:
                    tar.addfile(
                        _tarinfo(f"blobs/sha256/{media.digest_hex(digest)}", blob.stat().st_size), f
                    )
        return path
