"""``sealpy build``: parse buildah's and Sealos's flags into a
:class:`~sealpy.core.pipeline.BuildJob`, run it, print what buildah prints."""

from __future__ import annotations

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
    RetryOpt,
    RootOpt,
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
from sealpy.core.errors import CacheError, UsageError


def build(
    ctx: typer.Context,
    context: ContextArg,
    tag: Annotated[
        list[str] | None, typer.Option("-t", "--tag", help="Name for the image; repeatable.")
    ] = None,
    file: FileOpt = None,
    images: ImagesOpt = None,
    strategy: StrategyOpt = None,
    platform: PlatformOpt = None,
    all_platforms: AllOpt = False,
    max_pull_procs: ProcsOpt = None,
    save_image: Annotated[
        bool,
        typer.Option(
            "--save-image/--no-save-image",
            help="Cache the images into <context>/registry first (Sealos's default).",
        ),
    ] = True,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    tls_verify: TLSOpt = True,
    registry_mirror: MirrorOpt = None,
    build_arg: Annotated[
        list[str] | None, typer.Option("--build-arg", help="KEY=VALUE for ARG; repeatable.")
    ] = None,
    builder: Annotated[
        str, typer.Option("--builder", help="native (default) or buildah (for RUN).")
    ] = "native",
    root: RootOpt = None,
    retry_times: RetryOpt = None,
    strict: StrictOpt = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet/--no-quiet", "-q", help="Print only the image ID (errors on stderr)."
        ),
    ] = False,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="KEY=VALUE image label, after the build file's; repeatable."),
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", help="KEY=VALUE manifest annotation; repeatable."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", help="NAME=VALUE (or NAME: this shell's value) set in the image; repeatable."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Build up to this stage (its name or number).")
    ] = None,
    image_format: Annotated[
        str | None,
        typer.Option("--format", help="oci (default) or docker; default from BUILDAH_FORMAT."),
    ] = None,
    iidfile: Annotated[
        Path | None, typer.Option("--iidfile", help="Write the image ID (sha256:...) to FILE.")
    ] = None,
    timestamp: Annotated[
        int | None,
        typer.Option(
            "--timestamp", min=0, help="Seconds since 1970 for created times and file times."
        ),
    ] = None,
    squash: Annotated[
        bool, typer.Option("--squash/--no-squash", help="One layer for the whole image.")
    ] = False,
    ignorefile: Annotated[
        Path | None,
        typer.Option("--ignorefile", help="Ignore file to use instead of .dockerignore."),
    ] = None,
    kube_version: KubeVersionOpt = None,
    api_versions: ApiVersionsOpt = None,
    as_json: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
    locked: LockedOpt = False,
    offline: OfflineOpt = False,
    signature_policy: PolicyOpt = None,
    copy_signatures: CopySignaturesOpt = True,
) -> None:
    """Scan the context, cache its images, and build the image (like `sealos build`)."""
    from sealpy.core import pipeline
    from sealpy.core.build import flags as buildflags

    # The name is validated even without --save-image; only caching needs it available.
    chosen = pipeline.select_strategy(strategy, check_available=save_image)
    platforms = parse_platforms(platform)
    builder_class = pipeline.select_builder(builder)
    build_args = _parse_build_args(build_arg)
    render = render_options(ctx, kube_version, api_versions)
    output = buildflags.output_options(
        labels=label, annotations=annotation, env=env, format=image_format, squash=squash
    )
    # Built even without --save-image: FROM and COPY --from pull with the same credentials,
    # TLS policy and mirrors as the caching does.
    options = cache_options(
        platforms=platforms,
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
    job = pipeline.BuildJob(
        context=context,
        tags=tuple(tag or ()),
        build_file=file,
        extra_images=tuple(split(images)),
        strict=strict,
        render=render,
        save_image=save_image,
        strategy=chosen,
        cache=options,
        builder=builder_class,
        platforms=platforms,
        build_args=build_args,
        store_root=root,
        output=output,
        target=target,
        ignorefile=ignorefile,
        epoch=timestamp,
        iidfile=iidfile,
        locked=locked,
        offline=offline,
    )
    events = print_events(
        quiet=quiet, debug=bool((ctx.obj or {}).get("debug")), stdout_free=as_json
    )
    try:
        built = pipeline.build(job, events)
    except CacheError as exc:
        if as_json:  # what was cached before the failure; the error line follows on stderr
            print_report(failed_report(exc, chosen.name))
        raise
    result = built.image
    if as_json:
        image = {
            "digest": result.digest,
            "names": list(result.names),
            "image_ids": list(result.image_ids),
        }
        print_report(report_json(built.cache, chosen.name, image=image))
        return
    if quiet:
        # As `buildah bud -q`: the image ID (one per platform), unless --iidfile took it.
        if iidfile is None:
            for image_id in result.image_ids:
                typer.echo(image_id.removeprefix("sha256:"))
        return
    for name in result.names:
        typer.echo(f"Successfully tagged {name}")
    typer.echo(result.digest)


def _parse_build_args(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {value!r}: expected KEY=VALUE")
        out[key] = val if sep else os.environ.get(key, "")
    return out
