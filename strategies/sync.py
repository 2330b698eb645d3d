"""The ``sync`` strategy (not implemented yet)."""

from __future__ import annotations

from pathlib import Path

from sealpy.core.errors import NotImplementedYetError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import CacheOptions, CacheReport, ImageSet
from sealpy.core.strategy import CacheStrategy


class SyncStrategy(CacheStrategy):
    name = "sync"
    description = "a local docker-registry on <context>/registry plus skopeo copy (Sealos >= 4.3)"

    def cache(self, images: ImageSet, registry_dir: Path, options: CacheOptions) -> CacheReport:
        raise NotImplementedYetError("the sync strategy is not implemented yet")


@hookimpl
def sealpy_register_strategies(registry) -> None:
    registry.register(SyncStrategy)
