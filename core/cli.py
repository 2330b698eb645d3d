"""The ``sealpy`` command line (typer). It parses arguments, calls the pipeline, renders
results and errors — no logic of its own.

Errors: a :class:`~sealpy.core.errors.SealpyError` or a bad argument prints one line,
``error: ...``, on stderr and exits non-zero; ``--debug`` (anywhere on the line) shows the
traceback instead. Boolean flags take Sealos's and skopeo's spelling too:
``--tls-verify=false``, ``--all=true``.

Heavy modules are imported inside the commands so ``sealpy --help`` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from sealpy.core import __version__
from sealpy.core.errors import Interrupted, SealpyError, UsageError

app = typer.Typer(
    name="sealpy",
    help="Build Sealos cluster images: an application plus every container image it needs, "
    "cached in a registry directory inside the image, for air-gapped installs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
registry_app = typer.Typer(
    help="Cache images into a registry directory, and check one.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")

# Flags users type as --flag=true/false (Sealos's cobra and skopeo's pflag spelling).
BOOL_FLAGS = (
    "--all",
    "--save-image",
    "--tls-verify",
    "--strict",
    "--json",
    "--fix",
    "--quiet",
    "--squash",
)
_TRUE = {"true", "1", "yes", "t", "y", "on"}
_FALSE = {"false", "0", "no", "f", "n", "off"}


def normalize_bool_flags(argv: list[str]) -> list[str]:
    """``--all=true`` → ``--all``; ``--tls-verify=false`` → ``--no-tls-verify``."""
    out: list[str] = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out) :])
            break
        flag, sep, value = arg.partition("=")
        if sep and flag in BOOL_FLAGS:
            if value.lower() in _TRUE:
                out.append(flag)
            elif value.lower() in _FALSE:
                out.append("--no-" + flag[2:])
            else:
                raise UsageError(f"invalid boolean value {value!r} for {flag}: use true or false")
        else:
            out.append(arg)
    return out


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sealpy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """sealpy: Sealos's cluster-image build, in Python."""


# --- shared options -----------------------------------------------------------------------

ContextArg = Annotated[Path, typer.Argument(help="The build context directory.")]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "-f",
        "--file",
        help="Build file, relative to the current directory, else to the context (default: "
        "every Sealfile, Kubefile, Dockerfile, Containerfile in the context).",
    ),
]
ImagesOpt = Annotated[
    list[str] | None,
    typer.Option("--images", help="Extra images to cache, comma-separated; repeatable."),
]
StrategyOpt = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="Caching strategy (see `sealpy strategies`); default from SEALPY_CACHE_STRATEGY, "
        "SEALOS_REGISTRY_SYNC_EXPERIMENTAL=true (sync), else proxy.",
    ),
]
PlatformOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--platform", help="os/arch[/variant], comma-separated; repeatable (default: this host's)."
    ),
]
AllOpt = Annotated[
    bool, typer.Option("--all/--no-all", help="Cache every platform of multi-platform images.")
]
ProcsOpt = Annotated[
    int | None,
    typer.Option("--max-pull-procs", min=1, max=256, help="Images and blobs fetched in parallel."),
]
AuthfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--authfile",
        help="Auth file (containers auth.json or Docker config.json); "
        "default REGISTRY_AUTH_FILE and the standard places.",
    ),
]
CredsOpt = Annotated[
    str | None,
    typer.Option(
        "--creds",
        help="USER:PASSWORD for every registry that asks (prefer --authfile or SEALPY_CREDS).",
    ),
]
TLSOpt = Annotated[
    bool,
    typer.Option(
        "--tls-verify/--no-tls-verify",
        help="Require HTTPS with verified certificates (loopback registries may use plain HTTP regardless).",
    ),
]
MirrorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--registry-mirror",
        help="PREFIX=URL, e.g. docker.io=http://127.0.0.1:5000; repeatable; tried before registries.conf mirrors.",
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="The local image store (default $XDG_DATA_HOME/sealpy)."),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict/--no-strict",
        help="Treat scan warnings (invalid references, unparsable lines) as errors.",
    ),
]
RetryOpt = Annotated[
    int | None,
    typer.Option(
        "--retry-times",
        min=0,
        max=100,
        help="Retries of each failing request (skopeo's spelling; default 5).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet/--no-quiet", "-q", help="No progress output.")]
KubeVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--kube-version",
        help="Kubernetes version charts are rendered for (.Capabilities.KubeVersion; "
        "default v1.20.0, as Sealos renders).",
    ),
]
ApiVersionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-versions",
        help="API versions charts see in .Capabilities.APIVersions besides Helm's defaults "
        "(group/version[/Kind]), comma-separated; repeatable.",
    ),
]


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _cache_options(
    *,
    platform: list[str] | None,
    all_platforms: bool,
    max_pull_procs: int | None,
    authfile: Path | None,
    creds: str | None,
    tls_verify: bool,
    registry_mirror: list[str] | None,
    quiet: bool,
    retry_times: int | None = None,
):
    from sealpy.core.auth import CREDS_ENV, ConfiguredCredentials, Credential
    from sealpy.core.model import DEFAULT_MAX_PARALLEL, CacheOptions, RetryPolicy
    from sealpy.core.progress import progress_for
    from sealpy.core.reference import Platform, parse_platforms
    from sealpy.core.registries import RegistriesConfig

    platforms = parse_platforms(platform) if platform else (Platform.host(),)
    secret = creds if creds is not None else os.environ.get(CREDS_ENV)
    credentials = ConfiguredCredentials(
        creds=Credential.parse(secret) if secret else None, authfile=authfile
    )
    credentials.check()
    return CacheOptions(
        platforms=platforms,
        all_platforms=all_platforms,
        max_parallel=max_pull_procs or DEFAULT_MAX_PARALLEL,
        credentials=credentials,
        tls_verify=tls_verify,
        registries=RegistriesConfig.load(mirrors=registry_mirror or ()),
        progress=progress_for(sys.stderr, quiet=quiet),
        retry=RetryPolicy() if retry_times is None else RetryPolicy(attempts=retry_times + 1),
    )


def _run_cache(scanned, registry_dir: Path, strategy, options, *, quiet: bool = False) -> None:
    from sealpy.core import pipeline

    images = scanned.images
    names = [str(i.reference) for i in images.images] + [
        f"{a.transport}:{scanned.context.relative(a.path)}" for a in images.archives
    ]
    info = (lambda line: None) if quiet else (lambda line: typer.echo(f"info {line}", err=True))
    if not names:
        info("no images to cache")
        return
    info(f"saving images {', '.join(names)}")
    try:
        report = pipeline.cache(images, registry_dir, strategy=strategy, options=options)
    finally:
        options.progress.close()
    info(report.summary())


def _render_options(ctx: typer.Context, kube_version: str | None, api_versions: list[str] | None):
    """``--kube-version``, ``--api-versions`` and the sandbox's bounds from the environment
    (``SEALPY_CHART_MEMORY``, ``SEALPY_CHART_TIMEOUT``); shown with ``--debug``."""
    from sealpy.core.discovery.chartoptions import render_options

    options = render_options(kube_version, api_versions, os.environ)
    if (ctx.obj or {}).get("debug"):
        typer.echo(f"debug chart render context: {options.describe()}", err=True)
    return options


def _print_warnings(images) -> None:
    for warning in images.warnings:
        typer.echo(f"warn {warning}", err=True)


# --- commands -----------------------------------------------------------------------------


@app.command()
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

    render = _render_options(ctx, kube_version, api_versions)
    scanned = pipeline.scan(context, build_file=file, extra_images=_split(images), render=render)
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
        _print_warnings(found)
    if strict and found.warnings:
        raise SealpyError(f"{len(found.warnings)} scan warning(s) with --strict")


@app.command()
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


@registry_app.command("save")
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
) -> None:
    """Cache every image the context needs into a registry directory (the cache stage alone)."""
    from sealpy.core import pipeline

    chosen = pipeline.select_strategy(strategy)
    render = _render_options(ctx, kube_version, api_versions)
    options = _cache_options(
        platform=platform,
        all_platforms=all_platforms,
        max_pull_procs=max_pull_procs,
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=registry_mirror,
        quiet=quiet,
        retry_times=retry_times,
    )
    # The build file plays no part in caching (as in Sealos): a context may have none.
    scanned = pipeline.scan(
        context,
        build_file=file,
        extra_images=_split(images),
        strict=strict,
        require_build_file=False,
        render=render,
    )
    _print_warnings(scanned.images)
    # Checked after the scan (which reports a missing context best), before any download.
    if registry_dir is not None:
        target = pipeline.check_directory(registry_dir, "--registry-dir")
    else:
        target = pipeline.check_directory(Path(context) / "registry", "registry directory")
    _run_cache(scanned, target, chosen, options)


@registry_app.command("verify")
def registry_verify(
    directory: Annotated[
        Path, typer.Argument(help="A registry storage root (the directory holding docker/).")
    ],
    fix: Annotated[
        bool,
        typer.Option("--fix/--no-fix", help="Remove what is corrupt so a re-run fetches it again."),
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


@app.command()
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
) -> None:
    """Scan the context, cache its images, and build the image (like `sealos build`)."""
    from sealpy.core import pipeline
    from sealpy.core.build import flags as buildflags

    # The name is validated even without --save-image; only caching needs it available.
    chosen = pipeline.select_strategy(strategy, check_available=save_image)
    build_platforms = None
    if platform:
        from sealpy.core.reference import parse_platforms

        build_platforms = parse_platforms(platform)
    builder_class = pipeline.select_builder(builder)
    build_args = _parse_build_args(build_arg)
    render = _render_options(ctx, kube_version, api_versions)
    output = buildflags.output_options(
        labels=label, annotations=annotation, env=env, format=image_format, squash=squash
    )
    buildflags.check_iidfile(iidfile, len(build_platforms or ()) or 1)
    # Built even without --save-image: FROM and COPY --from pull with the same credentials,
    # TLS policy and mirrors as the caching does.
    options = _cache_options(
        platform=platform,
        all_platforms=all_platforms,
        max_pull_procs=max_pull_procs,
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=registry_mirror,
        quiet=quiet,
        retry_times=retry_times,
    )
    scanned = pipeline.scan(
        context, build_file=file, extra_images=_split(images), strict=strict, render=render
    )
    _print_warnings(scanned.images)
    # A wrong build file or --root fails now, not after every image has been downloaded.
    pipeline.check_build_file(
        scanned,
        builder_class,
        registry_pending=bool(save_image and len(scanned.images)),
        target=target,
        ignorefile=ignorefile,
    )
    if root is not None:
        pipeline.check_directory(root, "--root")
    if save_image:
        registry_dir = pipeline.check_directory(Path(context) / "registry", "registry directory")
        _run_cache(scanned, registry_dir, chosen, options, quiet=quiet)  # closes the progress
    else:
        options.progress.close()
    result = pipeline.build(
        scanned,
        tags=tag or [],
        builder=builder_class,
        platforms=build_platforms,
        build_args=build_args,
        store_root=root,
        credentials=options.credentials,
        tls_verify=tls_verify,
        registries=options.registries,
        cached_images=bool(save_image and len(scanned.images)),
        echo=(lambda line: None) if quiet else (lambda line: typer.echo(line)),
        warn=lambda message: typer.echo(f"warn {message}", err=True),
        epoch=timestamp,
        output=output,
        target=target,
        ignorefile=ignorefile,
    )
    if iidfile is not None:
        buildflags.write_iidfile(iidfile, result.image_ids[0])
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


def _unsupported_buildah_flag(exc: Exception) -> str | None:
    """For an unknown option of ``build`` that is a ``buildah bud`` flag: say sealpy does
    not support it (Sealos passes every buildah flag on, so it is no typo)."""
    # typer bundles its own click: recognise the exception by its name and fields.
    ctx = getattr(exc, "ctx", None)
    option = getattr(exc, "option_name", None)
    if type(exc).__name__ != "NoSuchOption" or ctx is None or not isinstance(option, str):
        return None
    if getattr(ctx.command, "name", None) != "build":
        return None
    from sealpy.core.build.flags import unsupported_flag_message

    return unsupported_flag_message(option)


# --- entry point --------------------------------------------------------------------------


def _error(message: str) -> None:
    """One line on stderr, flushed (the process may end with os._exit right after)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def _interrupt_on_signals() -> dict:
    """SIGINT and SIGTERM raise :class:`Interrupted`, so every ``finally`` runs (the sync
    strategy stops its registry and skopeo processes). typer would turn a
    KeyboardInterrupt into a silent exit code. Only possible from the main thread."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _exit_now_if_workers_linger(code: int) -> None:
    """After an interrupt, worker threads may sit in a network read until it times out;
    everything they wrote is resumable, so do not wait for them."""
    import threading

    if any(
        t is not threading.main_thread() and t.is_alive() and not t.daemon
        for t in threading.enumerate()
    ):
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``sealpy`` itself)."""
    args = list(sys.argv[1:] if argv is None else argv)
    previous = _interrupt_on_signals()
    try:
        return _run(args)
    finally:
        _restore_signals(previous)


def _run(args: list[str]) -> int:
    import warnings

    # urllib3 warns on every unverified HTTPS request; the user turned verification off
    # on purpose (--tls-verify=false or an insecure registry), once is enough: the help says so.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        args = normalize_bool_flags(args)
        command = typer.main.get_command(app)
        # Commands read --debug from the context object (merge prints its Sealfile).
        result = command.main(
            args=args, prog_name="sealpy", standalone_mode=False, obj={"debug": debug}
        )
        return result if isinstance(result, int) else 0
    except SealpyError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return exc.exit_code
    except (Interrupted, KeyboardInterrupt) as exc:
        if debug:
            traceback.print_exc()
        _error("interrupted")
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        _exit_now_if_workers_linger(code)
        return code
    except Exception as exc:
        # Click's own usage errors (unknown option, missing argument) carry format_message.
        format_message = getattr(exc, "format_message", None)
        if callable(format_message) and hasattr(exc, "exit_code"):
            if debug:
                traceback.print_exc()
            _error(_unsupported_buildah_flag(exc) or format_message())
            return int(exc.exit_code) or 2
        if debug:
            raise
        _error(f"internal error ({type(exc).__name__}: {exc}); run with --debug for the traceback")
        return 70


from sealpy.core import cli_store  # noqa: E402,F401  (registers the store commands on `app`)
