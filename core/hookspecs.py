"""Every sealpy hook, documented: the only place hooks are declared.

A plugin is any module or object with functions marked ``@hookimpl`` and named after a
hook below. Plugins are found through the ``sealpy`` entry-point group — the built-in
strategies, discovery sources and builders register there too — so a third-party
package only needs, in its ``pyproject.toml``::

    [project.entry-points.sealpy]
    my-strategy = "my_package.plugin"

The plugin manager calls ``check_pending()`` at start-up: a function marked ``@hookimpl``
whose name is not a hook here (a typo) is an error, not silently ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sealpy.core.build import BuilderRegistry
    from sealpy.core.cache.strategy import StrategyRegistry
    from sealpy.core.model import BuildContext, DiscoveryResult

PROJECT = "sealpy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sealpy_register_strategies(registry: StrategyRegistry) -> None:
    """Register caching strategies: call ``registry.register(StrategyClass)`` for each.

    A strategy is a :class:`sealpy.core.cache.strategy.CacheStrategy` subclass with a unique
    ``name``, a one-line ``description``, an ``availability()`` check and a ``cache()``
    method. ``sealpy build --strategy NAME`` selects it.
    """


@hookspec
def sealpy_discover_images(context: BuildContext) -> DiscoveryResult | None:
    """Find images a build context needs, in one kind of source.

    Return a :class:`sealpy.core.model.DiscoveryResult` (findings with their locations,
    archive entries, warnings) or ``None`` when the source is absent. The results of every
    implementation are merged, de-duplicated and filtered by ``.sealignore``. Raise
    :class:`sealpy.core.errors.ContextError` for input that must fail the scan (a chart
    that does not render, a malformed ``tar.txt`` line).
    """


@hookspec
def sealpy_register_builders(registry: BuilderRegistry) -> None:
    """Register image builders: call ``registry.register(BuilderClass)`` for each.

    A builder is a :class:`sealpy.core.build.ImageBuilder` subclass that turns a build
    file and its context into an image in the local store. ``sealpy build --builder NAME``
    selects it; ``native`` is the default.
    """
