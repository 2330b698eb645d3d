"""The local image store: an OCI image layout that built, pulled, loaded and merged images
live in, readable by skopeo and umoci as ``oci:<store>:<name>``.

Images are named by full references (``localhost/test:latest``,
``docker.io/library/nginx:1.25``) in the ``org.opencontainers.image.ref.name`` annotation of
``index.json``; an image built without ``-t`` is an entry without a name. The default
place is ``$XDG_DATA_HOME/sealpy/store`` (``~/.local/share/sealpy/store``).

Two locks keep concurrent commands safe: :class:`OCILayout`'s exclusive lock around every
``index.json`` update (no name is lost), and a *writers* lock (``.gc.lock``) that commands
adding blobs hold shared while garbage collection — run by ``rmi`` — needs it exclusive,
so blobs a running build has written but not yet named are never collected.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.errors import (
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
    PlatformNotFoundError,
    StoreError,
)
from sealpy.core.image import media
from sealpy.core.image.compose import canonical_json, parse_document
from sealpy.core.image.media import Descriptor, Manifest, load_json
from sealpy.core.image.walk import is_complete, walk
from sealpy.core.reference import ImageReference, Platform, select_platform
from sealpy.core.transport.blobio import write_bytes_atomically
from sealpy.core.transport.ocilayout import REF_NAME, OCIImageEnd, OCILayout

UNTAGGED = "<none>"
# Docker media types of layers and configs, and their OCI names (same bytes).
_OCI_EQUIVALENT = {
    media.DOCKER_LAYER_GZIP: media.OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": media.OCI_LAYER,
    media.DOCKER_CONFIG: media.OCI_CONFIG,
}
_FOREIGN = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
)


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/sealpy/store``, else ``~/.local/share/sealpy/store``."""
    environ = os.environ if environ is None else environ
    data_home = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "sealpy" / "store"


def store_name(text: str) -> str:
    """The full name an image gets in the store, as buildah names it: a name without a
    registry host becomes ``localhost/<name>``, and ``:latest`` is added without a tag."""
    text = text.strip()
    first, slash, _ = text.partition("/")
    has_host = slash and ("." in first or ":" in first or first == "localhost")
    try:
        return str(ImageReference.parse(text if has_host else f"localhost/{text}"))
    except InvalidReferenceError:
        raise InvalidReferenceError(f"invalid image name {text!r}") from None


def oci_media_type(media_type: str) -> str:
    """A layer or config media type as it must appear in an OCI manifest."""
    if media_type in _FOREIGN:
        raise ManifestError(
            "images with foreign (non-distributable, e.g. Windows base) layers are not supported"
        )
    return _OCI_EQUIVALENT.get(media_type, media_type)


def to_oci(manifest: Manifest, converted: Mapping[str, Manifest]) -> Manifest:
    """``manifest`` with OCI media types, as ``skopeo copy docker://... oci:`` stores it: a
    Docker manifest becomes an OCI manifest (config and layer types mapped, blobs the same),
    a Docker manifest list an OCI index whose entries point at the ``converted`` children
    (original digest → stored manifest). skopeo's ``oci:`` transport only finds OCI-typed
    entries of index.json. A manifest with nothing Docker in it is returned byte for byte
    (its digest may be pinned or signed), even when it leaves out the optional
    ``mediaType`` field.

    A list entry whose child is not in ``converted`` (a platform never pulled) keeps its
    Docker type and digest: that manifest is not in the store."""
    doc = json.loads(manifest.data)
    changed = manifest.media_type in (media.DOCKER_MANIFEST, media.DOCKER_LIST)
    if manifest.is_index:
        entries = []
        for entry in doc["manifests"]:
            child = converted.get(entry.get("digest", ""))
            if child is not None and child.digest != entry.get("digest"):
                entry = {**entry, "mediaType": child.media_type}
                entry.update(digest=child.digest, size=child.size)
                changed = True
            entries.append(entry)
        if not changed:
            return manifest
        doc["manifests"] = entries
        doc["mediaType"] = media.OCI_INDEX
    else:
        config = oci_media_type(doc["config"]["mediaType"])
        layers = [oci_media_type(layer.get("mediaType", "")) for layer in doc["layers"]]
        changed = (
            changed
            or config != doc["config"]["mediaType"]
            or layers != [layer.get("mediaType", "") for layer in doc["layers"]]
        )
        if not changed:
            return manifest
        doc["mediaType"] = media.OCI_MANIFEST
        doc["config"] = {**doc["config"], "mediaType": config}
        doc["layers"] = [
            {**layer, "mediaType": t} for t, layer in zip(layers, doc["layers"], strict=True)
        ]
    return parse_document(doc)


class OCIStoreEnd(OCIImageEnd):
    """An image of the store as a copy destination: manifests are stored with OCI media
    types (:func:`to_oci`), so the store is an OCI layout skopeo and umoci read, and the
    name points at the converted manifest. ``converted`` maps the source's manifest
    digests to what was stored — this copy's conversions, plus earlier ones (``earlier``:
    Docker digest → stored digest) whose manifest the store still has, so pulling a
    second platform of a Docker list keeps the first one."""

    def __init__(
        self,
        layout: OCILayout,
        name: str,
        *,
        earlier: Mapping[str, str] | None = None,
        record: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(layout, name)
        self.converted: dict[str, Manifest] = {}
        self.earlier = dict(earlier or {})
        self.record = record
        self._lock = threading.Lock()

    def _known(self, index: Manifest) -> dict[str, Manifest]:
        """This copy's conversions, and earlier ones for the children of ``index``."""
        known = dict(self.converted)
        for child in index.children:
            stored = self.earlier.get(child.digest)
            if child.digest in known or stored is None or not self.layout.has_blob(stored):
                continue
            with contextlib.suppress(ManifestError, OSError):
                data = self.layout.blob_path(stored).read_bytes()
                known[child.digest] = Manifest.parse(data, expected_digest=stored)
        return known

    def put_manifest(self, manifest: Manifest) -> None:
        with self._lock:
            known = self._known(manifest) if manifest.is_index else self.converted
            stored = to_oci(manifest, known)
            self.converted[manifest.digest] = stored
        self.layout.put_manifest(stored)
        if self.record is not None and stored.digest != manifest.digest:
            self.record(manifest.digest, stored.digest)

    def stored(self, manifest: Manifest) -> Manifest:
        return self.converted.get(manifest.digest, manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        super().set_tag(tag, self.stored(manifest))


@dataclass(frozen=True)
class StoredImage:
    """An entry of the store: its name (``None`` when untagged) and what it points to."""

    name: str | None
    descriptor: Descriptor

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def display(self) -> str:
        return self.name or f"{UNTAGGED}@{self.digest}"


class StoreLayout(OCILayout):
    """The store's OCI layout, which also keeps entries without a name (untagged builds)."""

    def entries(self) -> list[StoredImage]:
        out = []
        for entry in self._read_index()["manifests"]:
            try:
                descriptor = Descriptor.from_json(entry)
            except ManifestError:
                continue
            out.append(StoredImage((entry.get("annotations") or {}).get(REF_NAME), descriptor))
        return out

    def add_untagged(self, descriptor: Descriptor) -> None:
        with self.locked():
            data = self._read_index()
            present = any(
                m.get("digest") == descriptor.digest
                and not (m.get("annotations") or {}).get(REF_NAME)
                for m in data["manifests"]
            )
            if not present:
                data["manifests"].append(descriptor.to_json())
                self._write_index(data)

    def remove_untagged(self, digest: str) -> bool:
        with self.locked():
            data = self._read_index()
            kept = [
                m
                for m in data["manifests"]
                if m.get("digest") != digest or (m.get("annotations") or {}).get(REF_NAME)
            ]
            if len(kept) == len(data["manifests"]):
                return False
            data["manifests"] = kept
            self._write_index(data)
            return True


class Store:
    """The local image store at ``root`` (created on first write)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root if root is not None else default_root()).absolute()
        self.layout = StoreLayout(self.root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- locking ---------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while adding blobs that are not named yet (build, pull, load, merge)."""
        self.layout.ensure()
        with open(self.root / ".gc.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def destination(self, name: str) -> OCIStoreEnd:
        """Where a copy puts an image named ``name`` (``""``: unnamed) into the store."""
        return OCIStoreEnd(
            self.layout,
            name,
            earlier=self._read_record(self.CONVERTED),
            record=self.record_converted,
        )

    def temp_dir(self) -> Path:
        """Scratch space next to the blobs (same file system, removed by the caller)."""
        path = self.root / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- reading ---------------------------------------------------------------------------

    def images(self) -> list[StoredImage]:
        if not self.layout.exists():
            return []
        return self.layout.entries()

    def find(self, text: str) -> StoredImage | None:
        """An image by name (see :meth:`find_name`) or else by ID (a prefix of its manifest
        or config digest); ``None`` when absent."""
        return self.find_name(text) or self._by_id(text.strip(), self.images())

    def find_name(self, text: str) -> StoredImage | None:
        """An image by name: as given, buildah-normalised (``test`` is
        ``localhost/test:latest``), or Docker-normalised (``docker.io/library/test:latest``)."""
        by_name = {i.name: i for i in self.images() if i.name}
        candidates = [text.strip()]
        for normalise in (store_name, lambda t: str(ImageReference.parse(t))):
            with contextlib.suppress(InvalidReferenceError):
                candidates.append(normalise(text))
        for candidate in candidates:
            if candidate in by_name:
                return by_name[candidate]
        return None

    def _by_id(self, text: str, images: list[StoredImage]) -> StoredImage | None:
        prefix = text.removeprefix("sha256:").lower()
        if len(prefix) < 3 or any(c not in "0123456789abcdef" for c in prefix):
            return None
        matches: dict[str, StoredImage] = {}
        for image in images:
            ids = {image.digest, self.image_id(image)}
            if any(i.removeprefix("sha256:").startswith(prefix) for i in ids):
                matches.setdefault(image.digest, image)
        if len(matches) > 1:
            raise StoreError(f"image ID {text} is ambiguous: it matches {len(matches)} images")
        return next(iter(matches.values()), None)

    def get(self, text: str) -> StoredImage:
        found = self.find(text)
        if found is None:
            raise StoreError(f"image {text} is not in the store {self.root}")
        return found

    def names_of(self, digest: str) -> list[str]:
        return sorted(i.name for i in self.images() if i.name and i.digest == digest)

    def manifest(self, image: StoredImage | Descriptor) -> Manifest:
        descriptor = image.descriptor if isinstance(image, StoredImage) else image
        try:
            data = self.layout.read_blob(descriptor.digest)
        except NotFoundError:
            raise StoreError(f"the store is missing manifest {descriptor.digest}") from None
        return Manifest.parse(
            data,
            descriptor.media_type or None,
            expected_digest=descriptor.digest,
            what=descriptor.digest,
        )

    def config(self, manifest: Manifest) -> dict:
        try:
            return load_json(self.layout.read_blob(manifest.config.digest))
        except NotFoundError:
            raise StoreError(f"the store is missing config {manifest.config.digest}") from None
        except ValueError:
            raise StoreError(f"config {manifest.config.digest} is not valid JSON") from None

    def image_id(self, image: StoredImage) -> str:
        """What ``images`` shows as IMAGE ID: the config digest (buildah's image ID), or
        the index digest for a multi-platform image."""
        try:
            manifest = self.manifest(image)
        except (StoreError, ManifestError):
            return image.digest
        return manifest.digest if manifest.is_index else manifest.config.digest

    def is_complete(self, manifest: Manifest) -> bool:
        """Whether every blob (and, for an index, every child) is in the store."""
        return is_complete(manifest, self.stored_child, self.layout.has_blob)

    def stored_child(self, child: Descriptor) -> Manifest | None:
        """A child manifest if the store has it (an index may be stored for some
        platforms only)."""
        return self.manifest(child) if self.layout.has_blob(child.digest) else None

    def for_platform(self, manifest: Manifest, platform: Platform | None) -> Manifest | None:
        """The image manifest for ``platform`` (``None``: the host's) if it is in the store
        whole; a single-platform manifest is returned when it matches (or ``platform`` is
        ``None``)."""
        if not manifest.is_index:
            if platform is None or self.platform_of(manifest) == platform:
                return manifest if self.is_complete(manifest) else None
            found = select_platform(platform, [self._platform_dict(manifest)])
            return manifest if found is not None and self.is_complete(manifest) else None
        wanted = platform or Platform.host()
        children = list(manifest.children)
        index = select_platform(wanted, [c.platform or {} for c in children])
        if index is None:
            return None
        child = children[index]
        if not self.layout.has_blob(child.digest):
            return None
        chosen = self.manifest(child)
        if chosen.is_index:
            return self.for_platform(chosen, wanted)
        return chosen if self.is_complete(chosen) else None

    def require_platform(self, image: StoredImage, platform: Platform | None) -> Manifest:
        manifest = self.manifest(image)
        chosen = self.for_platform(manifest, platform)
        if chosen is None:
            wanted = platform or Platform.host()
            raise PlatformNotFoundError(f"{image.display}: no {wanted} image in the store")
        return chosen

    def _platform_dict(self, manifest: Manifest) -> dict:
        config = self.config(manifest)
        return {k: config.get(k, "") for k in ("os", "architecture", "variant")}

    def platform_of(self, manifest: Manifest) -> Platform:
        return Platform.from_oci(self._platform_dict(manifest))

    def size(self, manifest: Manifest) -> int:
        """Bytes the image takes in a registry: manifest, config and (compressed) layers;
        for an index, what the store holds of it."""
        return sum(
            node.manifest.size + sum(b.size for b in node.manifest.blobs)
            for node in walk(manifest, self.stored_child)
        )

    # --- writing ---------------------------------------------------------------------------

    def put_json(self, document: dict, media_type: str) -> Descriptor:
        data = canonical_json(document)
        return Descriptor(media_type, self.layout.put_blob_bytes(data), len(data))

    def put_manifest(self, document: dict) -> Manifest:
        manifest = parse_document(document)
        self.layout.put_manifest(manifest)
        return manifest

    def name(self, name: str, manifest: Manifest | Descriptor) -> None:
        descriptor = manifest.descriptor() if isinstance(manifest, Manifest) else manifest
        self.layout.set_ref(name, descriptor)

    def add_untagged(self, manifest: Manifest) -> None:
        self.layout.add_untagged(manifest.descriptor())

    def untag(self, image: StoredImage) -> None:
        if image.name:
            self.layout.remove_ref(image.name)
        else:
            self.layout.remove_untagged(image.digest)

    # --- small records next to the layout ---------------------------------------------------

    # {registry: {digest: repository}}: a repository of that registry that has the blob
    # (the last one it was pushed to), offered as a cross-repository mount source.
    PUSHED = ".sealpy-pushed.json"
    # {Docker manifest digest: digest of the OCI manifest stored for it}
    CONVERTED = ".sealpy-converted.json"

    def _read_record(self, name: str) -> dict:
        try:
            data = json.loads((self.root / name).read_text())
        except (FileNotFoundError, ValueError):
            return {}  # a lost or damaged record only costs uploads or a re-pull
        return data if isinstance(data, dict) else {}

    def _write_record(self, name: str, data: dict) -> None:
        write_bytes_atomically(self.root / name, canonical_json(data))

    def pushed_blobs(self, registry: str) -> dict[str, str]:
        """digest → a repository of ``registry`` a push from this store put it in."""
        entries = self._read_record(self.PUSHED).get(registry)
        return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}

    def record_pushed(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        """Best effort: the push has succeeded, and a store we may not write to (read-only,
        another user's) must not turn it into a failure."""
        with contextlib.suppress(OSError), self.layout.locked():
            data = self._read_record(self.PUSHED)
            known = data.get(registry)
            entries = known if isinstance(known, dict) else {}
            entries.update(dict.fromkeys(digests, repository))
            data[registry] = entries
            self._write_record(self.PUSHED, data)

    def record_converted(self, original: str, stored: str) -> None:
        with self.layout.locked():
            data = self._read_record(self.CONVERTED)
            data[original] = stored
            self._write_record(self.CONVERTED, data)

    def _prune_records(self, keep: set[str]) -> None:
        """Forget blobs and manifests the store no longer has (under the layout lock)."""
        pushed = self._read_record(self.PUSHED)
        if pushed:
            pruned = {
                registry: {d: r for d, r in entries.items() if d in keep}
                for registry, entries in pushed.items()
                if isinstance(entries, dict)
            }
            self._write_record(self.PUSHED, {k: v for k, v in pruned.items() if v})
        converted = self._read_record(self.CONVERTED)
        if converted:
            self._write_record(self.CONVERTED, {k: v for k, v in converted.items() if v in keep})

    # --- garbage collection ------------------------------------------------------------------

    def reachable(self) -> set[str]:
        """Digests of everything a named or untagged image uses. An entry the store lacks
        or cannot read is kept as found (never a reason to fail or to delete more)."""
        seen: set[str] = set()
        for image in self.images():
            seen.add(image.descriptor.digest)
            root = self._readable_manifest(image.descriptor)
            if root is None:
                continue
            for node in walk(root, self._readable_manifest):
                found = node.manifest
                seen.update(d.digest for d in (found.children if found.is_index else found.blobs))
        return seen

    def _readable_manifest(self, descriptor: Descriptor) -> Manifest | None:
        if descriptor.media_type not in media.MANIFEST_TYPES and descriptor.media_type != "":
            return None
        if not self.layout.has_blob(descriptor.digest):
            return None
        try:
            return self.manifest(descriptor)
        except (StoreError, ManifestError):
            return None

    def gc(self) -> int | None:
        """Delete blobs no named or untagged image uses, and leftovers of interrupted
        writes. Returns how many blobs went, or ``None`` if a writer is running (then
        nothing is deleted: its blobs may not be named yet)."""
        if not self.layout.exists():
            return 0
        with open(self.root / ".gc.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                with self.layout.locked():
                    keep = self.reachable()
                    removed = 0
                    for digest in list(self.layout.blob_digests()):
                        if digest not in keep:
                            self.layout.blob_path(digest).unlink(missing_ok=True)
                            removed += 1
                    self._prune_records(keep)
                for leftover in (".ingest", ".tmp"):
                    shutil.rmtree(self.root / leftover, ignore_errors=True)
                return removed
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
