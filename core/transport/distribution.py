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

The tree may come with a build context from anyone: every read, write and removal below
the root goes through :class:`ConfinedRoot`, which never follows a symlink there. A write
through one is refused with an error naming it; a read treats it as absent.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sealpy.core.errors import NotFoundError, SealpyError
from sealpy.core.image.media import Descriptor, Manifest, digest_hex
from sealpy.core.process import pid_alive
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.blobio import (
    BlobWriter,
    receive_into,
    stream_into,
    write_bytes_atomically,
)
from sealpy.core.transport.confined import ConfinedRoot, SymlinkRefusedError, find_symlinks

if TYPE_CHECKING:
    from sealpy.core.transport.blobcache import Placement
    from sealpy.core.transport.copy import ImageSource, Received

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
        self.confined = ConfinedRoot(self.root)

    def __repr__(self) -> str:
        return f"DistributionLayout({str(self.root)!r})"

    def exists(self) -> bool:
        return self.confined.is_dir(self.v2)

    def refuse_symlinks(self) -> None:
        """Raise :class:`SymlinkRefusedError` naming every symlink in the tree: for a
        writer that cannot be confined itself (a stock registry follows symlinks), checked
        before it starts."""
        links = find_symlinks(self.root, self.v2)
        if links:
            shown = ", ".join(
                f"{p.relative_to(self.root)} -> {_readlink(p)}" for p in links[:3]
            ) + (f" and {len(links) - 3} more" if len(links) > 3 else "")
            raise SymlinkRefusedError(
                f"registry directory {self.root} holds symlinks ({shown}); a registry "
                "directory holds none, and nothing is written through one: remove them, "
                "e.g. with `sealpy registry verify --fix`"
            )

    def repository(self, name: str) -> DistributionRepository:
        return DistributionRepository(self, name)

    def remove_abandoned_writes(self) -> int:
        """Remove temporary link files (``.<name>.<pid>-<thread>.tmp``) that a killed
        process left behind; those of live processes stay. Returns how many went."""
        removed = 0
        repositories = self.v2 / "repositories"
        if not self.confined.is_dir(repositories):
            return 0
        for leftover in self.temporary_files(repositories):
            writer = leftover.name.rsplit(".", 2)[-2].split("-", 1)[0]
            if writer.isdigit() and pid_alive(int(writer)):
                continue
            self.confined.remove(leftover)
            removed += 1
        return removed

    def temporary_files(self, directory: Path) -> list[Path]:
        """The temporary link files (``.<name>.<writer>.tmp``) under ``directory``, found
        without following a symlink."""
        found: list[Path] = []
        try:
            with self.confined.directory(directory, create=False) as top:
                for dirpath, _dirs, files, dir_fd in os.fwalk(".", dir_fd=top):
                    for name in files:
                        if name.startswith(".") and name.endswith(".tmp"):
                            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode):
                                found.append(Path(os.path.normpath(directory / dirpath / name)))
        except (OSError, SealpyError):
            return []
        return sorted(found)

    # --- blobs -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        hex_ = digest_hex(digest)
        return self.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data"

    def has_blob(self, digest: str) -> bool:
        return self.confined.is_file(self.blob_path(digest))

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return self.confined.open_read(self.blob_path(digest))
        except (OSError, SealpyError):
            raise NotFoundError(f"blob {digest} is not in {self.root}") from None

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    def blob_digests(self) -> Iterator[str]:
        base = self.v2 / "blobs" / "sha256"
        for prefix in self.confined.listdir(base, dirs_only=True):
            for name in self.confined.listdir(base / prefix, dirs_only=True):
                digest = f"sha256:{name}"
                if SHA256_RE.match(digest) and self.confined.is_file(base / prefix / name / "data"):
                    yield digest

    def _uploads(self, repository: str) -> Path:
        return self.v2 / "repositories" / repository / "_uploads"

    def blob_writer(
        self,
        repository: str,
        descriptor: Descriptor,
        wait: Callable[[], None] | None = None,
    ) -> BlobWriter:
        """A writer for a blob of known digest. Its partial file is named after the digest,
        under the repository's ``_uploads``, so an interrupted download resumes next run;
        another process writing the same partial is waited for (``wait`` is called
        between tries: see :class:`BlobWriter`)."""
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
            confined=self.confined,
            wait=wait,
        )

    def new_blob_writer(self, repository: str, media_type: str = "") -> BlobWriter:
        """A writer for a blob whose digest is known only at the end (compressed on the fly)."""
        partial = self._uploads(repository) / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}" / "data"
        return BlobWriter(
            partial,
            self.blob_path,
            media_type=media_type,
            durable=self.durable,
            resume=False,
            confined=self.confined,
        )

    def put_blob_bytes(self, data: bytes) -> str:
        from sealpy.core.image.media import sha256_digest

        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not self.confined.is_file(path):
            write_bytes_atomically(path, data, durable=self.durable, confined=self.confined)
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

    def write_link(self, path: Path, digest: str) -> None:
        """Make the link file ``path`` hold ``digest`` (written atomically: a reader, or
        another writer, sees the old content or the new, never a part)."""
        try:
            if self.confined.read_bytes(path) == _link(digest):
                return
        except (OSError, SealpyError):
            pass
        write_bytes_atomically(path, _link(digest), confined=self.confined)

    def link_blob(self, repository: str, digest: str) -> None:
        self.write_link(self.layer_link(repository, digest), digest)

    def put_manifest(self, repository: str, manifest: Manifest) -> None:
        """Store a manifest's bytes and its revision link (its blobs' links first)."""
        for blob in manifest.blobs:
            self.link_blob(repository, blob.digest)
        path = self.blob_path(manifest.digest)
        if not self.confined.is_file(path):
            write_bytes_atomically(
                path, manifest.data, durable=self.durable, confined=self.confined
            )
        self.write_link(self.revision_link(repository, manifest.digest), manifest.digest)

    def set_tag(self, repository: str, tag: str, digest: str) -> None:
        tag_dir = self.tag_dir(repository, tag)
        self.write_link(tag_dir / "index" / "sha256" / digest_hex(digest) / "link", digest)
        self.write_link(tag_dir / "current" / "link", digest)

    # --- reading -------------------------------------------------------------------------

    def read_link(self, path: Path) -> str | None:
        """The digest a link file holds; None when it holds none (see :meth:`check_link`)."""
        return self.check_link(path)[0]

    def check_link(self, path: Path) -> tuple[str | None, str]:
        """``(digest, "")`` for a link file holding exactly ``sha256:<64 hex>``, else
        ``(None, why)``: ``missing``, ``empty``, ``malformed`` or ``unreadable``. Strict,
        as the registry reads it (no whitespace allowed): a registry that ran out of disk
        leaves empty links, and answers 500 for anything that needs one."""
        try:
            data = self.confined.read_bytes(path)
        except FileNotFoundError:
            return None, "missing"
        except (OSError, SealpyError):
            return None, "unreadable"
        if not data:
            return None, "empty"
        text = data.decode("ascii", errors="replace")
        return (text, "") if SHA256_RE.match(text) else (None, "malformed")

    def resolve(self, repository: str, reference: str) -> str | None:
        """The digest a tag points to (or the digest itself if stored in the repository)."""
        if SHA256_RE.match(reference):
            path = self.revision_link(repository, reference)
            return reference if self._read_settled_link(path) else None
        return self._read_settled_link(self.tag_dir(repository, reference) / "current" / "link")

    def _read_settled_link(self, path: Path) -> str | None:
        """:meth:`read_link`, looking again a few times (70 ms in all) at an empty link: a
        stock registry (``sync``'s, possibly another run's on this directory) rewrites a
        link in place — truncate, then write — so a reader can catch it empty."""
        digest, why = self.check_link(path)
        for pause in (0.01, 0.02, 0.04):
            if why != "empty":
                break
            time.sleep(pause)
            digest, why = self.check_link(path)
        return digest

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
        except (SealpyError, OSError):  # unreadable or not a manifest: not stored
            return None

    def repositories(self, *, unfinished: bool = False) -> list[str]:
        """Every repository name (a directory holding ``_manifests``; with ``unfinished``
        also one holding only ``_layers``: a run failed before its first manifest)."""
        base = self.v2 / "repositories"
        found: list[str] = []
        try:
            with self.confined.directory(base, create=False) as top:
                # By descriptors, never into a symlink: a linked _manifests is no repository.
                for dirpath, dirnames, _files, dir_fd in os.fwalk(".", dir_fd=top):
                    real = [d for d in dirnames if _is_real_dir(d, dir_fd)]
                    if "_manifests" in real or (unfinished and "_layers" in real):
                        found.append(Path(os.path.normpath(dirpath)).as_posix())
                    dirnames[:] = [d for d in real if not d.startswith("_")]
        except (OSError, SealpyError):
            return []
        return sorted(found)

    def tags(self, repository: str) -> list[str]:
        return self.confined.listdir(self._repo(repository) / "_manifests" / "tags")

    def _linked(self, directory: Path) -> list[str]:
        names = self.confined.listdir(directory / "sha256")
        return [f"sha256:{n}" for n in names if SHA256_RE.match(f"sha256:{n}")]

    def revisions(self, repository: str) -> list[str]:
        return self._linked(self._repo(repository) / "_manifests" / "revisions")

    def layer_links(self, repository: str) -> list[str]:
        return self._linked(self._repo(repository) / "_layers")

    def tag_history(self, repository: str, tag: str) -> list[str]:
        """Every digest the tag has pointed to (its ``index`` links' directory names)."""
        return self._linked(self.tag_dir(repository, tag) / "index")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _is_real_dir(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class DistributionRepository:
    """One repository of a :class:`DistributionLayout`, as a copy destination (and source)."""

    def __init__(self, layout: DistributionLayout, name: str) -> None:
        self.layout = layout
        self.name = name

    def __str__(self) -> str:
        return f"{self.layout.root}:{self.name}"

    @property
    def blob_scope(self) -> tuple[str, str]:
        """Every repository of a directory shares its blobs (SharedBlobStore)."""
        return ("distribution", str(self.layout.root))

    # destination
    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def receive_blob(
        self,
        descriptor: Descriptor,
        source: ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Received | None:
        """Create (or resume) the blob's partial file, let ``source`` fill it, commit it.
        ``None``: fetched from ``source``; :attr:`Received.REUSED`: another process landed
        it while this one waited for the partial (a subclass with a cache of its own may
        answer that too)."""
        from sealpy.core.transport.copy import Received

        # While another process holds the partial, on_bytes(0) lets an interrupted run
        # stop waiting (it raises once the copy is cancelled).
        wait = (lambda: on_bytes(0)) if on_bytes is not None else None
        writer = self.layout.blob_writer(self.name, descriptor, wait)
        if receive_into(writer, descriptor, source, on_bytes):
            return None
        return Received.REUSED

    def place_blob(self, descriptor: Descriptor, cached: Path, placement: Placement) -> str:
        """A verified blob of the machine-wide cache into the directory (BlobPlacer)."""
        path = self.layout.blob_path(descriptor.digest)
        with self.layout.confined.directory(path.parent, create=True) as dir_fd:
            return placement.place(cached, dir_fd, path.name, str(self.layout.root))

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
