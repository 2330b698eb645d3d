"""The plugin host: one pluggy manager, loaded from the ``sealpy`` entry-point group.

The plugin manager is the only module-level state in sealpy. Pipeline functions accept a
``plugin_manager`` argument so tests and embedders can pass their own.

Every entry point of the group is found when a manager is made, and third-party plugins
are imported then. sealpy's own plugins (:data:`BUILTIN_HOOKS`) are imported the first
time one of the hooks they implement is called through :func:`hook`: a command imports
only what it uses — ``sealpy scan`` no strategy (and so no HTTP stack), ``registry save``
no builder. Results do not depend on the order plugins were registered in: the callers
merge them by name or sort them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pluggy

from sealpy.core import hookspecs

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pluggy import HookCaller

    from sealpy.core.cache.strategy import CacheStrategy, StrategyRegistry

DEFAULT_STRATEGY = "proxy"
STRATEGY_ENV = "SEALPY_CACHE_STRATEGY"
SEALOS_SYNC_ENV = "SEALOS_REGISTRY_SYNC_EXPERIMENTAL"

_STRATEGIES = ("sealpy_register_strategies",)
_DISCOVERY = ("sealpy_discover_images",)
_BUILDERS = ("sealpy_register_builders",)

# sealpy's own entry points (name, module) and the only hooks each implements; imported when
# one of those hooks is first called through hook(). tests/test_plugins.py checks this table against
# pyproject.toml and the modules themselves.
BUILTIN_HOOKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("proxy", "sealpy.strategies.proxy"): _STRATEGIES,
    ("sync", "sealpy.strategies.sync"): _STRATEGIES,
    ("discover-manifests", "sealpy.core.discovery.manifests"): _DISCOVERY,
    ("discover-charts", "sealpy.core.discovery.charts"): _DISCOVERY,
    ("discover-shim", "sealpy.core.discovery.shim"): _DISCOVERY,
    ("discover-archives", "sealpy.core.discovery.archives"): _DISCOVERY,
    ("builder-native", "sealpy.core.build.native"): _BUILDERS,
    ("builder-buildah", "sealpy.core.build.buildah"): _BUILDERS,
}


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that imports sealpy's own plugins for a hook only when :func:`hook`
    asks for that hook."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self._deferred: dict[str, list[EntryPoint]] = {}
        self._loading = threading.Lock()

    def load_entry_points(self) -> None:
        """Register the group's plugins as pluggy's ``load_setuptools_entrypoints`` does
        (the first entry point of a name wins; blocked names are skipped), deferring the
        built-in ones."""
        import importlib.metadata

        deferred_names = set()
        for dist in list(importlib.metadata.distributions()):
            for ep in dist.entry_points:
                if (
                    ep.group != hookspecs.PROJECT
                    or ep.name in deferred_names
                    or self.has_plugin(ep.name)
                    or self.is_blocked(ep.name)
                ):
                    continue
                hooks = BUILTIN_HOOKS.get((ep.name, ep.value))
                if hooks is None:
                    self.register(ep.load(), name=ep.name)
                    continue
                deferred_names.add(ep.name)
                for name in hooks:
                    self._deferred.setdefault(name, []).append(ep)

    def load_deferred(self, hook: str) -> None:
        """Import and register the deferred built-in plugins implementing ``hook`` (under a
        lock: another thread calling the hook meanwhile waits for all of them)."""
        with self._loading:
            entry_points = self._deferred.pop(hook, [])
            for ep in entry_points:
                if self.has_plugin(ep.name) or self.is_blocked(ep.name):
                    continue
                plugin = ep.load()
                if not self.is_registered(plugin):  # passed to new_plugin_manager as well
                    self.register(plugin, name=ep.name)
            if entry_points:
                self.check_pending()


def hook(manager: pluggy.PluginManager, name: str) -> HookCaller:
    """``manager.hook.<name>``, with sealpy's own plugins for it loaded first: how sealpy
    calls a hook (a manager made otherwise is used as it is)."""
    if isinstance(manager, PluginManager):
        manager.load_deferred(name)
    caller: HookCaller = getattr(manager.hook, name)
    return caller


def new_plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, entry-point plugins and ``plugins`` registered."""
    manager = PluginManager()
    if entry_points:
        manager.load_entry_points()
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
    from sealpy.core.cache.strategy import StrategyRegistry

    registry = StrategyRegistry()
    hook(manager or plugin_manager(), "sealpy_register_strategies")(registry=registry)
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
