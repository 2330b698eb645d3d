"""Commands on the local image store: images, inspect, tag, rmi, pull, push, save, load.
Each takes ``--root DIR`` after the subcommand. They only parse arguments, call
:mod:`sealpy.core.store.layout` and :mod:`sealpy.core.store.transfer`, and render results;
errors are :class:`~sealpy.core.errors.SealpyError` one-liners.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sealpy.core.cli.options import (
    AllOpt,
    AuthfileOpt,
    CacheDirOpt,
    CredsOpt,
    MirrorOpt,
    PlatformOpt,
    QuietOpt,
    RetryOpt,
    RootOpt,
    TLSOpt,
    one_platform,
    open_store,
    registry_client,
    store_progress,
)
from sealpy.core.errors import UsageError

ImageArg = Annotated[str, typer.Argument(help="An image in the store: name or ID.")]
JsonOpt = Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")]


def _split_name(name: str | None) -> tuple[str, str]:
    """``registry/repo:tag`` → (``registry/repo``, ``tag``), as `images` shows them."""
    if not name:
        return "<none>", "<none>"
    if "@" in name:
        repository, _, digest = name.partition("@")
        return repository.rsplit(":", 1)[0] if ":" in repository.rsplit("/", 1)[
            -1
        ] else repository, digest[:19]
    head, _, last = name.rpartition("/")
    if ":" in last:
        repo, _, tag = last.partition(":")
        return f"{head}/{repo}" if head else repo, tag
    return name, "<none>"


def images(
    root: RootOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet/--no-quiet", "-q", help="Only image IDs.")
    ] = False,
) -> None:
    """List the images in the local store."""
    store = open_store(root)
    rows: list[dict[str, Any]] = []
    for image in store.images():
        manifest = store.manifest(image)
        created = ""
        if not manifest.is_index:
            created = str(store.config(manifest).get("created", ""))
        rows.append(
            {
                "name": image.name,
                "digest": image.digest,
                "id": store.image_id(image),
                "created": created,
                "size": store.size(manifest),
                "index": manifest.is_index,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if quiet:
        for row in dict.fromkeys(r["id"][7:19] for r in rows):
            typer.echo(row)
        return
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for row in rows:
        repository, tag = _split_name(row["name"])
        table.append((repository, tag, row["id"][7:19], row["created"] or "-", _human(row["size"])))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g} {unit}" if unit != "B" else f"{size} B"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def inspect(
    image: ImageArg,
    root: RootOpt = None,
    platform: PlatformOpt = None,
    images_: Annotated[
        bool,
        typer.Option(
            "--images/--no-images",
            help="List the images inside the cluster image (its registry/ tree): "
            "repositories, tags, digests, platforms, signatures.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="With --images: print JSON.")
    ] = False,
) -> None:
    """Show an image's config, labels, layers and size (JSON); with --images, the images
    it carries."""
    store = open_store(root)
    if images_:
        from sealpy.core.cli.inventory_output import show_images

        show_images(store, image, one_platform(platform), as_json)
        return
    stored = store.get(image)
    manifest = store.manifest(stored)
    wanted = one_platform(platform)
    if manifest.is_index and wanted is None:
        children = []
        for child in manifest.children:
            present = store.layout.has_blob(child.digest)
            children.append(
                {
                    "Platform": child.platform,
                    "Digest": child.digest,
                    "Image": _details(store, store.manifest(child))
                    if present and store.is_complete(store.manifest(child))
                    else None,
                }
            )
        doc = {
            "Name": stored.name,
            "Digest": manifest.digest,
            "MediaType": manifest.media_type,
            "Size": store.size(manifest),
            "Manifests": children,
        }
    else:
        chosen = store.require_platform(stored, wanted) if manifest.is_index or wanted else manifest
        doc = {"Name": stored.name, "Digest": manifest.digest, **_details(store, chosen)}
    typer.echo(json.dumps(doc, indent=2))


def _details(store, manifest) -> dict:
    config = store.config(manifest)
    body = config.get("config") or {}
    return {
        "ManifestDigest": manifest.digest,
        "MediaType": manifest.media_type,
        "Id": manifest.config.digest,
        "Created": config.get("created"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Labels": body.get("Labels") or {},
        "Config": body,
        "Layers": [
            {"Digest": d.digest, "Size": d.size, "MediaType": d.media_type} for d in manifest.layers
        ],
        "DiffIds": (config.get("rootfs") or {}).get("diff_ids") or [],
        "History": config.get("history") or [],
        "Size": store.size(manifest),
    }


def tag(
    source: ImageArg,
    names: Annotated[
        list[str], typer.Argument(help="New names (without a registry: localhost/NAME).")
    ],
    root: RootOpt = None,
) -> None:
    """Give an image more names."""
    from sealpy.core.store.layout import store_name

    store = open_store(root)
    stored = store.get(source)
    for name in names:
        store.name(store_name(name), stored.descriptor)


def rmi(
    image: Annotated[list[str], typer.Argument(help="Images to remove: names or IDs.")],
    root: RootOpt = None,
) -> None:
    """Remove images from the store (by ID: every name of it), then the blobs no image uses."""
    store = open_store(root)
    chosen = []
    for text in image:  # resolve all first: an unknown name removes nothing
        named = store.find_name(text)
        if named is not None:
            chosen.append(named)
        else:
            by_id = store.get(text)
            chosen.extend(i for i in store.images() if i.digest == by_id.digest)
    for stored in dict.fromkeys(chosen):
        store.untag(stored)
        typer.echo(f"Untagged: {stored.display}")
    removed = store.gc()
    if removed is None:
        typer.echo(
            "info the store is in use by another command: unused blobs are kept for now", err=True
        )
    else:
        typer.echo(f"Deleted {removed} unused blobs")


def pull(
    image: Annotated[
        str, typer.Argument(help="An image reference, e.g. docker.io/library/nginx:1.25.")
    ],
    root: RootOpt = None,
    platform: PlatformOpt = None,
    all_platforms: AllOpt = False,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    registry_mirror: MirrorOpt = None,
    retry_times: RetryOpt = None,
    quiet: QuietOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Pull an image from a registry into the store. Docker-typed images are stored with
    OCI media types, as `skopeo copy docker://... oci:` does (same blobs; the manifest
    digest printed is the stored one, not the registry's)."""
    from sealpy.core.reference import ImageReference, Platform, parse_platforms
    from sealpy.core.store import transfer
    from sealpy.core.transport.blobcache import open_blob_cache

    ref = ImageReference.parse(image.removeprefix("docker://"))
    platforms = parse_platforms(platform) if platform else (Platform.host(),)
    store = open_store(root)
    typer.echo(f"Trying to pull {ref}...", err=True)
    progress = store_progress(quiet)
    try:
        with registry_client(authfile, creds, tls_verify, registry_mirror, retry_times) as client:
            stored = transfer.pull(
                store,
                ref,
                client,
                platforms=platforms,
                all_platforms=all_platforms,
                progress=progress,
                blob_cache=open_blob_cache(cache_dir),
            )
    finally:
        progress.close()
    typer.echo(stored.digest)


def push(
    image: ImageArg,
    destination: Annotated[
        str | None,
        typer.Argument(
            help="Where to: [docker://]REGISTRY/REPO[:TAG] (default: the image's name)."
        ),
    ] = None,
    root: RootOpt = None,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    retry_times: RetryOpt = None,
    quiet: QuietOpt = False,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-by-sigstore-private-key",
            metavar="KEY",
            help="Also push a cosign signature of each pushed manifest, made with KEY "
            "(sigstore's encrypted PEM, as `cosign generate-key-pair` writes, or an "
            "unencrypted PKCS#8 PEM).",
        ),
    ] = None,
    sign_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--sign-passphrase-file",
            metavar="FILE",
            help="The encrypted key's passphrase: FILE's first line (default: asked on the "
            "terminal).",
        ),
    ] = None,
) -> None:
    """Push an image from the store to a registry (blobs it has are skipped; blobs another
    repository there has are mounted); with --sign-by-sigstore-private-key, sign it as
    cosign does (the index and each platform manifest of a multi-platform image)."""
    from sealpy.core.reference import ImageReference
    from sealpy.core.store import signing, transfer

    signing.check_flags(sign_key, sign_passphrase_file)
    store = open_store(root)
    stored = store.get(image)
    target = destination or stored.name
    if not target:
        raise UsageError(f"{image} has no name: say where to push it")
    if "://" in target and not target.startswith("docker://"):
        raise UsageError(
            f"push writes to registries (docker://...); use `sealpy save` for {target}"
        )
    ref = ImageReference.parse(target.removeprefix("docker://"))
    # The key (and its passphrase) is checked before anything is pushed.
    private_key = signing.load_signing_key(sign_key, sign_passphrase_file) if sign_key else None
    progress = store_progress(quiet)
    try:
        with registry_client(authfile, creds, tls_verify, None, retry_times) as client:
            result = transfer.push(store, stored, ref, client, progress=progress)
            signed = []
            if private_key is not None:
                digests = signing.signed_digests(store, stored)
                signed = signing.sign_pushed(client, ref, digests, private_key)
    finally:
        progress.close()
    typer.echo(
        f"Pushed {result.destination}@{result.digest}: {result.uploaded} blobs uploaded, "
        f"{result.mounted} mounted, {result.present} already there",
        err=True,
    )
    for entry in signed:
        state = "Signed" if entry.added else "Already signed with this key"
        count = f"{entry.count} signature{'s' if entry.count != 1 else ''}"
        typer.echo(f"{state} {ref.name}@{entry.manifest_digest}: {entry.tag} ({count})", err=True)
    typer.echo(result.digest)


def save(
    images_: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="Images to save.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The archive to write.")],
    archive_format: Annotated[
        str, typer.Option("--format", help="oci-archive (default) or docker-archive.")
    ] = "oci-archive",
    root: RootOpt = None,
    platform: PlatformOpt = None,
) -> None:
    """Write images to an archive file (`skopeo` reads it as oci-archive:/docker-archive:)."""
    from sealpy.core.store import transfer

    if archive_format not in transfer.FORMATS:
        raise UsageError(f"invalid --format {archive_format!r}: use oci-archive or docker-archive")
    store = open_store(root)
    chosen = [store.get(i) for i in images_]
    transfer.save(store, chosen, output, format=archive_format, platform=one_platform(platform))  # type: ignore[arg-type]
    typer.echo(f"Saved {len(chosen)} image(s) to {output}", err=True)


def load(
    input_: Annotated[
        Path, typer.Option("-i", "--input", help="An oci-archive or docker-archive file.")
    ],
    root: RootOpt = None,
    quiet: QuietOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Load the images of an archive into the store (Docker media types become OCI ones;
    an oci-archive image named by a tag only, e.g. `1.0`, becomes localhost/<file>:1.0)."""
    from sealpy.core.errors import ContextError
    from sealpy.core.store import transfer
    from sealpy.core.transport.blobcache import open_blob_cache

    if not input_.is_file():
        raise ContextError(f"archive {input_} does not exist")
    store = open_store(root)
    progress = store_progress(quiet)
    try:
        names = transfer.load(
            store, input_, progress=progress, blob_cache=open_blob_cache(cache_dir)
        )
    finally:
        progress.close()
    for name in names:
        typer.echo(f"Loaded image: {name}")
