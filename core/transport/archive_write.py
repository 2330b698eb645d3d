"""Image archives as copy destinations: ``oci-archive`` and ``docker-archive``.

``sealpy save`` is a copy from the store into one of these ends (as ``load`` is the copy
the other way, :mod:`.archive`). An archive is one file written once, deterministically:
its members come in a fixed order (an OCI archive's ``index.json`` before its blobs, sorted
by digest; a docker-archive's images in the order they were added) whatever order the
engine's parallel transfers finish in. So the engine's transfers only *take* a blob —
from a source that can open its blobs again (the store, a directory, an archive) nothing
is copied yet; from any other (a registry) the blob is streamed, verified, into a scratch
directory next to the archive — and :meth:`ArchiveDestination.commit` writes the tar in
one streaming pass, checking every blob's length and digest on the way, into a partial
file renamed into place when complete. A failure anywhere leaves no archive and no
scratch files.

A docker-archive holds one platform per image (``docker save``'s format has no index):
an index is refused. Its layers are stored uncompressed and named by their diff_id; a tar
header needs the size before the content, so each layer is read twice, streaming — once
to measure it and check the diff_id, once to write it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sealpy.core.errors import DigestMismatchError, StoreError
from sealpy.core.image import config as image_config
from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, Manifest, load_json
from sealpy.core.transport.blobio import CHUNK, receive_into
from sealpy.core.transport.copy import BlobOpener, ImageSource
from sealpy.core.transport.ocilayout import REF_NAME, OCILayout

UNTAGGED = "<none>"


def tar_member(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    """A member header with nothing of the writing machine in it (owner, time)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uname = info.gname = ""
    return info


def docker_name(name: str | None) -> str | None:
    """The RepoTags form Docker writes: ``docker.io/library/x:1`` → ``x:1``."""
    if not name or "@" in name:
        return None
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


class _VerifyingReader:
    """Reads a blob while counting and hashing it; :meth:`check` says whether it was the
    blob its descriptor names (the archive is discarded when not). ``head`` holds its
    first two bytes (read ahead, still returned by :meth:`read`): gzip's magic or not."""

    def __init__(self, f: BinaryIO, descriptor: Descriptor, *, verify: bool = True) -> None:
        self._f = f
        self.descriptor = descriptor
        self._hash = hashlib.sha256() if verify else None
        self.size = 0
        self.head = self._ahead = f.read(2)

    def read(self, n: int = -1) -> bytes:
        data, self._ahead = self._ahead, b""
        if n < 0:
            data += self._f.read()
        elif len(data) > n:
            data, self._ahead = data[:n], data[n:]
        elif len(data) < n:
            data += self._f.read(n - len(data))
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def check(self) -> None:
        assert self._hash is not None, "opened without verifying"
        actual = "sha256:" + self._hash.hexdigest()
        expected = self.descriptor
        if self.size != expected.size:
            raise DigestMismatchError(
                f"blob {expected.digest}: got {self.size} bytes, expected {expected.size}"
            )
        if actual != expected.digest:
            raise DigestMismatchError(f"blob {expected.digest}: content has digest {actual}")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Slot:
    """One image of the archive, in the order it was added: its name (``None``: none) and,
    once the copy has committed it, its top manifest."""

    name: str | None
    label: str
    manifest: Manifest | None = None


class ArchiveDestination:
    """An archive being written at ``path``; :meth:`image` gives the copy engine one end
    per image. Use as a context manager and call :meth:`commit` after a successful copy:
    leaving the block without it (an error) removes everything written."""

    format = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tag = uuid.uuid4().hex[:8]
        self._blobs: dict[str, tuple[Descriptor, BlobOpener]] = {}
        self._manifests: dict[str, Manifest] = {}
        self._slots: list[_Slot] = []
        self._scratch: OCILayout | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ArchiveDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def image(self, name: str | None, label: str | None = None) -> ArchiveImageEnd:
        """The end an image named ``name`` is copied into; ``label`` names it in errors."""
        slot = _Slot(name, label or name or UNTAGGED)
        self._slots.append(slot)
        return ArchiveImageEnd(self, slot)

    # --- what the ends call --------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return digest in self._blobs

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        if not isinstance(source, BlobOpener):
            # Nothing to open again at commit: keep a verified copy next to the archive.
            scratch = self._scratch_layout()
            writer = scratch.blob_writer(descriptor)
            receive_into(writer, descriptor, source, on_bytes)
            source = scratch.image("")
        with self._lock:
            self._blobs.setdefault(descriptor.digest, (descriptor, source))

    def put_manifest(self, manifest: Manifest) -> None:
        with self._lock:
            self._manifests.setdefault(manifest.digest, manifest)

    def stored_manifest(self, digest: str) -> Manifest | None:
        return self._manifests.get(digest)

    def _scratch_layout(self) -> OCILayout:
        with self._lock:
            if self._scratch is None:
                root = self.path.with_name(f".{self.path.name}.{self._tag}.blobs")
                self._scratch = OCILayout(root)
            return self._scratch

    # --- finishing -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write the archive into a partial file and rename it into place when complete."""
        missing = [slot.label for slot in self._slots if slot.manifest is None]
        if missing:
            raise StoreError(f"{', '.join(missing)}: not copied, the archive is not written")
        partial = self.path.with_name(f".{self.path.name}.{self._tag}.partial")
        try:
            with open(partial, "wb") as out:
                self._write(out)
            os.replace(partial, self.path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Remove the scratch directory (if a blob needed one)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch.root, ignore_errors=True)
            self._scratch = None

    def _write(self, out: BinaryIO) -> None:
        raise NotImplementedError

    def _open(self, descriptor: Descriptor, *, verify: bool = True) -> _VerifyingReader:
        stored, opener = self._blobs[descriptor.digest]
        return _VerifyingReader(opener.open_blob(stored), stored, verify=verify)

    def _add_blob(self, tar: tarfile.TarFile, name: str, descriptor: Descriptor) -> None:
        with self._open(descriptor) as reader:
            tar.addfile(tar_member(name, descriptor.size), reader)  # type: ignore[arg-type]
            reader.drain()
            reader.check()

    def _read_blob(self, descriptor: Descriptor) -> bytes:
        """A small blob (a config), whole and verified."""
        with self._open(descriptor) as reader:
            data = reader.read()
            reader.check()
        return data


class ArchiveImageEnd:
    """One image of an :class:`ArchiveDestination`, as the copy engine's destination. The
    tag it is given is ignored: the image is named as the archive was told."""

    def __init__(self, archive: ArchiveDestination, slot: _Slot) -> None:
        self.archive = archive
        self.slot = slot

    @property
    def blob_scope(self) -> tuple[str, int]:
        """Every image of one archive shares its blobs (SharedBlobStore)."""
        return ("archive", id(self.archive))

    def __str__(self) -> str:
        return f"{self.archive.format}:{self.archive.path}:{self.slot.name or ''}"

    def has_blob(self, digest: str) -> bool:
        return self.archive.has_blob(digest)

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.archive.receive_blob(descriptor, source, on_bytes)

    def stored_manifest(self, digest: str) -> Manifest | None:
        return self.archive.stored_manifest(digest)

    def put_manifest(self, manifest: Manifest) -> None:
        self.archive.put_manifest(manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        self.slot.manifest = manifest


class OCIArchiveDestination(ArchiveDestination):
    """An ``oci-archive``: a tar of an OCI image layout holding the images, each named by
    ``org.opencontainers.image.ref.name`` (an image without a name has no annotation)."""

    format = "oci-archive"

    def _write(self, out: BinaryIO) -> None:
        entries: list[dict] = []
        for slot in self._slots:
            assert slot.manifest is not None
            entry = slot.manifest.descriptor().to_json()
            if slot.name:
                entry["annotations"] = {REF_NAME: slot.name}
            entries.append(entry)
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
        ).encode()
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.addfile(tar_member("oci-layout", len(layout)), io.BytesIO(layout))
            tar.addfile(tar_member("index.json", len(index)), io.BytesIO(index))
            for name in ("blobs/", "blobs/sha256/"):
                tar.addfile(tar_member(name, directory=True))
            for digest in sorted({*self._blobs, *self._manifests}):
                name = f"blobs/sha256/{media.digest_hex(digest)}"
                manifest = self._manifests.get(digest)
                if manifest is not None:
                    tar.addfile(tar_member(name, manifest.size), io.BytesIO(manifest.data))
                else:
                    self._add_blob(tar, name, self._blobs[digest][0])


class DockerArchiveDestination(ArchiveDestination):
    """``docker save``'s format: config ``<hex>.json``, uncompressed layers ``<hex>.tar``
    (named by diff_id), ``manifest.json``; one platform per image, so an index is refused.

    One ``manifest.json`` entry per image, with every name of it in ``RepoTags``: Docker
    and skopeo (``docker-archive:f``, "expected 1 item") expect that, not one per name."""

    format = "docker-archive"

    def put_manifest(self, manifest: Manifest) -> None:
        if manifest.is_index:
            raise StoreError(
                f"a docker-archive holds one platform per image, not an index ({manifest.digest})"
            )
        super().put_manifest(manifest)

    def _write(self, out: BinaryIO) -> None:
        entries: dict[str, dict] = {}
        written: set[str] = set()
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for slot in self._slots:
                assert slot.manifest is not None
                tag = docker_name(slot.name)
                if slot.manifest.digest in entries:
                    tags = entries[slot.manifest.digest]["RepoTags"]
                    if tag and tag not in tags:
                        tags.append(tag)
                    continue
                config_name, layer_names = self._add_image(tar, slot.label, slot.manifest, written)
                entries[slot.manifest.digest] = {
                    "Config": config_name,
                    "RepoTags": [tag] if tag else [],
                    "Layers": layer_names,
                }
            data = json.dumps(list(entries.values())).encode()
            tar.addfile(tar_member("manifest.json", len(data)), io.BytesIO(data))

    def _add_image(
        self, tar: tarfile.TarFile, label: str, manifest: Manifest, written: set[str]
    ) -> tuple[str, list[str]]:
        """Write an image's config and layers (those not in the archive yet); their names."""
        config_bytes = self._read_blob(manifest.config)
        diff_ids = image_config.diff_ids(load_json(config_bytes))
        if len(diff_ids) != len(manifest.layers):
            raise StoreError(
                f"{label}: the config lists {len(diff_ids)} layers, "
                f"the manifest {len(manifest.layers)}"
            )
        config_name = f"{media.digest_hex(manifest.config.digest)}.json"
        if config_name not in written:
            tar.addfile(tar_member(config_name, len(config_bytes)), io.BytesIO(config_bytes))
            written.add(config_name)
        layer_names = []
        for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
            name = f"{media.digest_hex(diff_id)}.tar"
            if name not in written:
                self._add_uncompressed(tar, layer, diff_id, name)
                written.add(name)
            layer_names.append(name)
        return config_name, layer_names

    def _uncompressed(
        self, layer: Descriptor, *, verify: bool
    ) -> tuple[_VerifyingReader, BinaryIO]:
        """The layer as stored and its uncompressed bytes (gunzipped if gzip)."""
        raw = self._open(layer, verify=verify)
        plain = gzip.GzipFile(fileobj=raw) if raw.head == b"\x1f\x8b" else raw  # type: ignore[call-overload]
        return raw, plain  # type: ignore[return-value]

    def _add_uncompressed(
        self, tar: tarfile.TarFile, layer: Descriptor, diff_id: str, name: str
    ) -> None:
        # A tar header needs the size first: one pass to measure (and check the stored
        # blob and the diff_id), one to write; both stream, nothing is held in memory.
        digest = hashlib.sha256()
        size = 0
        raw, plain = self._uncompressed(layer, verify=True)
        with raw, plain:
            try:
                while chunk := plain.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            except (OSError, EOFError, zlib.error):
                raw.drain()
                raw.check()  # a damaged blob says so, rather than "bad gzip"
                raise
            raw.drain()
            raw.check()
        if "sha256:" + digest.hexdigest() != diff_id:
            raise StoreError(f"layer {layer.digest} does not match its diff_id {diff_id}")
        raw, plain = self._uncompressed(layer, verify=False)
        with raw, plain:
            tar.addfile(tar_member(name, size), plain)
