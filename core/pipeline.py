"""The pipeline: the stages as plain functions, and one entry point per command.

Stages, each taking values and returning values: :func:`scan` → :func:`cache` →
:func:`build_scanned`. Commands, each taking one frozen job value and an event sink
(:mod:`sealpy.core.events`) and returning a result value: :func:`build` (scan, the
builder's pre-check, cache, build), :func:`save` (``registry save``: scan, cache) and
:func:`merge`. The command entry points own the sequence; the CLI only parses arguments
into a job, calls one of them and renders the events and the result, so a Python caller
gets the CLI's behaviour with one call::

    from sealpy.core import pipeline
    scanned = pipeline.scan(Path("my-app"))
    report = pipeline.cache(scanned.images, Path("my-app/registry"), strategy="proxy")
    built = pipeline.build(pipeline.BuildJob(Path("my-app"), tags=("my-app:1",)))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

from sealpy.core import plugins
from sealpy.core.cache import stage_events
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.errors import ContextError, StrategyUnavailableError, UsageError
from sealpy.core.events import Event, EventKind, EventSink, discard
from sealpy.core.hosts import TransportOptions
from sealpy.core.lockfile import use_lock
from sealpy.core.model import (
    CacheOptions,
    CacheReport,
    ImageSet,
    RenderOptions,
    ScanResult,
)
from sealpy.core.plugins import plugin_manager, resolve_strategy
from sealpy.core.progress import PlannedProgress

if TYPE_CHECKING:
    from sealpy.core.auth import CredentialProvider
    from sealpy.core.build import BuildResult, ImageBuilder, OutputOptions
    from sealpy.core.build.merge import MergeResult
    from sealpy.core.reference import Platform
    from sealpy.core.registries import RegistriesConfig
    from sealpy.core.store.layout import Store, StoredImage
    from sealpy.core.transport.blobcache import BlobCache


def scan(
    context_dir: Path,
    *,
    build_file: Path | None = None,
    extra_images: Sequence[str] = (),
    strict: bool = False,
    require_build_file: bool = True,
    render: RenderOptions | None = None,
    manager: pluggy.PluginManager | None = None,
) -> ScanResult:
    """Find the build files and every image the context needs (see :mod:`sealpy.core.discovery`).

    ``require_build_file=False`` is for the cache stage alone (``registry save``): in Sealos
    the build file plays no part in caching, so a context without one is fine there.
    ``render``: how charts are rendered (Sealos's context and the sandbox's default bounds
    unless told otherwise)."""
    from sealpy.core.discovery import scan_context

    result = scan_context(
        Path(context_dir),
        build_file=build_file,
        extra_images=extra_images,
        require_build_file=require_build_file,
        render=render,
        manager=manager or plugin_manager(),
    )
    warnings = result.images.warnings
    if strict and warnings:
        raise ContextError(f"{len(warnings)} scan warning(s) with --strict; first: {warnings[0]}")
    return result


def select_strategy(
    name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    manager: pluggy.PluginManager | None = None,
    check_available: bool = True,
) -> type[CacheStrategy]:
    """The strategy to use (``--strategy``, ``SEALPY_CACHE_STRATEGY``,
    ``SEALOS_REGISTRY_SYNC_EXPERIMENTAL=true``, else ``proxy``), checked to be available.

    The name is always resolved (an unknown one is an error even when nothing will be
    cached); ``check_available=False`` skips only the availability check, for a build
    that does not cache (``--save-image=false``) and so needs no skopeo."""
    strategy = resolve_strategy(name, os.environ if environ is None else environ, manager)
    if not check_available:
        return strategy
    availability = strategy.availability()
    if not availability.available:
        raise StrategyUnavailableError(
            f"strategy {strategy.name} is unavailable: {availability.reason}"
        )
    return strategy


def cache(
    images: ImageSet,
    registry_dir: Path,
    *,
    strategy: str | type[CacheStrategy] | None = None,
    options: CacheOptions | None = None,
    manager: pluggy.PluginManager | None = None,
) -> CacheReport:
    """Cache ``images`` into ``registry_dir`` (a registry storage root) with a strategy."""
    options = options or CacheOptions()
    chosen = strategy if isinstance(strategy, type) else select_strategy(strategy, manager=manager)
    registry_dir = check_directory(Path(registry_dir), "registry directory").absolute()
    if not images.images and not images.archives:
        return CacheReport(strategy=chosen.name)
    registry_dir.mkdir(parents=True, exist_ok=True)
    from sealpy.core.cache.run import run_strategy

    return run_strategy(chosen, images, registry_dir, options)


def check_directory(path: Path, what: str) -> Path:
    """``path`` as a directory sealpy may create or write into, or a one-line
    :class:`UsageError`: neither it nor any existing parent may be something other than a
    directory. Checked before any work starts, so a typo does not surface as an internal
    error once every image has been downloaded."""
    path = Path(path)
    probe = path.absolute()
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise UsageError(f"{what} {path}: {probe} is a dangling symlink")
    if not probe.is_dir():
        if probe == path.absolute():
            raise UsageError(f"{what} {path} is not a directory")
        raise UsageError(f"{what} {path}: {probe} is not a directory")
    return path


def select_builder(name: str = "native", *, manager: pluggy.PluginManager | None = None):
    """The builder class registered as ``name``, checked to be available."""
    from sealpy.core.build import BuilderRegistry

    registry = BuilderRegistry()
    plugins.hook(manager or plugin_manager(), "sealpy_register_builders")(registry=registry)
    builder = registry.get(name)
    availability = builder.availability()
    if not availability.available:
        raise StrategyUnavailableError(f"builder {name} is unavailable: {availability.reason}")
    return builder


SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org) as an int, or ``None`` when unset."""
    value = (os.environ if environ is None else environ).get(SOURCE_DATE_EPOCH, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise UsageError(f"invalid {SOURCE_DATE_EPOCH}={value!r}: expected seconds since 1970")
    return int(value)


def build_scanned(
    scanned: ScanResult,
    *,
    tags: Sequence[str] = (),
    builder: str | type[ImageBuilder] = "native",
    platforms: Sequence[Platform] | None = None,
    build_args: Mapping[str, str] | None = None,
    store_root: Path | None = None,
    credentials: CredentialProvider | None = None,
    tls_verify: bool = True,
    registries: RegistriesConfig | None = None,
    blob_cache: BlobCache | None = None,
    cached_images: bool = False,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    epoch: int | None = None,
    output: OutputOptions | None = None,
    target: str | None = None,
    ignorefile: Path | None = None,
    manager: pluggy.PluginManager | None = None,
) -> BuildResult:
    """The build stage alone: the scanned context into the local image store (default
    ``$XDG_DATA_HOME/sealpy/store``) with a builder (``native`` unless told otherwise).
    Timestamps come from ``epoch`` (``--timestamp``), else ``SOURCE_DATE_EPOCH``, else 0.
    ``output``, ``target`` and ``ignorefile`` carry buildah's flags of the same names (see
    :class:`~sealpy.core.build.OutputOptions`)."""
    from sealpy.core.build import BuildRequest, OutputOptions
    from sealpy.core.store.layout import default_root

    chosen = builder if isinstance(builder, type) else select_builder(builder, manager=manager)
    request = BuildRequest(
        context=scanned.context,
        store_root=Path(store_root) if store_root is not None else default_root(),
        tags=tuple(tags),
        platforms=tuple(platforms) if platforms else None,
        build_args=dict(build_args or {}),
        credentials=credentials,
        tls_verify=tls_verify,
        registries=registries,
        blob_cache=blob_cache,
        cached_images=cached_images,
        echo=echo,
        source_date_epoch=epoch if epoch is not None else source_date_epoch(),
        output=output or OutputOptions(),
        target=target,
        ignorefile=ignorefile,
        **({"warn": warn} if warn is not None else {}),
    )
    return chosen().build(request)


# --- one entry point per command ------------------------------------------------------------


@dataclass(frozen=True)
class BuildJob:
    """What ``sealpy build`` is asked to do, as the CLI parsed it.

    ``context``, ``build_file``, ``extra_images``, ``strict`` and ``render`` are the scan's
    (see :func:`scan`). With ``save_image`` the images are cached into
    ``<context>/registry`` by ``strategy`` (a name, as ``--strategy``, or a class; ``None``:
    from the environment, else ``proxy``) with ``cache``, whose credentials, TLS policy and
    registries the builder's own pulls (FROM, ``COPY --from``) use too, cached or not;
    ``cache.platforms`` are the platforms cached, ``platforms`` the ones built (``None``:
    this host's); the CLI sets both from ``--platform``. ``cache.progress`` is closed once
    images were cached (at once without ``save_image``). The rest are buildah's flags of
    the same names: ``epoch`` is ``--timestamp`` (else ``SOURCE_DATE_EPOCH``, else 0),
    ``store_root`` is ``--root`` (default ``$XDG_DATA_HOME/sealpy``), ``iidfile`` gets the
    image ID. ``<context>/sealpy.lock``, when it exists, pins every image cached
    (:mod:`sealpy.core.lockfile`); ``locked`` makes a missing lock an error, ``offline``
    caches from the lock and the blob cache alone."""

    context: Path
    tags: tuple[str, ...] = ()
    build_file: Path | None = None
    extra_images: tuple[str, ...] = ()
    strict: bool = False
    render: RenderOptions | None = None
    save_image: bool = True
    strategy: str | type[CacheStrategy] | None = None
    cache: CacheOptions = field(default_factory=CacheOptions)
    builder: str | type[ImageBuilder] = "native"
    platforms: tuple[Platform, ...] | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    store_root: Path | None = None
    output: OutputOptions = field(default_factory=lambda: _output_options())
    target: str | None = None
    ignorefile: Path | None = None
    epoch: int | None = None
    iidfile: Path | None = None
    locked: bool = False
    offline: bool = False


def _output_options() -> OutputOptions:
    """buildah's output flags at their defaults (the build package is imported only by
    commands that build)."""
    from sealpy.core.build import OutputOptions

    return OutputOptions()


@dataclass(frozen=True)
class BuildJobResult:
    """What a build did: the scan, the cache stage's report (``None`` when nothing was
    cached) and the built image."""

    scanned: ScanResult
    cache: CacheReport | None
    image: BuildResult


@dataclass(frozen=True)
class SaveJob:
    """What ``sealpy registry save`` is asked to do: scan ``context`` (no build file
    needed) and cache every image it needs into ``registry_dir`` (default
    ``<context>/registry``), as :class:`BuildJob` describes the same fields."""

    context: Path
    registry_dir: Path | None = None
    build_file: Path | None = None
    extra_images: tuple[str, ...] = ()
    strict: bool = False
    render: RenderOptions | None = None
    strategy: str | type[CacheStrategy] | None = None
    cache: CacheOptions = field(default_factory=CacheOptions)
    locked: bool = False
    offline: bool = False


@dataclass(frozen=True)
class SaveJobResult:
    """The scan, the registry directory written, and the cache stage's report (``None``
    when there was nothing to cache)."""

    scanned: ScanResult
    registry_dir: Path
    cache: CacheReport | None


@dataclass(frozen=True)
class MergeJob:
    """What ``sealpy merge`` is asked to do: merge the stored ``images`` (in order) into
    one named ``tags``, in the store at ``store_root``. Inputs the store lacks are pulled
    as ``transport`` says (``all_platforms``: every platform of them);
    ``platforms`` ``None`` takes each input's only (or this host's) image. ``epoch``
    (default ``SOURCE_DATE_EPOCH``, else 0) dates the result."""

    images: tuple[str, ...]
    tags: tuple[str, ...]
    store_root: Path | None = None
    platforms: tuple[Platform, ...] | None = None
    all_platforms: bool = False
    transport: TransportOptions = field(default_factory=TransportOptions)
    epoch: int | None = None


def build(
    job: BuildJob,
    on_event: EventSink = discard,
    *,
    manager: pluggy.PluginManager | None = None,
) -> BuildJobResult:
    """``sealpy build`` in one call: scan, the builder's pre-check, cache, build.

    Everything that can be checked without downloading is checked first (strategy,
    builder, ``--iidfile``, the scan, the build file, ``--root``), so a typo fails before
    a single image is fetched. Warnings, info lines and the builder's output reach
    ``on_event`` (see :mod:`sealpy.core.events`)."""
    from sealpy.core.build.flags import check_iidfile, write_iidfile

    strategy = _strategy(job.strategy, check_available=job.save_image, manager=manager)
    builder = _builder(job.builder, manager)
    check_iidfile(job.iidfile, len(job.platforms or ()) or 1)
    scanned = scan(
        job.context,
        build_file=job.build_file,
        extra_images=job.extra_images,
        strict=job.strict,
        render=job.render,
        manager=manager,
    )
    _warn_scan(scanned, on_event)
    caching = bool(job.save_image and len(scanned.images))
    builder().check(
        scanned.context,
        target=job.target,
        ignorefile=job.ignorefile,
        registry_pending=caching,
    )
    if job.store_root is not None:
        check_directory(job.store_root, "--root")
    report = None
    if job.save_image:
        registry_dir = check_directory(Path(job.context) / "registry", "registry directory")
        scanned, strategy = use_lock(
            scanned, strategy, job.cache, locked=job.locked, offline=job.offline
        )
        report = _cache_stage(scanned, registry_dir, strategy, job.cache, on_event, manager)
    else:
        job.cache.progress.close()
    image = build_scanned(
        scanned,
        tags=job.tags,
        builder=builder,
        platforms=job.platforms,
        build_args=job.build_args,
        store_root=job.store_root,
        credentials=job.cache.credentials,
        tls_verify=job.cache.tls_verify,
        registries=job.cache.registries,
        blob_cache=job.cache.blob_cache,
        cached_images=caching,
        echo=lambda line: on_event(Event(EventKind.OUTPUT, line)),
        warn=lambda message: on_event(Event(EventKind.WARNING, message)),
        epoch=job.epoch,
        output=job.output,
        target=job.target,
        ignorefile=job.ignorefile,
    )
    if job.iidfile is not None:
        write_iidfile(job.iidfile, image.image_ids[0])
    return BuildJobResult(scanned, report, image)


def save(
    job: SaveJob,
    on_event: EventSink = discard,
    *,
    manager: pluggy.PluginManager | None = None,
) -> SaveJobResult:
    """``sealpy registry save`` in one call: scan, then cache every image found."""
    strategy = _strategy(job.strategy, check_available=True, manager=manager)
    # The build file plays no part in caching (as in Sealos): a context may have none.
    scanned = scan(
        job.context,
        build_file=job.build_file,
        extra_images=job.extra_images,
        strict=job.strict,
        require_build_file=False,
        render=job.render,
        manager=manager,
    )
    _warn_scan(scanned, on_event)
    # Checked after the scan (which reports a missing context best), before any download.
    if job.registry_dir is not None:
        target = check_directory(job.registry_dir, "--registry-dir")
    else:
        target = check_directory(Path(job.context) / "registry", "registry directory")
    scanned, strategy = use_lock(
        scanned, strategy, job.cache, locked=job.locked, offline=job.offline
    )
    report = _cache_stage(scanned, target, strategy, job.cache, on_event, manager)
    return SaveJobResult(scanned, target, report)


def merge(job: MergeJob, on_event: EventSink = discard) -> MergeResult:
    """``sealpy merge`` in one call: pull the inputs the store lacks, merge them by
    Sealos's rules (see :mod:`sealpy.core.build.merge`), name the result."""
    from sealpy.core.build.merge import merge as merge_images
    from sealpy.core.store import transfer
    from sealpy.core.store.layout import store_name

    store = open_store(job.store_root)
    client = job.transport.client()
    try:

        def resolve(text: str, wanted: Platform | None) -> StoredImage:
            return transfer.ensure_image(
                store,
                text,
                wanted,
                lambda: client,
                echo=lambda line: on_event(Event(EventKind.STATUS, line)),
                all_platforms=job.all_platforms,
                max_parallel=job.transport.max_parallel,
            )

        return merge_images(
            store,
            job.images,
            [store_name(t) for t in job.tags],
            platforms=job.platforms,
            epoch=job.epoch if job.epoch is not None else source_date_epoch() or 0,
            resolve=resolve,
            warn=lambda message: on_event(Event(EventKind.WARNING, message)),
        )
    finally:
        client.close()


def open_store(root: Path | None) -> Store:
    """The local image store at ``root`` (``--root``; default ``$XDG_DATA_HOME/sealpy``),
    a file given as ``root`` being a usage error, not an internal one."""
    from sealpy.core.store.layout import Store

    if root is not None:
        check_directory(root, "--root")
    return Store(root)


def _strategy(
    spec: str | type[CacheStrategy] | None,
    *,
    check_available: bool,
    manager: pluggy.PluginManager | None,
) -> type[CacheStrategy]:
    if isinstance(spec, type):
        return spec
    return select_strategy(spec, check_available=check_available, manager=manager)


def _builder(
    spec: str | type[ImageBuilder], manager: pluggy.PluginManager | None
) -> type[ImageBuilder]:
    return spec if isinstance(spec, type) else select_builder(spec, manager=manager)


def _warn_scan(scanned: ScanResult, on_event: EventSink) -> None:
    for warning in scanned.images.warnings:
        on_event(Event(EventKind.WARNING, str(warning)))


def _cache_stage(
    scanned: ScanResult,
    registry_dir: Path,
    strategy: type[CacheStrategy],
    options: CacheOptions,
    on_event: EventSink,
    manager: pluggy.PluginManager | None,
) -> CacheReport | None:
    """The cache stage of a command: say what is cached, cache it, say how it went."""
    images = scanned.images
    names = [str(i.reference) for i in images.images] + [
        f"{a.transport}:{scanned.context.relative(a.path)}" for a in images.archives
    ]
    if not names:
        options.progress.close()  # a display that was opened must give the cursor back
        on_event(Event(EventKind.INFO, "no images to cache"))
        return None
    for event in stage_events.before(names):
        on_event(event)
    if isinstance(options.progress, PlannedProgress):
        options.progress.plan(len(names))
    try:
        report = cache(images, registry_dir, strategy=strategy, options=options, manager=manager)
    finally:
        options.progress.close()
        for event in stage_events.after_run(options):
            on_event(event)
    for event in stage_events.served(report):
        on_event(event)
    on_event(Event(EventKind.INFO, report.summary()))
    return report
