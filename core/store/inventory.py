"""``sealpy inspect --images``: the images inside a built cluster image.

A cluster image carries its images as a distribution registry's storage under
``registry/docker/registry/v2`` (what the cache stage wrote into ``<context>/registry``
and the build file copied in). This reads that tree straight from the image's layer
tars, streamed member by member (a layer is never held in memory, nor unpacked): the
link files (``_manifests/tags/<tag>/current/link``, 71 bytes each) say which tag points
to which manifest, and the manifests themselves (small blobs, bounded) say what each
image is — an index and the platforms it holds, a single-platform image. Tags in
cosign's scheme (``sha256-<hex>.sig``, ``.att``, ``.sbom``) are attachments of the
image with that digest, not images: they are listed with it.

Layers are applied in order, as a container runtime would: a later layer's file
replaces an earlier one, and a whiteout (``.wh.NAME``) removes what the layers below had.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealpy.core.errors import SealpyError, StoreError
from sealpy.core.image.media import Manifest
from sealpy.core.reference import SHA256_RE
from sealpy.core.transport.copy import describe_platform

if TYPE_CHECKING:
    from sealpy.core.store.layout import Store

ROOT = "registry/docker/registry/v2/"
MAX_MANIFEST = 4 << 20  # distribution's own limit on a manifest's size
_TAG_LINK = re.compile(r"repositories/(?P<repo>.+)/_manifests/tags/(?P<tag>[^/]+)/current/link")
_BLOB = re.compile(r"blobs/sha256/[0-9a-f]{2}/(?P<hex>[0-9a-f]{64})/data")
_ATTACHMENT = re.compile(r"sha256-(?P<hex>[0-9a-f]{64})\.(?P<kind>sig|att|sbom)")


@dataclass(frozen=True)
class PlatformEntry:
    platform: str
    digest: str
    present: bool  # the platform's manifest is in the image (a sparse index lacks some)

    def to_json(self) -> dict:
        return {"platform": self.platform, "digest": self.digest, "present": self.present}


@dataclass(frozen=True)
class Attachment:
    kind: str  # sig, att, sbom
    tag: str
    digest: str
    of: str  # the manifest digest it is attached to

    def to_json(self) -> dict:
        return {"kind": self.kind, "tag": self.tag, "digest": self.digest, "of": self.of}


@dataclass(frozen=True)
class ImageEntry:
    """One ``repository:tag`` in the cluster image's registry."""

    repository: str
    tag: str
    digest: str
    media_type: str | None  # None: the manifest is not in the image
    platforms: tuple[PlatformEntry, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(a.digest for a in self.attachments if a.kind == "sig")

    def to_json(self) -> dict:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "media_type": self.media_type,
            "platforms": [p.to_json() for p in self.platforms],
            "signatures": list(self.signatures),
            "attachments": [a.to_json() for a in self.attachments],
        }


@dataclass
class _Tree:
    """What the layers hold under :data:`ROOT`: tag links and manifests by digest."""

    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    blobs: set[str] = field(default_factory=set)

    def whiteout(self, path: str) -> None:
        """A whiteout of ``path`` (relative to :data:`ROOT`; ``""`` is the root itself)."""
        for key in [
            k for k in self.tags if _under(f"repositories/{k[0]}/_manifests/tags/{k[1]}/", path)
        ]:
            del self.tags[key]
        for digest in [d for d in self.blobs if _under(_blob_path(d), path)]:
            self.blobs.discard(digest)
            self.manifests.pop(digest, None)


def _normalize(name: str) -> str:
    """A member name as a path from the image root: ``./a/b`` and ``/a/b`` are ``a/b``."""
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    return "" if name == "." else name


def _under(name: str, path: str) -> bool:
    return not path or name == path or name.startswith(path.rstrip("/") + "/")


def _blob_path(digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"blobs/sha256/{hex_[:2]}/{hex_}/data"


def _read_layer(store: Store, digest: str, tree: _Tree) -> None:
    """Apply one layer to ``tree``, streaming its tar (any compression tarfile reads)."""
    try:
        with store.layout.open_blob(digest) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                name = _normalize(member.name)
                head, _, base = name.rpartition("/")
                if base.startswith(".wh."):
                    target = f"{head}/{base[4:]}" if head else base[4:]
                    if base == ".wh..wh..opq":  # opaque directory: everything below it
                        target = head
                    if (target + "/").startswith(ROOT) or ROOT.startswith(target + "/"):
                        tree.whiteout(target[len(ROOT) :] if target.startswith(ROOT) else "")
                    continue
                if not name.startswith(ROOT) or not member.isfile():
                    continue
                _read_member(tar, member, name[len(ROOT) :], tree)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StoreError(f"layer {digest} cannot be read: {exc}") from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, tree: _Tree) -> None:
    found = _TAG_LINK.fullmatch(path)
    if found:
        if member.size <= 128:
            link = _read(tar, member).decode("ascii", "replace").strip()
            if SHA256_RE.match(link):
                tree.tags[(found["repo"], found["tag"])] = link
        return
    blob = _BLOB.fullmatch(path)
    if not blob:
        return
    digest = f"sha256:{blob['hex']}"
    tree.blobs.add(digest)
    tree.manifests.pop(digest, None)
    if member.size > MAX_MANIFEST:
        return
    data = _read(tar, member)
    if not data.lstrip().startswith(b"{"):
        return
    try:
        manifest = Manifest.parse(data, None, expected_digest=digest, what=digest)
    except (SealpyError, ValueError):
        return  # a config or another JSON blob, not a manifest
    tree.manifests[digest] = manifest


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    return stream.read() if stream is not None else b""


def cluster_images(store: Store, layers: list[str]) -> list[ImageEntry]:
    """Every ``repository:tag`` in the registry tree the ``layers`` (in order) hold,
    sorted, each with its platforms and attachments."""
    tree = _Tree()
    for layer in layers:
        _read_layer(store, layer, tree)
    attached: dict[tuple[str, str], list[Attachment]] = {}
    images: list[tuple[str, str, str]] = []
    for (repository, tag), digest in sorted(tree.tags.items()):
        found = _ATTACHMENT.fullmatch(tag)
        if found:
            of = f"sha256:{found['hex']}"
            attached.setdefault((repository, of), []).append(
                Attachment(found["kind"], tag, digest, of)
            )
        else:
            images.append((repository, tag, digest))
    out = []
    for repository, tag, digest in images:
        manifest = tree.manifests.get(digest)
        platforms: tuple[PlatformEntry, ...] = ()
        covered = [digest]
        if manifest is not None and manifest.is_index:
            platforms = tuple(
                PlatformEntry(describe_platform(c), c.digest, c.digest in tree.manifests)
                for c in manifest.children
            )
            covered += [c.digest for c in manifest.children]
        attachments = tuple(a for d in covered for a in attached.get((repository, d), []))
        out.append(
            ImageEntry(
                repository,
                tag,
                digest,
                manifest.media_type if manifest is not None else None,
                platforms,
                attachments,
            )
        )
    return out
