"""Commands up to the cache stage: ``scan``, ``strategies``, ``registry save`` and
``registry verify``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sealpy.core.cli.options import (
    AllOpt,
    ApiVersionsOpt,
    AuthfileOpt,
    CacheDirOpt,
    ContextArg,
    CopySignaturesOpt,
    CredsOpt,
    FileOpt,
    ImagesOpt,
    KubeVersionOpt,
    LockedOpt,
    MirrorOpt,
    OfflineOpt,
    PlatformOpt,
    PolicyOpt,
    ProcsOpt,
    QuietOpt,
    RetryOpt,
    StrategyOpt,
    StrictOpt,
    TLSOpt,
    cache_options,
    parse_platforms,
    print_events,
    render_options,
    split,
)
from sealpy.core.cli.report_json import JsonOpt, failed_report, print_report, report_json
from sealpy.core.errors import CacheError, SealpyError


def scan(
    ctx: typer.Context,
    context: ContextArg,
    file: FileOpt = None,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--no-json", help="Print one JSON object (a stable interface for scripts)."
        ),
    ] = False,
) -> None:
    """List every image the context needs and where each was found."""
    from sealpy.core import pipeline

    render = render_options(ctx, kube_version, api_versions)
    scanned = pipeline.scan(context, build_file=file, extra_images=split(images), render=render)
    found = scanned.images
    if as_json:
        typer.echo(json.dumps(scanned.to_json(), indent=2))
    else:
        width = max((len(str(i.reference)) for i in found.images), default=9)
        typer.echo(f"{'REFERENCE':<{width}}  FOUND IN")
        for image in found.images:
            places = ", ".join(str(s) for s in image.sources)
            typer.echo(f"{image.reference!s:<{width}}  {places}")
        for archive in found.archives:
            typer.echo(
                f"{archive.transport}:{scanned.context.relative(archive.path)} -> "
                f"{archive.destination}  {archive.location}"
            )
        for ignored in found.ignored:
            typer.echo(f"ignored {ignored.reference} (.sealignore: {ignored.rule})")
        for warning in found.warnings:
            typer.echo(f"warn {warning}", err=True)
    if strict and found.warnings:
        raise SealpyError(f"{len(found.warnings)} scan warning(s) with --strict")


def strategies() -> None:
    """List caching strategies, with whether each can run here."""
    from sealpy.core.plugins import strategy_name, strategy_registry

    registry = strategy_registry()
    default = strategy_name(None, os.environ)
    width = max(len(n) for n in registry.names())
    for strategy in registry:
        availability = strategy.availability()
        state = "available" if availability.available else f"unavailable: {availability.reason}"
        mark = "*" if strategy.name == default else " "
        typer.echo(f"{mark} {strategy.name:<{width}}  {strategy.description}  [{state}]")


def registry_save(
    ctx: typer.Context,
    context: ContextArg,
    registry_dir: Annotated[
        Path | None,
        typer.Option("--registry-dir", help="Where to write (default <context>/registry)."),
    ] = None,
    file: FileOpt = None,
    images: ImagesOpt = None,
    strategy: StrategyOpt = None,
    platform: PlatformOpt = None,
    all_platforms: AllOpt = False,
    max_pull_procs: ProcsOpt = None,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    registry_mirror: MirrorOpt = None,
    retry_times: RetryOpt = None,
    strict: StrictOpt = False,
    quiet: QuietOpt = False,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    as_json: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
    locked: LockedOpt = False,
    offline: OfflineOpt = False,
    signature_policy: PolicyOpt = None,
    copy_signatures: CopySignaturesOpt = True,
) -> None:
    """Cache every image the context needs into a registry directory (the cache stage alone)."""
    from sealpy.core import pipeline

    chosen = pipeline.select_strategy(strategy)
    render = render_options(ctx, kube_version, api_versions)
    options = cache_options(
        platforms=parse_platforms(platform),
        all_platforms=all_platforms,
        max_pull_procs=max_pull_procs,
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=registry_mirror,
        quiet=quiet or as_json,
        retry_times=retry_times,
        cache_dir=cache_dir,
        signature_policy=signature_policy,
        copy_signatures=copy_signatures,
    )
    job = pipeline.SaveJob(
        context=context,
        registry_dir=registry_dir,
        build_file=file,
        extra_images=tuple(split(images)),
        strict=strict,
        render=render,
        strategy=chosen,
        cache=options,
        locked=locked,
        offline=offline,
    )
    # --quiet silences the progress display only: the info lines stay.
    events = print_events(debug=bool((ctx.obj or {}).get("debug")))
    try:
        result = pipeline.save(job, events)
    except CacheError as exc:
        if as_json:  # what was cached before the failure; the error line follows on stderr
            print_report(failed_report(exc, chosen.name))
        raise
    if as_json:
        print_report(report_json(result.cache, chosen.name))


def registry_verify(
    directory: Annotated[
        Path, typer.Argument(help="A registry storage root (the directory holding docker/).")
    ],
    fix: Annotated[
        bool,
        typer.Option(
            "--fix/--no-fix",
            help="Repair broken link files whose blob is intact; remove what is corrupt so a re-run fetches it again.",
        ),
    ] = False,
) -> None:
    """Check a registry directory: blobs match digests, links resolve, images complete."""
    from sealpy.core.cache.verify import verify_registry

    result = verify_registry(directory, fix=fix)
    for problem in result.problems:
        typer.echo(str(problem))
    typer.echo(result.summary(), err=True)
    if result.problems and not fix:
        raise typer.Exit(1)
    if result.problems and fix and result.remaining:
        raise typer.Exit(1)
