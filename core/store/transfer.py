"""Moving images in and out of the local store: pull, push, save, load.

Pull, push and load are the copy engine (:mod:`sealpy.core.transport.copy`) between the
store's OCI layout and another end — a registry, an ``oci-archive``, a
``docker-archive`` — so blobs are streamed, verified, fetched once and skipped when the
destination has them. Push asks the registry (HEAD) before sending a blob, and mounts a
blob from another repository of the same registry when the store knows one that has it.
Save writes an archive directly: a deterministic tar, written next to the target and
renamed into place when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from sealpy.core.errors import ContextError, InvalidReferenceError, SealpyError, StoreError
from sealpy.core.image import config as image_config
from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.image.walk import walk
from sealpy.core.progress import ProgressReporter
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.store.layout import Store, StoredImage, store_name
from sealpy.core.transport.archive import DockerArchiveSource, OCIArchiveSource, TarIndex
from sealpy.core.transport.blobio import CHUNK
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.ocilayout import REF_NAME
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination

ArchiveFormat = Literal["oci-archive", "docker-archive"]
FORMATS: tuple[ArchiveFormat, ...] = ("oci-archive", "docker-archive")


def _raise_first(outcome) -> None:
    if outcome.failures:
        raise outcome.failures[0].error


# --- pull --------------------------------------------------------------------------------


def pull(
    store: Store,
    ref: ImageReference,
    client: RegistryClient,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    progress: ProgressReporter | None = None,
    max_parallel: int = 8,
) -> StoredImage:
    """Copy ``ref`` from its registry into the store, named by its full reference. An
    index is stored (with OCI media types) with the manifests and blobs of the chosen
    platforms."""
    name = str(ref)
    job = CopyJob(
        label=name,
        source=client.repository(ref),
        reference=ref.reference,
        destination=store.destination(name),  # Docker media types become OCI ones
        tag=ref.tag or ref.digest,  # any value: the store names the image `name`
    )
    with store.writing():
        outcome = copy_images(
            [job],
            platforms=tuple(platforms) or (Platform.host(),),
            all_platforms=all_platforms,
            progress=progress,
            max_parallel=max_parallel,
        )
    _raise_first(outcome)
    return store.get(name)


def ensure_image(
    store: Store,
    text: str,
    platform: Platform | None,
    client: Callable[[], RegistryClient],
    *,
    echo: Callable[[str], None] | None = None,
    all_platforms: bool = False,
    max_parallel: int = 8,
) -> StoredImage:
    """The stored image ``text`` if the store has it whole for ``platform`` (``None``: any
    single-platform image, or the host's child of an index); else pulled (as buildah's
    default pull policy, "missing"): that platform, or every one with ``all_platforms``."""
    found = store.find(text)
    if found is not None and store.for_platform(store.manifest(found), platform) is not None:
        return found
    ref = ImageReference.parse(text)
    if echo:
        echo(f"Trying to pull {ref}...")
    return pull(
        store,
        ref,
        client(),
        platforms=(platform or Platform.host(),),
        all_platforms=all_platforms,
        max_parallel=max_parallel,
    )


# --- push --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    destination: str
    digest: str
    uploaded: int
    mounted: int
    present: int


def mount_sources(store: Store, destination: ImageReference) -> dict[str, str]:
    """digest → a repository of the destination's registry that has it, as far as the
    store knows: where earlier pushes put it, and images named after that registry
    (pulled from it)."""
    out = {
        digest: repository
        for digest, repository in store.pushed_blobs(destination.registry).items()
        if repository != destination.repository
    }
    for image in store.images():
        if not image.name:
            continue
        try:
            ref = ImageReference.parse(image.name)
        except SealpyError:
            continue
        if ref.registry != destination.registry or ref.repository == destination.repository:
            continue
        try:
            top = store.manifest(image)
        except SealpyError:
            continue
        for node in walk(top, store.stored_child):
            for blob in node.manifest.blobs:
                out.setdefault(blob.digest, ref.repository)
    return out


def push(
    store: Store,
    image: StoredImage,
    destination: ImageReference,
    client: RegistryClient,
    *,
    progress: ProgressReporter | None = None,
) -> PushResult:
    """Push a stored image (every platform it has) to ``destination``."""
    manifest = store.manifest(image)
    if not store.is_complete(manifest):
        raise StoreError(
            f"{image.display} is not complete in the store (an index pulled for some platforms "
            "only); pull it with --all first"
        )
    target = RemotePushDestination(
        client.repository(destination), mounts=mount_sources(store, destination)
    )
    job = CopyJob(
        label=str(destination),
        source=store.layout.image(image.name or ""),
        reference=image.digest,
        destination=target,
        tag=destination.tag,
    )
    outcome = copy_images([job], platforms=(), all_platforms=True, progress=progress)
    _raise_first(outcome)
    result = outcome.results[0]
    blobs: dict[str, int] = {}
    _collect(store, manifest, blobs)  # manifests too: harmless, never asked for
    store.record_pushed(destination.registry, destination.repository, blobs)
    return PushResult(
        str(destination), manifest.digest, target.blobs_sent, target.mounted, result.blobs_reused
    )


# --- save ----------------------------------------------------------------------------------


def _tarinfo(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uname = info.gname = ""
    return info


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "wb") as f:
            write(f)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def save(
    store: Store,
    images: Sequence[StoredImage],
    output: Path,
    *,
    format: ArchiveFormat = "oci-archive",
    platform: Platform | None = None,
) -> None:
    if format == "oci-archive":
        _write_atomically(output, lambda f: _save_oci(store, images, f))
    elif format == "docker-archive":
        _write_atomically(output, lambda f: _save_docker(store, images, f, platform))
    else:
        raise StoreError(f"unknown archive format {format!r}: use {' or '.join(FORMATS)}")


def _save_oci(store: Store, images: Sequence[StoredImage], out: BinaryIO) -> None:
    """An OCI layout holding the images (named as in the store), as a tar."""
    entries: list[dict] = []
    blobs: dict[str, int] = {}
    for image in images:
        manifest = store.manifest(image)
        if not store.is_complete(manifest):
            raise StoreError(
                f"{image.display} is not complete in the store; pull it with --all first"
            )
        entry = image.descriptor.to_json()
        if image.name:
            entry["annotations"] = {REF_NAME: image.name}
        entries.append(entry)
        _collect(store, manifest, blobs)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
    ).encode()
    layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        tar.addfile(_tarinfo("oci-layout", len(layout)), io.BytesIO(layout))
        tar.addfile(_tarinfo("index.json", len(index)), io.BytesIO(index))
        for name in ("blobs/", "blobs/sha256/"):
            tar.addfile(_tarinfo(name, directory=True))
        for digest in sorted(blobs):
            with store.layout.open_blob(digest) as f:
                tar.addfile(_tarinfo(f"blobs/sha256/{media.digest_hex(digest)}", blobs[digest]), f)


def _collect(store: Store, manifest: Manifest, blobs: dict[str, int]) -> None:
    """Every manifest and blob of a complete stored image: digest → size."""
    for node in walk(manifest, store.manifest):
        blobs[node.manifest.digest] = node.manifest.size
        blobs.update((blob.digest, blob.size) for blob in node.manifest.blobs)


def docker_name(name: str | None) -> str | None:
    """The RepoTags form Docker writes: ``docker.io/library/x:1`` → ``x:1``."""
    if not name or "@" in name:
        return None
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _save_docker(
    store: Store, images: Sequence[StoredImage], out: BinaryIO, platform: Platform | None
) -> None:
    """``docker save``'s format: config ``<hex>.json``, uncompressed layers ``<hex>.tar``,
    ``manifest.json``; one platform per image (the host's unless ``platform``)."""
    # One manifest.json entry per image, with every name of it in RepoTags: Docker and
    # skopeo (`docker-archive:f`, "expected 1 item") expect that, not an entry per name.
    entries: dict[str, dict] = {}
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for image in images:
            manifest = store.require_platform(image, platform)
            tag = docker_name(image.name)
            if manifest.digest in entries:
                tags = entries[manifest.digest]["RepoTags"]
                if tag and tag not in tags:
                    tags.append(tag)
                continue
            config_bytes = store.layout.read_blob(manifest.config.digest)
            config = json.loads(config_bytes)
            diff_ids = image_config.diff_ids(config)
            if len(diff_ids) != len(manifest.layers):
                raise StoreError(
                    f"{image.display}: the config lists {len(diff_ids)} layers, "
                    f"the manifest {len(manifest.layers)}"
                )
            config_name = f"{media.digest_hex(manifest.config.digest)}.json"
            if config_name not in written:
                tar.addfile(_tarinfo(config_name, len(config_bytes)), io.BytesIO(config_bytes))
                written.add(config_name)
            layer_names = []
            for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
                name = f"{media.digest_hex(diff_id)}.tar"
                if name not in written:
                    _add_uncompressed(store, tar, layer, diff_id, name)
                    written.add(name)
                layer_names.append(name)
            entries[manifest.digest] = {
                "Config": config_name,
                "RepoTags": [tag] if tag else [],
                "Layers": layer_names,
            }
        data = json.dumps(list(entries.values())).encode()
        tar.addfile(_tarinfo("manifest.json", len(data)), io.BytesIO(data))


def _uncompressed(store: Store, layer: Descriptor) -> BinaryIO:
    raw = store.layout.open_blob(layer.digest)
    head = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw  # type: ignore[return-value]


def _add_uncompressed(
    store: Store, tar: tarfile.TarFile, layer: Descriptor, diff_id: str, name: str
) -> None:
    # A tar header needs the size first: one pass to measure (and check the diff_id), one
    # to write; both stream, nothing is held in memory or spooled to disk.
    digest = hashlib.sha256()
    size = 0
    with _uncompressed(store, layer) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if "sha256:" + digest.hexdigest() != diff_id:
        raise StoreError(f"layer {layer.digest} does not match its diff_id {diff_id}")
    with _uncompressed(store, layer) as f:
        tar.addfile(_tarinfo(name, size), f)


# --- load ----------------------------------------------------------------------------------


def archive_format(path: Path) -> ArchiveFormat:
    index = TarIndex(path)
    if "index.json" in index.members and "oci-layout" in index.members:
        return "oci-archive"
    if "manifest.json" in index.members:
        return "docker-archive"
    raise ContextError(f"{path} is neither an oci-archive nor a docker-archive")


def load(store: Store, path: Path, *, progress: ProgressReporter | None = None) -> list[str]:
    """Copy every image of an archive into the store; returns the names given (an image
    without a name is stored untagged, shown by its digest)."""
    kind = archive_format(path)
    jobs: list[CopyJob] = []
    names: list[str] = []
    if kind == "oci-archive":
        source = OCIArchiveSource(path)
        for entry in source.index.get("manifests") or []:
            descriptor = Descriptor.from_json(entry)
            name = _oci_entry_name(entry.get("annotations") or {}, path)
            jobs.append(_load_job(store, source, descriptor.digest, name, names))
    else:
        entries = json.loads(TarIndex(path).read("manifest.json"))
        for number, entry in enumerate(entries):
            source = DockerArchiveSource(path, store.layout, entry=number)
            tags = entry.get("RepoTags") or []
            manifest = source.get_manifest("")
            if not tags:
                jobs.append(_load_job(store, source, manifest.digest, None, names))
            for tag in tags:
                jobs.append(_load_job(store, source, manifest.digest, _loaded_name(tag), names))
    with store.writing():
        outcome = copy_images(jobs, platforms=(), all_platforms=True, progress=progress)
        _raise_first(outcome)
        for job in jobs:
            if job.tag is None:  # an image without a name: keep it, untagged
                stored = job.destination.converted.get(job.reference)  # type: ignore[attr-defined]
                digest = stored.digest if stored is not None else job.reference
                store.add_untagged(store.manifest(Descriptor("", digest, 0)))
    return names


CONTAINERD_NAME = "io.containerd.image.name"


def _oci_entry_name(annotations: Mapping[str, str], path: Path) -> str | None:
    """The store name of an oci-archive's image. ``docker save`` (containerd) puts the full
    name in ``io.containerd.image.name``; skopeo and buildah put what the user gave in
    ``org.opencontainers.image.ref.name``: a full name (sealpy's own archives), or — the
    OCI convention, ``skopeo copy ... oci-archive:app.tar:1.0`` — only a tag. A bare
    ``1.0`` is not taken for an image named ``1.0``: the image is named after the
    archive file, ``localhost/app:1.0``, the way a name without a registry is stored."""
    full = annotations.get(CONTAINERD_NAME)
    if full:
        return _loaded_name(full)
    ref_name = annotations.get(REF_NAME)
    if not ref_name:
        return None
    if "/" in ref_name or ":" in ref_name or "@" in ref_name:
        return _loaded_name(ref_name)
    stem = path.name.lower()
    for suffix in (".tar.gz", ".tgz", ".tar", ".oci"):
        stem = stem.removesuffix(suffix)
    repository = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("._-") or "image"
    try:
        return store_name(f"{repository}:{ref_name}")
    except InvalidReferenceError:
        raise StoreError(
            f"{path}: image ref.name {ref_name!r} is neither a name nor a tag"
        ) from None


def _loaded_name(text: str) -> str:
    """Names in archives are Docker-style (``nginx:1``): normalised as Docker does."""
    first = text.partition("/")[0]
    if first == "localhost" or ("/" in text and ("." in first or ":" in first)):
        return store_name(text)
    return str(ImageReference.parse(text))


def _load_job(store: Store, source, digest: str, name: str | None, names: list[str]) -> CopyJob:
    if name:
        names.append(name)
    return CopyJob(
        label=name or digest,
        source=source,
        reference=digest,
        destination=store.destination(name or ""),
        tag=name,
    )
