"""The caching-strategy interface third parties implement, and the registry they add to.

A strategy is a class registered by name through the ``sealpy_register_strategies`` hook::

    from sealpy.core.hookspecs import hookimpl
    from sealpy.core.cache.strategy import Availability, CacheStrategy

    class MyStrategy(CacheStrategy):
        name = "mine"
        description = "Copies images with my tool"

        @classmethod
        def availability(cls) -> Availability:
            if shutil.which("mytool") is None:
                return Availability.missing("mytool not found; pip install mytool")
            return Availability.ok()

        def cache(self, images, registry_dir, options):
            ...  # write the distribution layout under registry_dir
            return CacheReport(strategy=self.name, images=...)

    @hookimpl
    def sealpy_register_strategies(registry):
        registry.register(MyStrategy)

``cache`` must leave ``registry_dir`` servable by a stock ``docker-registry`` for whatever it
completed, even when interrupted, and raise :class:`~sealpy.core.errors.SealpyError` subclasses
naming the image and the cause when it cannot finish.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from sealpy.core.errors import UnknownStrategyError
from sealpy.core.model import CacheOptions, CacheReport, ImageSet

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
T = TypeVar("T")


@dataclass(frozen=True)
class Availability:
    """Whether something can run here, and if not, why and how to fix it."""

    available: bool
    reason: str = ""

    @classmethod
    def ok(cls) -> Availability:
        return cls(True)

    @classmethod
    def missing(cls, reason: str) -> Availability:
        return cls(False, reason)


class CacheStrategy(ABC):
    """Caches an :class:`ImageSet` into a distribution-layout directory."""

    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    def availability(cls) -> Availability:
        """Whether this strategy can run on this machine; the reason says how to fix it."""
        return Availability.ok()

    @classmethod
    def state_environment(cls, state_dir: Path) -> Mapping[str, str]:
        """Environment variables that put all the state this strategy keeps outside the
        registry directory (a cache of its own, a daemon's files) under ``state_dir``.

        The conformance suite calls it with a fresh, empty directory for every case, and
        the benchmark for every cold run (reused for warm runs), counting what lands there
        as disk the strategy used. Default: no state of its own."""
        return {}

    @abstractmethod
    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        """Store every image of ``images`` under ``registry_dir`` (the registry storage root)."""


class NamedRegistry(Generic[T]):
    """Named classes registered by plugins (strategies, builders); names are unique."""

    kind: ClassVar[str] = "item"
    plural: ClassVar[str] = "items"

    def __init__(self) -> None:
        self._items: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{cls!r} needs a lowercase `name` to be registered as a {self.kind}")
        if not getattr(cls, "description", ""):
            raise ValueError(f"{self.kind} {name!r} needs a one-line `description`")
        existing = self._items.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"two {self.plural} are named {name!r}: {existing!r} and {cls!r}")
        self._items[name] = cls

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self._items[n] for n in self.names())

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownStrategyError(
                f"unknown {self.kind} {name!r}; known {self.plural}: {known}"
            ) from None


class StrategyRegistry(NamedRegistry[CacheStrategy]):
    """The caching strategies plugins registered (``sealpy_register_strategies``)."""

    kind = "strategy"
    plural = "strategies"
