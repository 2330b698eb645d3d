"""The conformance suite's base: per-test strategy state and the helpers every case uses
(cache with the strategy under test, serve the result with a stock registry, pull it
with skopeo). See :mod:`sealpy.core.testing.conformance`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import AnonymousCredentials, ConfiguredCredentials, Credential
from sealpy.core.model import (
    CacheOptions,
    CacheReport,
    ImageSet,
    RetryPolicy,
)
from sealpy.core.plugins import new_plugin_manager, strategy_registry
from sealpy.core.reference import Platform
from sealpy.core.testing.catalog import (
    AMD64,
)
from sealpy.core.testing.registry import (
    RegistryServer,
    skopeo_pull,
)
from sealpy.core.transport.distribution import DistributionLayout


class ConformanceBase:
    """What a case needs besides its assertions. ``strategy`` names the strategy under
    test; ``plugins`` registers plugin modules that are not installed."""

    strategy: ClassVar[str] = ""
    plugins: ClassVar[tuple[object, ...]] = ()

    # --- per-test state: override these for a strategy that keeps state of its own ------

    def prepare(self, state_dir: Path) -> Mapping[str, str]:
        """Called before each case with a fresh, empty ``state_dir``; returns environment
        variables to set for that case (restored afterwards). A strategy with a cache of
        its own points it there, so every case starts cold and none sees another's state::

            def prepare(self, state_dir):
                return {"MY_STRATEGY_CACHE": str(state_dir / "cache")}

        Default: the strategy's own
        :meth:`~sealpy.core.cache.strategy.CacheStrategy.state_environment`, which the
        benchmark uses too. The fault cases' fault-free reference run (one per class) is
        prepared once."""
        manager = new_plugin_manager(self.plugins) if self.plugins else None
        return strategy_registry(manager).get(self.strategy).state_environment(state_dir)

    def finish(self, state_dir: Path) -> None:
        """Called after each case (also a failed one): stop what :meth:`prepare` started.
        ``state_dir`` is removed by pytest later."""

    @pytest.fixture(autouse=True)
    def _strategy_state(self, tmp_path_factory, monkeypatch) -> Iterator[Path]:
        state_dir = tmp_path_factory.mktemp("strategy-state")
        for name, value in self.prepare(state_dir).items():
            monkeypatch.setenv(name, value)
        try:
            yield state_dir
        finally:
            self.finish(state_dir)

    # --- helpers -----------------------------------------------------------------------

    def cache(
        self,
        images: ImageSet,
        registry_dir: Path,
        *,
        platforms: Sequence[Platform] = (AMD64,),
        all_platforms: bool = False,
        credential: Credential | None = None,
        retry: RetryPolicy | None = None,
    ) -> CacheReport:
        manager = new_plugin_manager(self.plugins) if self.plugins else None
        options = CacheOptions(
            platforms=tuple(platforms),
            all_platforms=all_platforms,
            max_parallel=4,
            credentials=ConfiguredCredentials(creds=credential, environ={})
            if credential
            else AnonymousCredentials(),
            retry=retry or RetryPolicy(),
        )
        return pipeline.cache(
            images, registry_dir, strategy=self.strategy, options=options, manager=manager
        )

    @staticmethod
    def serve(registry_dir: Path, start_registry) -> RegistryServer:
        return start_registry(registry_dir)

    @staticmethod
    def pulled(
        server: RegistryServer, reference: str, tmp_path: Path, *, arch: str | None = None
    ) -> str:
        """Pull with skopeo (which verifies every blob) and return the manifest digest."""
        target = tmp_path / f"pull-{abs(hash((reference, arch)))}"
        if target.exists():
            shutil.rmtree(target)
        return skopeo_pull(f"docker://{server.host}/{reference}", target, override_arch=arch)

    @staticmethod
    def stored_blobs(registry_dir: Path) -> set[str]:
        return set(DistributionLayout(registry_dir).blob_digests())

    @staticmethod
    def no_leftovers(registry_dir: Path) -> None:
        """Nothing but the registry tree (no partial uploads, no config or log files)."""
        assert sorted(p.name for p in registry_dir.iterdir()) == ["docker"]
        uploads = [p for p in registry_dir.rglob("_uploads") if any(p.iterdir())]
        assert uploads == [], f"unfinished uploads left behind: {uploads}"
