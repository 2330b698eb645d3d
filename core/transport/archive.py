"""Image archives as copy sources: ``docker-archive`` (``docker save``) and ``oci-archive``
(``load``, ``tar.txt``); the same formats as destinations (``save``) are in :mod:`.archive_write`.

Members are read in place: the tar is indexed once and each blob is read at its offset,
so several threads can read one archive and nothing is unpacked to temporary files.

A docker-archive holds uncompressed layers whose registry digests do not exist yet: its
source compresses each layer (gzip, deterministic) straight into the destination's blob
store and presents the resulting Docker schema2 manifest. A warm re-run recognises the
image by its config digest and compresses nothing.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sealpy.core.errors import ContextError, ManifestError, NotFoundError
from sealpy.core.image.media import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    Descriptor,
    Manifest,
    digest_hex,
    load_json,
    sha256_digest,
)
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.blobio import CHUNK, BlobWriter, stream_into
from sealpy.core.transport.ocilayout import REF_NAME

if TYPE_CHECKING:
    from sealpy.core.model import ArchiveEntry
    from sealpy.core.progress import ProgressReporter
    from sealpy.core.transport.copy import CopyJob
    from sealpy.core.transport.distribution import DistributionLayout

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


class TarIndex:
    """Offsets of a tar's regular files, for random, thread-safe reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, _Member] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for info in tar:
                    if info.isfile():
                        self.members[info.name.lstrip("./") or info.name] = _Member(
                            info.offset_data, info.size
                        )
        except FileNotFoundError:
            raise ContextError(f"archive {path} does not exist") from None
        except tarfile.TarError as exc:
            raise ContextError(f"archive {path} is not an uncompressed tar file: {exc}") from None
        except OSError as exc:
            raise ContextError(f"cannot read archive {path}: {exc.strerror}") from None

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(name.lstrip("./"))
        if member is None:
            raise NotFoundError(f"{name} is not in archive {self.path}")
        f = open(self.path, "rb")  # noqa: SIM115 - handed to the caller
        f.seek(member.offset)
        return _Bounded(f, member.size)  # type: ignore[return-value]

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def size(self, name: str) -> int:
        return self.members[name.lstrip("./")].size


class _Bounded:
    """A file object limited to ``size`` bytes from its current position."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OCIArchiveSource:
    """An ``oci-archive``: a tar of an OCI image layout."""

    def __init__(self, path: Path) -> None:
        self.tar = TarIndex(path)
        try:
            self.index = load_json(self.tar.read("index.json"))
        except (NotFoundError, ValueError):
            raise ContextError(f"{path} is not an OCI archive (no readable index.json)") from None
        manifests = self.index.get("manifests") if isinstance(self.index, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(e, dict) for e in manifests):
            raise ContextError(f"{path}: index.json has no list of manifest descriptors")

    def get_manifest(self, reference: str) -> Manifest:
        if SHA256_RE.match(reference):
            return Manifest.parse(self._blob(reference), expected_digest=reference, what=reference)
        entries = self.index["manifests"]
        if reference:
            entries = [e for e in entries if _annotation(e, REF_NAME) == reference]
        if len(entries) != 1:
            raise ContextError(
                f"{self.tar.path}: expected exactly one image{' named ' + reference if reference else ''}, "
                f"found {len(entries)}"
            )
        descriptor = Descriptor.from_json(entries[0])
        return Manifest.parse(
            self._blob(descriptor.digest),
            descriptor.media_type,
            expected_digest=descriptor.digest,
            what=str(self.tar.path),
        )

    def _blob(self, digest: str) -> bytes:
        return self.tar.read(f"blobs/sha256/{digest_hex(digest)}")

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self.tar.open(f"blobs/sha256/{digest_hex(descriptor.digest)}")

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        with self.open_blob(descriptor) as src:
            stream_into(src, writer, on_bytes)
        writer.verify()


def _annotation(descriptor: dict, key: str) -> object:
    annotations = descriptor.get("annotations")
    return annotations.get(key) if isinstance(annotations, dict) else None


class BlobSink(Protocol):
    """Where a docker-archive's converted blobs go (the destination's blob store)."""

    def has_blob(self, digest: str) -> bool: ...

    def new_blob_writer(self, media_type: str = "") -> BlobWriter: ...

    def put_blob_bytes(self, data: bytes) -> str: ...

    def open_blob(self, digest: str) -> BinaryIO: ...


def docker_archive_entries(tar: TarIndex) -> list[Any]:
    """The entries of a docker-archive's ``manifest.json``, a list (each entry is checked
    by :class:`DockerArchiveSource`); a ContextError when there is no such list."""
    try:
        entries = load_json(tar.read("manifest.json"))
    except (NotFoundError, ValueError):
        raise ContextError(
            f"{tar.path} is not a docker archive (no readable manifest.json)"
        ) from None
    if not isinstance(entries, list):
        raise ContextError(f"{tar.path}: manifest.json is not a list of images")
    return entries


class DockerArchiveSource:
    """A ``docker-archive`` (``docker save`` output), converted on first use into ``sink``.

    ``existing`` returns the manifest already stored for this image, if any; when its
    config digest equals the archive's, the image is unchanged and nothing is compressed.
    ``entry`` picks one image of an archive holding several (``sealpy load``); without
    it the archive must hold exactly one.
    """

    def __init__(
        self,
        path: Path,
        sink: BlobSink,
        *,
        existing: Callable[[], Manifest | None] = lambda: None,
        compress_level: int = 6,
        entry: int | None = None,
    ) -> None:
        self.tar = TarIndex(path)
        self.sink = sink
        self._existing = existing
        self._level = compress_level
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        # Blobs this source wrote itself (compressed layers, the config): the copy engine
        # finds them present, so they are counted here as fetched.
        self.converted: list[Descriptor] = []
        entries = docker_archive_entries(self.tar)
        if entry is None and len(entries) != 1:
            raise ContextError(f"{path}: expected exactly one image in manifest.json")
        if entry is not None and not 0 <= entry < len(entries):
            raise ContextError(f"{path}: manifest.json has no image number {entry}")
        self.entry = entries[entry or 0]
        number = (entry or 0) + 1
        if not isinstance(self.entry, dict) or not isinstance(self.entry.get("Config"), str):
            raise ContextError(f"{path}: manifest.json image {number} names no Config file")
        layers = self.entry.get("Layers")
        if layers is not None and (
            not isinstance(layers, list) or not all(isinstance(n, str) for n in layers)
        ):
            raise ContextError(
                f"{path}: manifest.json image {number}: Layers is not a list of names"
            )
        # Read by `sealpy load` to name the image: checked here, with the rest.
        tags = self.entry.get("RepoTags")
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
        ):
            raise ContextError(
                f"{path}: manifest.json image {number}: RepoTags is not a list of names"
            )

    def get_manifest(self, reference: str) -> Manifest:
        with self._lock:
            if self._manifest is None:
                self._manifest = self._convert()
        if SHA256_RE.match(reference) and reference != self._manifest.digest:
            raise NotFoundError(f"{reference} is not in {self.tar.path}")
        return self._manifest

    def _convert(self) -> Manifest:
        config = self.tar.read(self.entry["Config"])
        config_digest = sha256_digest(config)
        existing = self._existing()
        if (
            existing is not None
            and not existing.is_index
            and existing.config.digest == config_digest
            and all(self.sink.has_blob(b.digest) for b in existing.blobs)
        ):
            return existing
        if not self.sink.has_blob(config_digest):
            self.sink.put_blob_bytes(config)
            self.converted.append(Descriptor(DOCKER_CONFIG, config_digest, len(config)))
        layers = [self._layer(name) for name in self.entry.get("Layers") or []]
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [d.to_json() for d in layers],
        }
        return Manifest.parse(json.dumps(document, indent=3).encode(), DOCKER_MANIFEST)

    def _layer(self, name: str) -> Descriptor:
        with self.tar.open(name) as src:
            head = src.read(2)
            writer = self.sink.new_blob_writer(DOCKER_LAYER_GZIP)
            try:
                if head == GZIP_MAGIC:  # already compressed: keep the bytes as they are
                    writer.write(head)
                    while chunk := src.read(CHUNK):
                        writer.write(chunk)
                else:
                    with gzip.GzipFile(
                        fileobj=_WriterFile(writer), mode="wb", mtime=0, compresslevel=self._level
                    ) as gz:
                        gz.write(head)
                        while chunk := src.read(CHUNK):
                            gz.write(chunk)
                descriptor = writer.commit()
                self.converted.append(descriptor)
                return descriptor
            finally:
                writer.close()

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        with self.sink.open_blob(descriptor.digest) as src:
            stream_into(src, writer, on_bytes)
        writer.verify()


class _WriterFile:
    """Lets gzip write into a BlobWriter."""

    def __init__(self, writer: BlobWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        self._writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _LayoutSink:
    """A distribution layout's blob store, as a :class:`BlobSink` for one repository."""

    def __init__(self, layout: DistributionLayout, repository: str) -> None:
        self.layout = layout
        self.repository = repository

    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def new_blob_writer(self, media_type: str = "") -> BlobWriter:
        return self.layout.new_blob_writer(self.repository, media_type)

    def put_blob_bytes(self, data: bytes) -> str:
        return self.layout.put_blob_bytes(data)

    def open_blob(self, digest: str) -> BinaryIO:
        return self.layout.open_blob(digest)


def archive_job(
    entry: ArchiveEntry, layout: DistributionLayout, progress: ProgressReporter
) -> CopyJob:
    """A copy job caching a ``tar.txt`` archive into ``layout`` as its destination name."""
    from sealpy.core.transport.copy import CopyJob

    repository = entry.destination.cache_repository
    tag = entry.destination.tag
    source: OCIArchiveSource | DockerArchiveSource
    if entry.transport == "oci-archive":
        source = OCIArchiveSource(entry.path)
    elif entry.transport == "docker-archive":

        def existing() -> Manifest | None:
            if not tag:
                return None
            try:
                return layout.get_manifest(repository, tag)
            except (NotFoundError, ManifestError):
                return None

        source = DockerArchiveSource(entry.path, _LayoutSink(layout, repository), existing=existing)
    else:  # pragma: no cover - the scanner only produces the two transports
        raise ContextError(f"unsupported archive transport {entry.transport}")
    return CopyJob(
        label=f"{entry.transport}:{entry.path}",
        source=source,
        reference="",
        destination=layout.repository(repository),
        tag=tag,
        target=f"{repository}:{tag}" if tag else None,
    )
