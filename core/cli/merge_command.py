"""``sealpy merge``: parse the flags into a :class:`~sealpy.core.pipeline.MergeJob`, run
it, print the result (and the Sealfile Sealos would build, when asked)."""

from __future__ import annotations

from typing import Annotated

import typer

from sealpy.core.cli.options import (
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
    parse_platforms,
    print_events,
    transport_options,
)
from sealpy.core.errors import UsageError


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
    job = pipeline.MergeJob(
        images=tuple(images_),
        tags=tuple(tag_),
        store_root=root,
        platforms=parse_platforms(platform),
        all_platforms=all_platforms,
        transport=transport_options(
            authfile=authfile,
            creds=creds,
            tls_verify=tls_verify,
            registry_mirror=registry_mirror,
            retry_times=retry_times,
            max_pull_procs=max_pull_procs,
        ),
    )
    result = pipeline.merge(job, print_events(quiet=quiet))
    if print_sealfile or (ctx.obj or {}).get("debug"):
        typer.echo(result.sealfile, nl=False)
    for name in result.names:
        typer.echo(f"Successfully tagged {name}")
    typer.echo(result.digest)
