"""The three stages, as plain functions: ``scan`` → ``cache`` → ``build``.

Each takes values and returns values; the CLI only parses arguments, calls these and
renders the results. Callable from Python::

    from sealpy.core import pipeline
    scanned = pipeline.scan(Path("my-app"))
    report = pipeline.cache(scanned.images, Path("my-app/registry"), strategy="proxy")
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.errors import BuildError, ContextError, StrategyUnavailableError, UsageError
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, RenderOptions, ScanResult
from sealpy.core.plugins import plugin_manager, resolve_strategy

if TYPE_CHECKING:
    from sealpy.core.auth import CredentialProvider
    from sealpy.core.build import BuildResult, ImageBuilder, OutputOptions
    from sealpy.core.reference import Platform
    from sealpy.core.registries import RegistriesConfig


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
    # A run that was killed may have left half-written link files; they would make
    # `registry verify` fail although the re-run completes everything else.
    from sealpy.core.transport.distribution import DistributionLayout

    DistributionLayout(registry_dir).remove_abandoned_writes()
    started = time.monotonic()
    report = chosen().cache(images, registry_dir, options)
    if not report.seconds:
        report = CacheReport(
            report.strategy, report.images, time.monotonic() - started, report.requests
        )
    return report


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


def check_build_file(
    scanned: ScanResult,
    builder: str | type[ImageBuilder] = "native",
    *,
    registry_pending: bool = False,
    target: str | None = None,
    ignorefile: Path | None = None,
    manager: pluggy.PluginManager | None = None,
) -> None:
    """Cheap checks of the build files, for before the cache stage so that a wrong build
    file fails before a single image is downloaded: they parse (unknown or malformed
    instructions) and, for the native builder, it can run every instruction (no RUN) and
    each literal COPY/ADD source exists inside the context and is not ignored.

    Sources with variables (``$VAR``), ``--from`` sources and URLs are left to the builder,
    which knows ``ARG`` and ``ENV``. ``registry_pending``: the cache stage is about to
    create ``registry/``, so sources under it are not checked yet. ``target`` and
    ``ignorefile`` are ``--target`` and ``--ignorefile``: only the stages built are
    checked, against that ignore file."""
    from sealpy.core.build.context import IgnoreMatcher, Tree
    from sealpy.core.build.native import NativeBuilder, split_stages
    from sealpy.core.build.parser import parse_files

    chosen = builder if isinstance(builder, type) else select_builder(builder, manager=manager)
    context = scanned.context
    instructions = parse_files(context.build_files, root=context.root)
    if not issubclass(chosen, NativeBuilder):
        # Other builders (buildah) have their own rules for sources (symlinks, ignore
        # files); only the parse is common ground.
        return
    head, stages = split_stages(instructions, target)
    tree = Tree(context.root, ignore=IgnoreMatcher.for_context(context.root, ignorefile))
    for ins in [*head, *(i for stage in stages for i in stage)]:
        if ins.keyword not in ("COPY", "ADD") or ins.has_flag("from") or "$" in ins.args:
            continue
        for source in _literal_sources(ins):
            if registry_pending and _under_registry(source):
                continue
            try:
                _check_source(tree, source, ins.keyword)
            except BuildError as exc:
                raise ins.error(str(exc)) from None


_URL_SOURCE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^git@")


def _literal_sources(ins) -> list[str]:
    from sealpy.core.build.parser import expand_words

    words = expand_words(ins, {})
    return [w for w in words[:-1] if not _URL_SOURCE.match(w)]


def _under_registry(source: str) -> bool:
    parts = [p for p in source.split("/") if p not in ("", ".")]
    return bool(parts) and parts[0] == "registry"


def _check_source(tree, source: str, keyword: str) -> None:
    """What the native builder's plan checks first for one source (missing, outside the
    context, excluded by .dockerignore), without walking directories."""
    from sealpy.core.build.context import IGNORE_FILES, has_glob

    if has_glob(source):
        if not tree.glob(source):
            raise BuildError(f"{keyword} {source}: no file in {tree.what} matches")
        return
    path = tree.resolve(source.lstrip("/"))
    rel = tree.relative(path)
    if tree.ignore and rel and tree.ignore.ignored(rel):
        raise BuildError(f"{keyword} {source}: excluded by {IGNORE_FILES[1]} or {IGNORE_FILES[0]}")


def select_builder(name: str = "native", *, manager: pluggy.PluginManager | None = None):
    """The builder class registered as ``name``, checked to be available."""
    from sealpy.core.build import BuilderRegistry

    registry = BuilderRegistry()
    (manager or plugin_manager()).hook.sealpy_register_builders(registry=registry)
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


def build(
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
    cached_images: bool = False,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    epoch: int | None = None,
    output: OutputOptions | None = None,
    target: str | None = None,
    ignorefile: Path | None = None,
    manager: pluggy.PluginManager | None = None,
) -> BuildResult:
    """Build the scanned context into the local image store (default
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
        cached_images=cached_images,
        echo=echo,
        source_date_epoch=epoch if epoch is not None else source_date_epoch(),
        output=output or OutputOptions(),
        target=target,
        ignorefile=ignorefile,
        **({"warn": warn} if warn is not None else {}),
    )
    return chosen().build(request)
