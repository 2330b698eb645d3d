"""``sealpy lock``: write ``CONTEXT/sealpy.lock``, every image pinned to a digest."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sealpy.core.cli.options import (
    AllOpt,
    ApiVersionsOpt,
    AuthfileOpt,
    ContextArg,
    CredsOpt,
    FileOpt,
    ImagesOpt,
    KubeVersionOpt,
    MirrorOpt,
    PlatformOpt,
    ProcsOpt,
    RetryOpt,
    StrictOpt,
    TLSOpt,
    cache_options,
    parse_platforms,
    render_options,
    split,
)
from sealpy.core.cli.report_json import JsonOpt


def lock(
    ctx: typer.Context,
    context: ContextArg,
    update: Annotated[
        bool,
        typer.Option(
            "--update/--no-update",
            help="Resolve every image again (default: keep the digests already locked; "
            "add new images, drop removed ones).",
        ),
    ] = False,
    file: FileOpt = None,
    images: ImagesOpt = None,
    platform: PlatformOpt = None,
    all_platforms: AllOpt = False,
    max_pull_procs: ProcsOpt = None,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    registry_mirror: MirrorOpt = None,
    retry_times: RetryOpt = None,
    strict: StrictOpt = False,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin every image the context needs to its manifest digest in CONTEXT/sealpy.lock
    (build and registry save then fetch exactly those digests)."""
    from sealpy.core import pipeline
    from sealpy.core.lockfile import LockFile, lock_path
    from sealpy.core.lockresolve import resolve_lock

    render = render_options(ctx, kube_version, api_versions)
    options = cache_options(
        platforms=parse_platforms(platform),
        all_platforms=all_platforms,
        max_pull_procs=max_pull_procs,
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=registry_mirror,
        quiet=True,
        retry_times=retry_times,
        cache_dir="none",  # resolving reads manifests only: nothing to share
    )
    scanned = pipeline.scan(
        context,
        build_file=file,
        extra_images=split(images),
        strict=strict,
        require_build_file=False,
        render=render,
    )
    for warning in scanned.images.warnings:
        typer.echo(f"warn {warning}", err=True)
    path = lock_path(scanned.context.root)
    previous = LockFile.read(path)
    outcome = resolve_lock(scanned, options, previous, update=update)
    written = outcome.lock.write(path)
    if as_json:
        typer.echo(json.dumps(outcome.lock.to_json(), indent=2, sort_keys=True))
        return
    for reference in outcome.added:
        typer.echo(f"added   {reference}@{_digest(outcome, reference)}", err=True)
    for reference in outcome.moved:
        typer.echo(f"updated {reference}@{_digest(outcome, reference)}", err=True)
    for reference in outcome.removed:
        typer.echo(f"removed {reference}", err=True)
    state = "written" if written else "unchanged"
    typer.echo(
        f"info {path} {state}: {len(outcome.lock.images)} images "
        f"({len(outcome.added)} added, {len(outcome.moved)} updated, "
        f"{len(outcome.removed)} removed, {len(outcome.kept)} kept)",
        err=True,
    )


def _digest(outcome, reference: str) -> str:
    return outcome.lock.by_reference()[reference].digest
