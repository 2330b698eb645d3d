"""The three stages, as plain functions: ``scan`` → ``cache`` → ``build``.

Each takes values and returns values; the CLI only parses arguments, calls these and
renders the results. Callable from Python::

    from sealpy.core import pipeline
    scanned = pipeline.scan(Path("my-app"))
    report = pipeline.cache(scanned.images, Path("my-app/registry"), strategy="proxy")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

from sealpy.core.errors import ContextError, StrategyUnavailableError, UsageError
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, ScanResult
from sealpy.core.plugins import plugin_manager, resolve_strategy
from sealpy.core.strategy import CacheStrategy

if TYPE_CHECKING:
    from sealpy.core.auth import CredentialProvider
    from sealpy.core.builder import BuildResult, ImageBuilder
    from sealpy.core.reference import Platform
    from sealpy.core.registries import RegistriesConfig


def scan(
    context_dir: Path,
    *,
    build_file: Path | None = None,
    extra_images: Sequence[str] = (),
    strict: bool = False,
    manager: pluggy.PluginManager | None = None,
) -> ScanResult:
    """Find the build files and every image the context needs (see :mod:`sealpy.core.discovery`)."""
    from sealpy.core.discovery import scan_context

    result = scan_context(
        Path(context_dir),
        build_file=build_file,
        extra_images=extra_images,
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
) -> type[CacheStrategy]:
    """The strategy to use (``--strategy``, ``SEALPY_CACHE_STRATEGY``,
    ``SEALOS_REGISTRY_SYNC_EXPERIMENTAL=true``, else ``proxy``), checked to be available."""
    strategy = resolve_strategy(name, os.environ if environ is None else environ, manager)
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
    registry_dir = Path(registry_dir).absolute()
    if not images.images and not images.archives:
        return CacheReport(strategy=chosen.name)
    registry_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = chosen().cache(images, registry_dir, options)
    if not report.seconds:
        report = CacheReport(
            report.strategy, report.images, time.monotonic() - started, report.requests
        )
    return report


def select_builder(name: str = "native", *, manager: pluggy.PluginManager | None = None):
    """The builder class registered as ``name``, checked to be available."""
    from sealpy.core.builder import BuilderRegistry

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
    manager: pluggy.PluginManager | None = None,
) -> BuildResult:
    """Build the scanned context into the local image store (default
    ``$XDG_DATA_HOME/sealpy/store``) with a builder (``native`` unless told otherwise).
    Timestamps come from ``epoch``, else ``SOURCE_DATE_EPOCH``, else 0."""
    from sealpy.core.builder import BuildRequest
    from sealpy.core.store import default_root

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
        **({"warn": warn} if warn is not None else {}),
    )
    return chosen().build(request)
