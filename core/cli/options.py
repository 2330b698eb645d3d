"""What several commands share: option types (one help text per flag), and turning parsed
flags into the values the pipeline and the store take — the transport options (host
policy with the credentials, retry policy, parallelism, progress; built here once for every
command), cache options, chart render options, a registry client — and rendering pipeline
events on the terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpy.core.errors import UsageError

if TYPE_CHECKING:
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.events import Event
    from sealpy.core.hosts import TransportOptions
    from sealpy.core.model import CacheOptions, RenderOptions, RetryPolicy
    from sealpy.core.progress import ProgressReporter
    from sealpy.core.reference import Platform
    from sealpy.core.store.layout import Store
    from sealpy.core.transport.remote import RegistryClient

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
CacheDirOpt = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        help="The machine-wide blob cache (default $SEALPY_CACHE_DIR, else "
        "$XDG_CACHE_HOME/sealpy); 'none' turns it off.",
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--signature-policy",
        help="containers-policy.json(5) to verify images by (default "
        "$HOME/.config/containers/policy.json, then /etc/containers/policy.json).",
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
LockedOpt = Annotated[
    bool,
    typer.Option(
        "--locked/--no-locked",
        help="Require <context>/sealpy.lock (for CI); it is used whenever it exists.",
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline/--no-offline",
        help="No network: every manifest and blob from sealpy.lock and the blob cache "
        "(proxy strategy only).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet/--no-quiet", "-q", help="No progress output.")]
CopySignaturesOpt = Annotated[
    bool,
    typer.Option(
        "--copy-signatures/--no-copy-signatures",
        help="Copy what is attached to each image (cosign signatures, attestations, SBOMs, "
        "OCI referrers) with it; --copy-signatures=false turns it off.",
    ),
]
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


def split(values: list[str] | None) -> list[str]:
    """Repeatable, comma-separated flag values as one list (``--images a,b --images c``)."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def parse_platforms(values: list[str] | None) -> tuple[Platform, ...] | None:
    """``--platform`` values, ``None`` when none was given."""
    from sealpy.core.reference import parse_platforms

    return parse_platforms(values) if values else None


def one_platform(values: list[str] | None) -> Platform | None:
    """``--platform`` where a command takes at most one."""
    platforms = parse_platforms(values)
    if platforms is None:
        return None
    if len(platforms) != 1:
        raise UsageError("give one --platform here")
    return platforms[0]


def credentials(creds: str | None, authfile: Path | None) -> ConfiguredCredentials:
    """``--creds`` (else ``SEALPY_CREDS``) and ``--authfile`` (else the standard auth
    files), checked now so a wrong flag fails before any work."""
    from sealpy.core.auth import CREDS_ENV, ConfiguredCredentials, Credential

    secret = creds if creds is not None else os.environ.get(CREDS_ENV)
    built = ConfiguredCredentials(
        creds=Credential.parse(secret) if secret else None, authfile=authfile
    )
    built.check()
    return built


def transport_options(
    *,
    authfile: Path | None,
    creds: str | None,
    tls_verify: bool,
    registry_mirror: list[str] | None,
    retry_times: int | None = None,
    max_pull_procs: int | None = None,
    progress: ProgressReporter | None = None,
    cache_dir: str | None = None,
) -> TransportOptions:
    """How a command reaches registries, from its flags: the host policy (registries.conf
    and ``--registry-mirror``, ``--tls-verify``, the credentials of :func:`credentials`),
    the retry policy of ``--retry-times``, ``--max-pull-procs``, a progress reporter
    (default: silent) and the blob cache of ``--cache-dir``."""
    from sealpy.core.hosts import HostPolicy, TransportOptions
    from sealpy.core.model import DEFAULT_MAX_PARALLEL
    from sealpy.core.progress import SilentProgress
    from sealpy.core.registries import RegistriesConfig
    from sealpy.core.transport.blobcache import open_blob_cache

    return TransportOptions(
        hosts=HostPolicy(
            registries=RegistriesConfig.load(mirrors=registry_mirror or ()),
            tls_verify=tls_verify,
            credentials=credentials(creds, authfile),
        ),
        retry=retry_policy(retry_times),
        max_parallel=max_pull_procs or DEFAULT_MAX_PARALLEL,
        progress=progress or SilentProgress(),
        blob_cache=open_blob_cache(cache_dir),
    )


def cache_options(
    *,
    platforms: tuple[Platform, ...] | None,
    all_platforms: bool,
    max_pull_procs: int | None,
    authfile: Path | None,
    creds: str | None,
    tls_verify: bool,
    registry_mirror: list[str] | None,
    quiet: bool,
    retry_times: int | None = None,
    cache_dir: str | None = None,
    signature_policy: Path | None = None,
    copy_signatures: bool = True,
) -> CacheOptions:
    """The cache stage's options from the flags (``platforms`` default: this host's), with
    a progress display on stderr."""
    from sealpy.core.model import CacheOptions
    from sealpy.core.progress import progress_for

    transport = transport_options(
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=registry_mirror,
        retry_times=retry_times,
        max_pull_procs=max_pull_procs,
        progress=progress_for(sys.stderr, quiet=quiet),
        cache_dir=cache_dir,
    )
    from sealpy.core.supplychain.policy import Policy

    return replace(
        CacheOptions.of(
            transport,
            platforms=platforms,
            all_platforms=all_platforms,
            copy_signatures=copy_signatures,
        ),
        signature_policy=Policy.load(signature_policy),
    )


def retry_policy(retry_times: int | None) -> RetryPolicy:
    """``--retry-times N``: N retries after the first attempt (default: the policy's)."""
    from sealpy.core.model import RetryPolicy

    return RetryPolicy() if retry_times is None else RetryPolicy(attempts=retry_times + 1)


def render_options(
    ctx: typer.Context, kube_version: str | None, api_versions: list[str] | None
) -> RenderOptions:
    """``--kube-version``, ``--api-versions`` and the sandbox's bounds from the environment
    (``SEALPY_CHART_MEMORY``, ``SEALPY_CHART_TIMEOUT``); shown with ``--debug``."""
    from sealpy.core.discovery.chartoptions import render_options

    options = render_options(kube_version, api_versions, os.environ)
    if (ctx.obj or {}).get("debug"):
        typer.echo(f"debug chart render context: {options.describe()}", err=True)
    return options


@contextmanager
def registry_client(
    authfile: Path | None,
    creds: str | None,
    tls_verify: bool,
    mirrors: list[str] | None,
    retry_times: int | None = None,
) -> Iterator[RegistryClient]:
    """A registry client with credentials built as for `build` (--creds, SEALPY_CREDS,
    --authfile and the standard auth files), retrying as `--retry-times` says."""
    transport = transport_options(
        authfile=authfile,
        creds=creds,
        tls_verify=tls_verify,
        registry_mirror=mirrors,
        retry_times=retry_times,
    )
    with transport.client() as client:
        yield client


def open_store(root: Path | None) -> Store:
    """The local image store at ``--root`` (a file given as ``--root`` is a usage error);
    the pipeline is imported only when a command runs, so ``--help`` stays fast."""
    from sealpy.core import pipeline

    return pipeline.open_store(root)


def store_progress(quiet: bool) -> ProgressReporter:
    """Bars on a terminal; nothing otherwise (the plain reporter speaks of "caching")."""
    from sealpy.core.progress import progress_for

    return progress_for(sys.stderr, quiet=quiet or not sys.stderr.isatty())


def print_events(
    *, quiet: bool = False, debug: bool = False, stdout_free: bool = False
) -> Callable[[Event], None]:
    """How the CLI shows pipeline events: warnings always (``warn ...`` on stderr); info
    lines (``info ...``) and status lines on stderr, build output on stdout, unless
    ``quiet``; debug lines (``debug ...`` on stderr) only with ``debug``. With
    ``stdout_free`` (``--json``) build output goes to stderr too: stdout is the object's."""
    from sealpy.core.events import EventKind

    def render(event: Event) -> None:
        if event.kind is EventKind.WARNING:
            typer.echo(f"warn {event.message}", err=True)
        elif event.kind is EventKind.DEBUG:
            if debug:
                typer.echo(f"debug {event.message}", err=True)
        elif quiet:
            return
        elif event.kind is EventKind.INFO:
            typer.echo(f"info {event.message}", err=True)
        elif event.kind is EventKind.STATUS:
            typer.echo(event.message, err=True)
        else:
            typer.echo(event.message, err=stdout_free)

    return render
