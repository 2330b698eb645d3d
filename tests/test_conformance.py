"""Every built-in strategy, and the example third-party plugin, pass the conformance suite:
the caching cases, the fault cases (15 % of requests failing, the retry budget, tokens
failing and expiring) and the error-parity cases (see sealpy.core.testing.conformance)."""

import sys
from pathlib import Path

from sealpy.core.testing.conformance import StrategyConformance

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "sealpy-example-strategy"))
import sealpy_example_strategy


class TestProxy(StrategyConformance):
    strategy = "proxy"


class TestSync(StrategyConformance):
    strategy = "sync"


class TestExamplePlugin(StrategyConformance):
    strategy = "serial"
    plugins = (sealpy_example_strategy,)
