"""An example third-party caching strategy for sealpy: ``shelf``, a blob cache of its own.

Every blob it caches also goes on a shelf, a directory shared by every build context on the
machine (``SEALPY_SHELF_DIR``, default ``~/.cache/sealpy-example-shelf``): a layer that
two cluster images share is fetched from its registry once, and copied from the shelf
after that. (sealpy's own machine-wide blob cache does this for every strategy using the
engine's default destination; the shelf stays as the example of a destination of one's
own, which receives every blob itself.) Everything else — resolving, parallel transfers, verification, commit order,
conflicts, counts, errors — is sealpy's engine (:func:`sealpy.core.api.cache_with_engine`).
Check it with the conformance suite::

    class TestShelf(sealpy.core.testing.conformance.StrategyConformance):
        strategy = "shelf"
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sealpy.core import api

SHELF_ENV = "SEALPY_SHELF_DIR"


class ShelvedRepository(api.DistributionRepository):
    """A repository of the registry directory whose blobs come by way of the shelf."""

    def __init__(self, layout: api.DistributionLayout, name: str, shelf: api.DistributionLayout):
        super().__init__(layout, name)
        self.shelf = shelf.repository(name)

    def receive_blob(
        self,
        descriptor: api.Descriptor,
        source: api.ImageSource,
        on_bytes: Callable[[int], None] | None = None,
    ) -> api.Received:
        received = api.Received.REUSED  # counted as reused: no byte read from `source`
        if not self.shelf.has_blob(descriptor.digest):
            self.shelf.receive_blob(descriptor, source, on_bytes)
            received = api.Received.FETCHED
        super().receive_blob(descriptor, self.shelf)  # verified again on its way in
        return received


class ShelfStrategy(api.CacheStrategy):
    name = "shelf"
    description = "example plugin: proxy, keeping every blob on a shelf shared by all contexts"

    @classmethod
    def state_environment(cls, state_dir: Path) -> dict[str, str]:
        return {SHELF_ENV: str(state_dir / "shelf")}  # the benchmark and tests reset it

    def cache(
        self, images: api.ImageSet, registry_dir: Path, options: api.CacheOptions
    ) -> api.CacheReport:
        default = Path.home() / ".cache" / "sealpy-example-shelf"
        shelf = api.DistributionLayout(Path(os.environ.get(SHELF_ENV) or default))

        def destination(layout: api.DistributionLayout, repository: str) -> ShelvedRepository:
            return ShelvedRepository(layout, repository, shelf)

        return api.cache_with_engine(
            self.name, images, registry_dir, options, destination=destination
        )


@api.hookimpl
def sealpy_register_strategies(registry: api.StrategyRegistry) -> None:
    registry.register(ShelfStrategy)
