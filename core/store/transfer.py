"""Moving images in and out of the local store: pull, push, save, load.

Pull, push and load are the copy engine (:mod:`sealpy.core.transport.copy`) between the
store's OCI layout and another end — a registry, an ``oci-archive``, a
``docker-archive`` — so blobs are streamed, verified, fetched once and skipped when the
destination has them. Push asks the registry (HEAD) before sending a blob, and mounts a
blob from another repository of the same registry when the store knows one that has it.
Save is the copy engine too, from the store into an archive end
(:mod:`sealpy.core.transport.archive_write`), which writes a deterministic tar next to the
target and renames it into place when complete.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sealpy.core.errors import ContextError, InvalidReferenceError, SealpyError, StoreError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.image.walk import walk
from sealpy.core.progress import ProgressReporter
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.store.layout import Store, StoredImage, store_name
from sealpy.core.transport.archive import (
    DockerArchiveSource,
    OCIArchiveSource,
    TarIndex,
    docker_archive_entries,
)
from sealpy.core.transport.archive_write import (
    DockerArchiveDestination,
    OCIArchiveDestination,
)
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.ocilayout import REF_NAME
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination

if TYPE_CHECKING:
    from sealpy.core.transport.blobcache import BlobCache

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
    blob_cache: BlobCache | None = None,
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
            blob_cache=blob_cache,
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
    blob_cache: BlobCache | None = None,
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
        blob_cache=blob_cache,
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


def save(
    store: Store,
    images: Sequence[StoredImage],
    output: Path,
    *,
    format: ArchiveFormat = "oci-archive",
    platform: Platform | None = None,
) -> None:
    """Copy stored images into an archive at ``output``: an ``oci-archive`` holds each
    image whole (every platform); a ``docker-archive`` one platform per image (the host's
    unless ``platform``). The archive appears complete or not at all."""
    if format not in FORMATS:
        raise StoreError(f"unknown archive format {format!r}: use {' or '.join(FORMATS)}")
    # What each image contributes, checked before anything is written.
    chosen: list[tuple[StoredImage, Manifest]] = []
    for image in images:
        if format == "docker-archive":
            chosen.append((image, store.require_platform(image, platform)))
            continue
        manifest = store.manifest(image)
        if not store.is_complete(manifest):
            raise StoreError(
                f"{image.display} is not complete in the store; pull it with --all first"
            )
        chosen.append((image, manifest))
    archive_type = OCIArchiveDestination if format == "oci-archive" else DockerArchiveDestination
    with archive_type(output) as archive:
        jobs = [
            CopyJob(
                label=image.display,
                source=store.layout.image(image.name or ""),
                reference=manifest.digest,
                destination=archive.image(image.name, image.display),
                tag=image.name or manifest.digest,  # any value: the archive names it as told
            )
            for image, manifest in chosen
        ]
        _raise_first(copy_images(jobs, platforms=(), all_platforms=True))
        archive.commit()


def _collect(store: Store, manifest: Manifest, blobs: dict[str, int]) -> None:
    """Every manifest and blob of a complete stored image: digest → size."""
    for node in walk(manifest, store.manifest):
        blobs[node.manifest.digest] = node.manifest.size
        blobs.update((blob.digest, blob.size) for blob in node.manifest.blobs)


# --- load ----------------------------------------------------------------------------------


def archive_format(path: Path) -> ArchiveFormat:
    index = TarIndex(path)
    if "index.json" in index.members and "oci-layout" in index.members:
        return "oci-archive"
    if "manifest.json" in index.members:
        return "docker-archive"
    raise ContextError(f"{path} is neither an oci-archive nor a docker-archive")


def load(
    store: Store,
    path: Path,
    *,
    progress: ProgressReporter | None = None,
    blob_cache: BlobCache | None = None,
) -> list[str]:
    """Copy every image of an archive into the store; returns the names given (an image
    without a name is stored untagged, shown by its digest)."""
    kind = archive_format(path)
    jobs: list[CopyJob] = []
    names: list[str] = []
    if kind == "oci-archive":
        oci = OCIArchiveSource(path)
        for entry in oci.index.get("manifests") or []:
            descriptor = Descriptor.from_json(entry)
            name = _oci_entry_name(entry.get("annotations") or {}, path)
            jobs.append(_load_job(store, oci, descriptor.digest, name, names))
    else:
        entries = docker_archive_entries(TarIndex(path))
        for number in range(len(entries)):
            source = DockerArchiveSource(path, store.layout, entry=number)
            manifest = source.get_manifest("")  # checks the entry's fields and types
            tags = entries[number].get("RepoTags") or []
            if not tags:
                jobs.append(_load_job(store, source, manifest.digest, None, names))
            for tag in tags:
                jobs.append(_load_job(store, source, manifest.digest, _loaded_name(tag), names))
    with store.writing():
        outcome = copy_images(
            jobs, platforms=(), all_platforms=True, progress=progress, blob_cache=blob_cache
        )
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
