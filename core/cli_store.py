"""Commands on the local image store: images, inspect, tag, rmi, pull, push, save, load,
merge. Registered on :data:`sealpy.core.cli.app`; each takes ``--root DIR`` after the
subcommand. Like the rest of the CLI they only parse arguments, call
:mod:`sealpy.core.store.layout`, :mod:`sealpy.core.store.transfer` and :mod:`sealpy.core.build.merge`, and
render results; errors are :class:`~sealpy.core.errors.SealpyError` one-liners.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from sealpy.core.cli import (
    AllOpt,
    AuthfileOpt,
    CredsOpt,
    MirrorOpt,
    PlatformOpt,
    ProcsOpt,
    QuietOpt,
    RetryOpt,
    RootOpt,
    StrategyOpt,
    TLSOpt,
    app,
)
from sealpy.core.errors import UsageError

ImageArg = Annotated[str, typer.Argument(help="An image in the store: name or ID.")]
JsonOpt = Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")]


def _store(root: Path | None):
    from sealpy.core.pipeline import check_directory
    from sealpy.core.store.layout import Store

    if root is not None:  # a file given as --root is a usage error, not an internal one
        check_directory(root, "--root")
    return Store(root)


@contextmanager
def _client(
    authfile: Path | None,
    creds: str | None,
    tls_verify: bool,
    mirrors: list[str] | None,
    retry_times: int | None = None,
):
    """A registry client with credentials built as for `build` (--creds, SEALPY_CREDS,
    --authfile and the standard auth files), retrying as `--retry-times` says."""
    from sealpy.core.auth import CREDS_ENV, ConfiguredCredentials, Credential
    from sealpy.core.model import RetryPolicy
    from sealpy.core.registries import RegistriesConfig
    from sealpy.core.transport.remote import RegistryClient

    secret = creds if creds is not None else os.environ.get(CREDS_ENV)
    credentials = ConfiguredCredentials(
        creds=Credential.parse(secret) if secret else None, authfile=authfile
    )
    credentials.check()
    client = RegistryClient(
        credentials=credentials,
        tls_verify=tls_verify,
        registries=RegistriesConfig.load(mirrors=mirrors or ()),
        retry=None if retry_times is None else RetryPolicy(attempts=retry_times + 1),
    )
    try:
        yield client
    finally:
        client.close()


def _progress(quiet: bool):
    """Bars on a terminal; nothing otherwise (the plain reporter speaks of "caching")."""
    from sealpy.core.progress import progress_for

    return progress_for(sys.stderr, quiet=quiet or not sys.stderr.isatty())


def _platform(values: list[str] | None):
    from sealpy.core.reference import parse_platforms

    if not values:
        return None
    platforms = parse_platforms(values)
    if len(platforms) != 1:
        raise UsageError("give one --platform here")
    return platforms[0]


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


@app.command()
def images(
    root: RootOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet/--no-quiet", "-q", help="Only image IDs.")
    ] = False,
) -> None:
    """List the images in the local store."""
    store = _store(root)
    rows = []
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


@app.command()
def inspect(
    image: ImageArg,
    root: RootOpt = None,
    platform: PlatformOpt = None,
) -> None:
    """Show an image's config, labels, layers and size (JSON)."""
    store = _store(root)
    stored = store.get(image)
    manifest = store.manifest(stored)
    wanted = _platform(platform)
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


@app.command()
def tag(
    source: ImageArg,
    names: Annotated[
        list[str], typer.Argument(help="New names (without a registry: localhost/NAME).")
    ],
    root: RootOpt = None,
) -> None:
    """Give an image more names."""
    from sealpy.core.store.layout import store_name

    store = _store(root)
    stored = store.get(source)
    for name in names:
        store.name(store_name(name), stored.descriptor)


@app.command()
def rmi(
    image: Annotated[list[str], typer.Argument(help="Images to remove: names or IDs.")],
    root: RootOpt = None,
) -> None:
    """Remove images from the store (by ID: every name of it), then the blobs no image uses."""
    store = _store(root)
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


@app.command()
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
) -> None:
    """Pull an image from a registry into the store. Docker-typed images are stored with
    OCI media types, as `skopeo copy docker://... oci:` does (same blobs; the manifest
    digest printed is the stored one, not the registry's)."""
    from sealpy.core.reference import ImageReference, Platform, parse_platforms
    from sealpy.core.store import transfer

    ref = ImageReference.parse(image.removeprefix("docker://"))
    platforms = parse_platforms(platform) if platform else (Platform.host(),)
    store = _store(root)
    typer.echo(f"Trying to pull {ref}...", err=True)
    progress = _progress(quiet)
    try:
        with _client(authfile, creds, tls_verify, registry_mirror, retry_times) as client:
            stored = transfer.pull(
                store,
                ref,
                client,
                platforms=platforms,
                all_platforms=all_platforms,
                progress=progress,
            )
    finally:
        progress.close()
    typer.echo(stored.digest)


@app.command()
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
) -> None:
    """Push an image from the store to a registry (blobs it has are skipped; blobs another
    repository there has are mounted)."""
    from sealpy.core.reference import ImageReference
    from sealpy.core.store import transfer

    store = _store(root)
    stored = store.get(image)
    target = destination or stored.name
    if not target:
        raise UsageError(f"{image} has no name: say where to push it")
    if "://" in target and not target.startswith("docker://"):
        raise UsageError(
            f"push writes to registries (docker://...); use `sealpy save` for {target}"
        )
    ref = ImageReference.parse(target.removeprefix("docker://"))
    progress = _progress(quiet)
    try:
        with _client(authfile, creds, tls_verify, None, retry_times) as client:
            result = transfer.push(store, stored, ref, client, progress=progress)
    finally:
        progress.close()
    typer.echo(
        f"Pushed {result.destination}@{result.digest}: {result.uploaded} blobs uploaded, "
        f"{result.mounted} mounted, {result.present} already there",
        err=True,
    )
    typer.echo(result.digest)


@app.command()
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
    store = _store(root)
    chosen = [store.get(i) for i in images_]
    transfer.save(store, chosen, output, format=archive_format, platform=_platform(platform))  # type: ignore[arg-type]
    typer.echo(f"Saved {len(chosen)} image(s) to {output}", err=True)


@app.command()
def load(
    input_: Annotated[
        Path, typer.Option("-i", "--input", help="An oci-archive or docker-archive file.")
    ],
    root: RootOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Load the images of an archive into the store (Docker media types become OCI ones;
    an oci-archive image named by a tag only, e.g. `1.0`, becomes localhost/<file>:1.0)."""
    from sealpy.core.errors import ContextError
    from sealpy.core.store import transfer

    if not input_.is_file():
        raise ContextError(f"archive {input_} does not exist")
    store = _store(root)
    progress = _progress(quiet)
    try:
        names = transfer.load(store, input_, progress=progress)
    finally:
        progress.close()
    for name in names:
        typer.echo(f"Loaded image: {name}")


@app.command()
def merge(
    ctx: typer.Context,
    images_: Annotated[
        list[str],
        typer.Argument(metavar="IMAGE...", help="Images to merge, in order (at least two)."),
    ],
    tag_: Annotated[
        list[str] | None, typer.Option("-t", "--tag", help="Name for the result; repeatable.")
    ] = None,
    root: RootOpt = None,
    platform: PlatformOpt = None,
    print_sealfile: Annotated[
        bool,
        typer.Option(
            "--print-sealfile/--no-print-sealfile",
            help="Print the Sealfile Sealos would build for this merge (also with --debug).",
        ),
    ] = False,
    save_image: Annotated[
        bool,
        typer.Option(
            "--save-image/--no-save-image",
            help="Accepted as by Sealos: the merge context holds only the generated Sealfile, "
            "so there are no images to cache.",
        ),
    ] = False,
    strategy: StrategyOpt = None,
    all_platforms: AllOpt = False,
    max_pull_procs: ProcsOpt = None,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    registry_mirror: MirrorOpt = None,
    retry_times: RetryOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Merge cluster images into one, by Sealos's rules (layers in order; labels and ENV
    merged, later wins, PATH dropped, rootfs type kept; ENTRYPOINT and CMD concatenated).
    Inputs missing from the store are pulled with build's registry flags (--all: every
    platform of them)."""
    from sealpy.core import pipeline
    from sealpy.core.build.merge import merge as merge_images
    from sealpy.core.model import DEFAULT_MAX_PARALLEL
    from sealpy.core.reference import parse_platforms
    from sealpy.core.store import transfer
    from sealpy.core.store.layout import store_name

    if not tag_:
        raise UsageError("merge needs -t NAME for the result")
    if len(images_) < 2:
        raise UsageError("merge needs at least two images")
    if save_image:
        pipeline.select_strategy(strategy)  # validated and selected as for build
        typer.echo(
            "info no images to cache (the merge context holds only the generated Sealfile)",
            err=True,
        )
    platforms = parse_platforms(platform) if platform else None
    store = _store(root)
    with _client(authfile, creds, tls_verify, registry_mirror, retry_times) as client:

        def resolve(text, wanted):
            return transfer.ensure_image(
                store,
                text,
                wanted,
                lambda: client,
                echo=None if quiet else lambda line: typer.echo(line, err=True),
                all_platforms=all_platforms,
                max_parallel=max_pull_procs or DEFAULT_MAX_PARALLEL,
            )

        result = merge_images(
            store,
            images_,
            [store_name(t) for t in tag_],
            platforms=platforms,
            epoch=pipeline.source_date_epoch() or 0,
            resolve=resolve,
            warn=lambda message: typer.echo(f"warn {message}", err=True),
        )
    if print_sealfile or (ctx.obj or {}).get("debug"):
        typer.echo(result.sealfile, nl=False)
    for name in result.names:
        typer.echo(f"Successfully tagged {name}")
    typer.echo(result.digest)
