"""The Docker distribution registry's on-disk layout (filesystem storage driver).

A directory written here is served as it is by a stock ``docker-registry`` whose
``rootdirectory`` is :attr:`DistributionLayout.root`::

    docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data              every blob and manifest
    docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link  config and layers of the repo
      .../_manifests/revisions/sha256/<hex>/link                      every manifest stored
      .../_manifests/tags/<tag>/current/link                          what the tag points to
      .../_manifests/tags/<tag>/index/sha256/<hex>/link               every digest it pointed to
      .../_uploads/<id>/data                                          unfinished uploads

A link file holds exactly ``sha256:<hex>``, no newline. Blobs reach their final path only
once verified; links are written after the content they point to, and the tag last, so
an interrupted run leaves a tree that serves whatever was complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sealpy.core.errors import NotFoundError
from sealpy.core.process import pid_alive
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.blobio import (
    BlobWriter,
    receive_into,
    stream_into,
    write_bytes_atomically,
)
from sealpy.core.transport.media import Descriptor, Manifest, digest_hex

if TYPE_CHECKING:
    from sealpy.core.transport.copy import ImageSource

V2 = Path("docker", "registry", "v2")
PARTIAL_PREFIX = "sealpy-"


def _link(digest: str) -> bytes:
    return digest.encode()


class DistributionLayout:
    """A registry storage root (the directory holding ``docker/``)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root).absolute()
        self.v2 = self.root / V2
        self.durable = durable

    def __repr__(self) -> str:
        return f"DistributionLayout({str(self.root)!r})"

    def exists(self) -> bool:
        return self.v2.is_dir()

    def repository(self, name: str) -> DistributionRepository:
        return DistributionRepository(self, name)

    def remove_abandoned_writes(self) -> int:
        """Remove temporary link files (``.<name>.<pid>-<thread>.tmp``) that a killed
        process left behind; those of live processes stay. Returns how many went."""
        removed = 0
        repositories = self.v2 / "repositories"
        if not repositories.is_dir():
            return 0
        for leftover in repositories.rglob(".*.tmp"):
            writer = leftover.name.rsplit(".", 2)[-2].split("-", 1)[0]
            if writer.isdigit() and pid_alive(int(writer)):
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    # --- blobs -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        hex_ = digest_hex(digest)
        return self.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

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

    def blob_digests(self) -> Iterator[str]:
        base = self.v2 / "blobs" / "sha256"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            for entry in sorted(prefix.iterdir()) if prefix.is_dir() else ():
                digest = f"sha256:{entry.name}"
                if SHA256_RE.match(digest) and (entry / "data").is_file():
                    yield digest

    def _uploads(self, repository: str) -> Path:
        return self.v2 / "repositories" / repository / "_uploads"

    def blob_writer(self, repository: str, descriptor: Descriptor) -> BlobWriter:
        """A writer for a blob of known digest. Its partial file is named after the digest,
        under the repository's ``_uploads``, so an interrupted download resumes next run."""
        partial = (
            self._uploads(repository) / f"{PARTIAL_PREFIX}{digest_hex(descriptor.digest)}" / "data"
        )
        return BlobWriter(
            partial,
            self.blob_path,
            digest=descriptor.digest,
            size=descriptor.size,
            media_type=descriptor.media_type,
            durable=self.durable,
        )

    def new_blob_writer(self, repository: str, media_type: str = "") -> BlobWriter:
        """A writer for a blob whose digest is known only at the end (compressed on the fly)."""
        partial = self._uploads(repository) / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}" / "data"
        return BlobWriter(
            partial, self.blob_path, media_type=media_type, durable=self.durable, resume=False
        )

    def put_blob_bytes(self, data: bytes) -> str:
        from sealpy.core.transport.media import sha256_digest

        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.is_file():
            write_bytes_atomically(path, data, durable=self.durable)
        return digest

    # --- links ---------------------------------------------------------------------------

    def _repo(self, repository: str) -> Path:
        return self.v2 / "repositories" / repository

    def layer_link(self, repository: str, digest: str) -> Path:
        return self._repo(repository) / "_layers" / "sha256" / digest_hex(digest) / "link"

    def revision_link(self, repository: str, digest: str) -> Path:
        return (
            self._repo(repository)
            / "_manifests"
            / "revisions"
            / "sha256"
            / digest_hex(digest)
            / "link"
        )

    def tag_dir(self, repository: str, tag: str) -> Path:
        return self._repo(repository) / "_manifests" / "tags" / tag

    def _write_link(self, path: Path, digest: str) -> None:
        try:
            if path.read_bytes() == _link(digest):
                return
        except OSError:
            pass
        write_bytes_atomically(path, _link(digest))

    def link_blob(self, repository: str, digest: str) -> None:
        self._write_link(self.layer_link(repository, digest), digest)

    def put_manifest(self, repository: str, manifest: Manifest) -> None:
        """Store a manifest's bytes and its revision link (its blobs' links first)."""
        for blob in manifest.blobs:
            self.link_blob(repository, blob.digest)
        path = self.blob_path(manifest.digest)
        if not path.is_file():
            write_bytes_atomically(path, manifest.data, durable=self.durable)
        self._write_link(self.revision_link(repository, manifest.digest), manifest.digest)

    def set_tag(self, repository: str, tag: str, digest: str) -> None:
        tag_dir = self.tag_dir(repository, tag)
        self._write_link(tag_dir / "index" / "sha256" / digest_hex(digest) / "link", digest)
        self._write_link(tag_dir / "current" / "link", digest)

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def read_link(path: Path) -> str | None:
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if SHA256_RE.match(text) else None

    def resolve(self, repository: str, reference: str) -> str | None:
        """The digest a tag points to (or the digest itself if stored in the repository)."""
        if SHA256_RE.match(reference):
            return reference if self.read_link(self.revision_link(repository, reference)) else None
        return self.read_link(self.tag_dir(repository, reference) / "current" / "link")

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        digest = self.resolve(repository, reference)
        if digest is None or not self.has_blob(digest):
            raise NotFoundError(f"{repository}:{reference} is not in {self.root}")
        return Manifest.parse(
            self.read_blob(digest), expected_digest=digest, what=f"{repository}@{digest}"
        )

    def stored_manifest(self, repository: str, digest: str) -> Manifest | None:
        """A manifest already stored in ``repository`` with that digest, if intact."""
        if self.read_link(self.revision_link(repository, digest)) != digest:
            return None
        try:
            return Manifest.parse(self.read_blob(digest), expected_digest=digest)
        except Exception:
            return None

    def repositories(self) -> list[str]:
        """Every repository name (a directory holding ``_manifests``)."""
        base = self.v2 / "repositories"
        found: list[str] = []
        if not base.is_dir():
            return found
        for dirpath, dirnames, _files in os.walk(base):
            if "_manifests" in dirnames:
                found.append(Path(dirpath).relative_to(base).as_posix())
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(found)

    def tags(self, repository: str) -> list[str]:
        tags = self._repo(repository) / "_manifests" / "tags"
        return sorted(p.name for p in tags.iterdir()) if tags.is_dir() else []

    def _linked(self, directory: Path) -> list[str]:
        base = directory / "sha256"
        if not base.is_dir():
            return []
        return sorted(
            f"sha256:{p.name}" for p in base.iterdir() if SHA256_RE.match(f"sha256:{p.name}")
        )

    def revisions(self, repository: str) -> list[str]:
        return self._linked(self._repo(repository) / "_manifests" / "revisions")

    def layer_links(self, repository: str) -> list[str]:
        return self._linked(self._repo(repository) / "_layers")


class DistributionRepository:
    """One repository of a :class:`DistributionLayout`, as a copy destination (and source)."""

    def __init__(self, layout: DistributionLayout, name: str) -> None:
        self.layout = layout
        self.name = name

    def __str__(self) -> str:
        return f"{self.layout.root}:{self.name}"

    # destination
    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Create (or resume) the blob's partial file, let ``source`` fill it, commit it."""
        receive_into(self.layout.blob_writer(self.name, descriptor), descriptor, source, on_bytes)

    def stored_manifest(self, digest: str) -> Manifest | None:
        return self.layout.stored_manifest(self.name, digest)

    def put_manifest(self, manifest: Manifest) -> None:
        self.layout.put_manifest(self.name, manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        self.layout.set_tag(self.name, tag, manifest.digest)

    # source
    def get_manifest(self, reference: str) -> Manifest:
        return self.layout.get_manifest(self.name, reference)

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
