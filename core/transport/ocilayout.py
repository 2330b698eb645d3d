"""An OCI image layout directory: ``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``.

Images are named by the ``org.opencontainers.image.ref.name`` annotation of their
``index.json`` entry, so skopeo and umoci read them as ``oci:<dir>:<name>``. Updates of
``index.json`` hold an exclusive lock (``<dir>/.lock``) and replace the file atomically, so
concurrent commands on one layout never lose a name.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sealpy.core.errors import NotFoundError, SealpyError, StoreError
from sealpy.core.image.media import OCI_INDEX, Descriptor, Manifest, digest_hex, sha256_digest
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.blobio import (
    BlobWriter,
    receive_into,
    stream_into,
    write_bytes_atomically,
)

if TYPE_CHECKING:
    from sealpy.core.transport.blobcache import Placement
    from sealpy.core.transport.copy import ImageSource

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


class OCILayout:
    """An OCI image layout on disk (created on first write)."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = Path(root).absolute()
        self.durable = durable

    def __repr__(self) -> str:
        return f"OCILayout({str(self.root)!r})"

    def exists(self) -> bool:
        return (self.root / "oci-layout").is_file()

    def ensure(self) -> None:
        if self.exists():
            return
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.root / "index.json").exists():
            write_bytes_atomically(
                self.root / "index.json",
                json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(),
            )
        write_bytes_atomically(self.root / "oci-layout", json.dumps(LAYOUT_FILE).encode())

    # --- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in {self.root}") from None

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def blob_writer(self, descriptor: Descriptor) -> BlobWriter:
        self.ensure()
        partial = self.root / ".ingest" / digest_hex(descriptor.digest)
        return BlobWriter(
            partial,
            self.blob_path,
            digest=descriptor.digest,
            size=descriptor.size,
            media_type=descriptor.media_type,
            durable=self.durable,
        )

    def new_blob_writer(self, media_type: str = "") -> BlobWriter:
        self.ensure()
        partial = self.root / ".ingest" / f"new-{uuid.uuid4().hex}"
        return BlobWriter(
            partial, self.blob_path, media_type=media_type, durable=self.durable, resume=False
        )

    def put_blob_bytes(self, data: bytes) -> str:
        self.ensure()
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            write_bytes_atomically(self.blob_path(digest), data, durable=self.durable)
        return digest

    def put_manifest(self, manifest: Manifest) -> None:
        self.put_blob_bytes(manifest.data)

    def get_manifest_by_digest(self, digest: str) -> Manifest:
        return Manifest.parse(self.read_blob(digest), expected_digest=digest, what=digest)

    def blob_digests(self) -> Iterator[str]:
        base = self.root / "blobs" / "sha256"
        if base.is_dir():
            for entry in sorted(base.iterdir()):
                if SHA256_RE.match(f"sha256:{entry.name}"):
                    yield f"sha256:{entry.name}"

    # --- index.json ----------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the layout's exclusive lock (index.json read-modify-write, garbage collection)."""
        self.ensure()
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except ValueError:
            raise StoreError(f"{self.root}/index.json is corrupt") from None
        if not isinstance(data.get("manifests"), list):
            raise StoreError(f"{self.root}/index.json has no manifests list")
        return data

    def _write_index(self, data: dict) -> None:
        write_bytes_atomically(
            self.root / "index.json", json.dumps(data, indent=2).encode(), durable=self.durable
        )

    def refs(self) -> dict[str, Descriptor]:
        """Every named entry of index.json: name → descriptor."""
        out: dict[str, Descriptor] = {}
        for entry in self._read_index()["manifests"]:
            name = (entry.get("annotations") or {}).get(REF_NAME)
            if name:
                out[name] = Descriptor.from_json(entry)
        return out

    def resolve(self, name: str) -> Descriptor:
        try:
            return self.refs()[name]
        except KeyError:
            raise NotFoundError(f"image {name} is not in {self.root}") from None

    def set_ref(self, name: str, descriptor: Descriptor) -> None:
        """Point ``name`` at ``descriptor`` (replacing what it pointed to)."""
        with self.locked():
            data = self._read_index()
            kept = [
                m for m in data["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != name
            ]
            entry = descriptor.to_json()
            entry["annotations"] = {REF_NAME: name}
            data["manifests"] = [*kept, entry]
            self._write_index(data)

    def remove_ref(self, name: str) -> Descriptor:
        with self.locked():
            data = self._read_index()
            removed = [
                m for m in data["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == name
            ]
            if not removed:
                raise NotFoundError(f"image {name} is not in {self.root}")
            data["manifests"] = [m for m in data["manifests"] if m not in removed]
            self._write_index(data)
            return Descriptor.from_json(removed[0])

    def image(self, name: str) -> OCIImageEnd:
        return OCIImageEnd(self, name)


class OCIImageEnd:
    """One named image of an :class:`OCILayout` as a copy source and destination.

    As a source it answers ``get_manifest("")`` (or its own name) with the named image and
    any digest with that blob; as a destination ``set_tag`` names the image ``name``."""

    def __init__(self, layout: OCILayout, name: str) -> None:
        self.layout = layout
        self.name = name

    @property
    def blob_scope(self) -> tuple[str, str]:
        """Every image of a layout shares its blobs (SharedBlobStore)."""
        return ("oci-layout", str(self.layout.root))

    def __str__(self) -> str:
        return f"oci:{self.layout.root}:{self.name}"

    # source
    def get_manifest(self, reference: str) -> Manifest:
        if SHA256_RE.match(reference):
            return self.layout.get_manifest_by_digest(reference)
        descriptor = self.layout.resolve(self.name)
        return Manifest.parse(
            self.layout.read_blob(descriptor.digest),
            descriptor.media_type,
            expected_digest=descriptor.digest,
            what=self.name,
        )

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        with self.layout.open_blob(descriptor.digest) as f:
            stream_into(f, writer, on_bytes)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self.layout.open_blob(descriptor.digest)

    # destination
    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        receive_into(self.layout.blob_writer(descriptor), descriptor, source, on_bytes)

    def place_blob(self, descriptor: Descriptor, cached: Path, placement: Placement) -> str:
        """A verified blob of the machine-wide cache into the layout (BlobPlacer)."""
        path = self.layout.blob_path(descriptor.digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return placement.place(cached, dir_fd, path.name, str(self.layout.root))
        finally:
            os.close(dir_fd)

    def stored_manifest(self, digest: str) -> Manifest | None:
        if not self.layout.has_blob(digest):
            return None
        try:
            return self.layout.get_manifest_by_digest(digest)
        except (SealpyError, OSError):  # unreadable or not a manifest: not stored
            return None

    def put_manifest(self, manifest: Manifest) -> None:
        self.layout.put_manifest(manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        self.layout.set_ref(self.name, manifest.descriptor())
