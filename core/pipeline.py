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
from collections.abc import Mapping, Sequence
from pathlib import Path

import pluggy

from sealpy.core.errors import ContextError, StrategyUnavailableError
from sealpy.core.model import CacheOptions, CacheReport, ImageSet, ScanResult
from sealpy.core.plugins import plugin_manager, resolve_strategy
from sealpy.core.strategy import CacheStrategy


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
        report = CacheReport(report.strategy, report.images, time.monotonic() - started, report.requests)
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


def build(scanned: ScanResult, **kwargs):
    """Build the scanned context into the local store (not implemented yet)."""
    from sealpy.core.errors import NotImplementedYetError

    raise NotImplementedYetError("building images is not implemented yet")
