"""The plugin host: one pluggy manager, loaded from the ``sealpy`` entry-point group.

The plugin manager is the only module-level state in sealpy. Pipeline functions accept a
``plugin_manager`` argument so tests and embedders can pass their own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import pluggy

from sealpy.core import hookspecs
from sealpy.core.cache.strategy import CacheStrategy, StrategyRegistry

DEFAULT_STRATEGY = "proxy"
STRATEGY_ENV = "SEALPY_CACHE_STRATEGY"
SEALOS_SYNC_ENV = "SEALOS_REGISTRY_SYNC_EXPERIMENTAL"


def new_plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, entry-point plugins and ``plugins`` registered."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if entry_points:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    for plugin in plugins:
        if not manager.is_registered(plugin):  # also found through its entry point
            manager.register(plugin)
    manager.check_pending()
    return manager


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (entry points loaded once)."""
    return new_plugin_manager()


def strategy_registry(manager: pluggy.PluginManager | None = None) -> StrategyRegistry:
    registry = StrategyRegistry()
    (manager or plugin_manager()).hook.sealpy_register_strategies(registry=registry)
    return registry


def strategy_name(flag: str | None, environ: Mapping[str, str]) -> str:
    """The strategy to use, highest precedence first: ``--strategy``; ``SEALPY_CACHE_STRATEGY``;
    ``SEALOS_REGISTRY_SYNC_EXPERIMENTAL=true`` (exactly ``true``, as Sealos reads it) → ``sync``;
    else ``proxy``."""
    if flag:
        return flag
    if environ.get(STRATEGY_ENV):
        return environ[STRATEGY_ENV]
    if environ.get(SEALOS_SYNC_ENV) == "true":
        return "sync"
    return DEFAULT_STRATEGY


def resolve_strategy(
    flag: str | None,
    environ: Mapping[str, str],
    manager: pluggy.PluginManager | None = None,
) -> type[CacheStrategy]:
    """Look the selected strategy up; unknown names raise an error listing the known ones."""
    return strategy_registry(manager).get(strategy_name(flag, environ))
