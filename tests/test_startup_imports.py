"""Start-up cost: each command imports only what it uses (issue 16's start-up target;
benchmarks/bench_startup.py measures the time). Each command runs in a fresh interpreter,
as ``sealpy`` does, and the modules it imported are checked against what it must not need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, os, sys
from sealpy.core.cli import main
code = main(sys.argv[1:])
with open(os.environ["SEALPY_TEST_MODULES"], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""

# Never needed by these commands: the terminal display (stderr is not a terminal here), the
# Helm library (no charts), the builders and the image store.
NEVER = (
    "rich",
    "helm_python",
    "sealpy.core.build",
    "sealpy.core.store",
    "sealpy.core.discovery.chartworker",
)
# The registry client and its HTTP stack, the strategies, the copy engine.
NETWORK = (
    "requests",
    "urllib3",
    "tenacity",
    "sealpy.core.transport",
    "sealpy.core.cache.engine",
    "sealpy.strategies",
)


def _imported(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    record = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, "SEALPY_TEST_MODULES": str(record)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done, set(json.loads(record.read_text()))


def _offending(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.fixture(scope="module")
def context(image_factory, plain_registry, tmp_path_factory) -> Path:
    """A context naming one small image (in a shim list: no YAML to parse)."""
    image = image_factory.image("startup/one", [2048, 1024])
    image_factory.push(image, plain_registry.host, "startup/one", "1")
    root = tmp_path_factory.mktemp("startup-context")
    (root / "images" / "shim").mkdir(parents=True)
    (root / "images" / "shim" / "list").write_text(f"{plain_registry.host}/startup/one:1\n")
    (root / "Kubefile").write_text("FROM scratch\nCOPY registry registry\n")
    return root


def test_help_imports_only_the_command_line(tmp_path):
    done, modules = _imported(["--help"], tmp_path)
    assert "registry" in done.stdout
    forbidden = (
        *NEVER,
        *NETWORK,
        "yaml",
        "pluggy",
        "importlib.metadata",
        "sealpy.core.pipeline",
        "sealpy.core.model",
        "sealpy.core.discovery",
    )
    assert _offending(modules, forbidden) == []


def test_scan_imports_no_network_code(context, tmp_path):
    done, modules = _imported(["scan", str(context)], tmp_path)
    assert "startup/one:1" in done.stdout
    assert _offending(modules, (*NEVER, *NETWORK, "yaml")) == []


def test_a_warm_registry_save_imports_no_builder_and_no_yaml(context, tmp_path):
    args = ["registry", "save", "--registry-dir", str(tmp_path / "registry"), str(context)]
    _imported(args, tmp_path)  # caches the image
    done, modules = _imported(args, tmp_path)
    assert "0 blobs fetched" in done.stderr, done.stderr
    assert _offending(modules, (*NEVER, "yaml")) == []
    assert "sealpy.strategies.proxy" in modules  # the check sees what the command used


def test_a_command_alone_parses_as_in_the_whole_app():
    """The app holding only the named command (what ``main`` parses with) gives the same
    help and the same errors as the whole app."""
    from typer.testing import CliRunner

    from sealpy.core.cli.application import COMMANDS, REGISTRY_COMMANDS, app, app_for

    runner = CliRunner()
    paths = [[name] for name in COMMANDS] + [["registry", name] for name in REGISTRY_COMMANDS]
    for path in paths:
        alone = app_for(path)
        assert alone is not app
        for args in ([*path, "--help"], [*path, "--no-such-flag"], path):
            whole = runner.invoke(app, args)
            single = runner.invoke(alone, args)
            assert (single.exit_code, single.output) == (whole.exit_code, whole.output), args
    assert app_for(["--version"]) is app
    assert app_for(["registry", "--help"]) is app
    assert app_for(["scna"]) is app
