"""Every built-in strategy, and the example third-party plugin, pass the conformance suite:
the caching cases, the fault cases (15 % of requests failing, the retry budget, tokens
failing and expiring) and the error-parity cases (see sealpy.core.testing.conformance)."""

import ast
import sys
from pathlib import Path

from sealpy.core.api import ImageReference
from sealpy.core.testing.conformance import Catalog, StrategyConformance, image_set
from sealpy.core.testing.faultproxy import FaultProxy

EXAMPLE = Path(__file__).parents[1] / "examples" / "sealpy-example-strategy"
sys.path.insert(0, str(EXAMPLE))
import sealpy_example_strategy  # noqa: E402 - found through the path above


class TestProxy(StrategyConformance):
    strategy = "proxy"


class TestSync(StrategyConformance):
    strategy = "sync"


class TestExamplePlugin(StrategyConformance):
    strategy = "shelf"
    plugins = (sealpy_example_strategy,)

    def test_a_second_context_takes_every_blob_from_the_shelf(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        with FaultProxy(c.plain.host) as proxy:
            refs = [ImageReference(proxy.host, r, "1") for r in ("library/single", "library/multi")]
            images = image_set(refs)
            first = self.cache(images, tmp_path / "one" / "registry")
            blob_gets = proxy.count("GET", "blob")
            second = self.cache(images, tmp_path / "two" / "registry")
            assert proxy.count("GET", "blob") == blob_gets, "the second context fetched blobs"
        assert first.blobs_fetched == blob_gets > 0
        assert (second.blobs_fetched, second.blobs_reused) == (
            0,
            first.blobs_fetched + first.blobs_reused,
        )
        assert second.bytes_fetched == 0
        assert self.stored_blobs(tmp_path / "two" / "registry") == self.stored_blobs(
            tmp_path / "one" / "registry"
        )
        server = self.serve(tmp_path / "two" / "registry", start_registry)
        assert self.pulled(server, "library/single:1", tmp_path) == c.single.digest


def test_the_example_plugin_imports_only_the_public_api():
    tree = ast.parse((EXAMPLE / "sealpy_example_strategy.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {m for m in imported if m and m.startswith("sealpy")} == {"sealpy.core"}
    assert "from sealpy.core import api" in (EXAMPLE / "sealpy_example_strategy.py").read_text()
