"""The plugin host: entry points, strategy registration and selection precedence."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from sealpy.core import pipeline
from sealpy.core.cache.strategy import Availability, CacheStrategy, StrategyRegistry
from sealpy.core.errors import StrategyUnavailableError, UnknownStrategyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import CacheOptions, CacheReport, ImageSet
from sealpy.core.plugins import new_plugin_manager, strategy_name, strategy_registry

EXAMPLE = Path(__file__).parents[1] / "examples" / "sealpy-example-strategy"


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, "proxy"),
        (None, {"SEALOS_REGISTRY_SYNC_EXPERIMENTAL": "true"}, "sync"),
        (None, {"SEALOS_REGISTRY_SYNC_EXPERIMENTAL": "True"}, "proxy"),  # exactly "true", as Sealos
        (None, {"SEALOS_REGISTRY_SYNC_EXPERIMENTAL": "1"}, "proxy"),
        (
            None,
            {"SEALPY_CACHE_STRATEGY": "shelf", "SEALOS_REGISTRY_SYNC_EXPERIMENTAL": "true"},
            "shelf",
        ),
        (
            "proxy",
            {"SEALPY_CACHE_STRATEGY": "sync", "SEALOS_REGISTRY_SYNC_EXPERIMENTAL": "true"},
            "proxy",
        ),
        ("sync", {}, "sync"),
    ],
)
def test_strategy_selection_precedence(flag, env, expected):
    assert strategy_name(flag, env) == expected


def test_builtins_register_through_entry_points_like_third_parties():
    group = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="sealpy")}
    assert group["proxy"] == "sealpy.strategies.proxy"
    assert group["sync"] == "sealpy.strategies.sync"
    assert {"proxy", "sync"} <= set(strategy_registry().names())
    # Without entry points, nothing is registered: the built-ins have no back door.
    assert strategy_registry(new_plugin_manager(entry_points=False)).names() == []


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(UnknownStrategyError) as failure:
        pipeline.select_strategy("nope", environ={})
    assert (
        "nope" in str(failure.value)
        and "proxy" in str(failure.value)
        and "sync" in str(failure.value)
    )


def test_a_misspelt_hook_fails_loudly():
    class Typo:
        @hookimpl
        def sealpy_register_strategy(self, registry):  # missing "s"
            pass

    with pytest.raises(Exception, match="unknown hook"):
        new_plugin_manager([Typo()], entry_points=False)


class _Recorder(CacheStrategy):
    name = "recorder"
    description = "records what it was asked to cache"
    calls: ClassVar[list] = []

    def cache(self, images, registry_dir, options):
        self.calls.append((images.references, registry_dir, options.max_parallel))
        return CacheReport(self.name)


class _RecorderPlugin:
    @hookimpl
    def sealpy_register_strategies(self, registry: StrategyRegistry) -> None:
        registry.register(_Recorder)


def test_a_plugin_strategy_is_called_with_images_directory_and_options(tmp_path):
    manager = new_plugin_manager([_RecorderPlugin()])
    images = ImageSet.of(["nginx:1.25"])
    report = pipeline.cache(
        images,
        tmp_path / "reg",
        strategy="recorder",
        options=CacheOptions(max_parallel=3),
        manager=manager,
    )
    assert report.strategy == "recorder"
    assert _Recorder.calls[-1] == (images.references, (tmp_path / "reg").absolute(), 3)


class _Unavailable(CacheStrategy):
    name = "needs-tool"
    description = "needs a tool"

    @classmethod
    def availability(cls):
        return Availability.missing("tool not found; apt-get install -y tool")

    def cache(self, images, registry_dir, options):  # pragma: no cover - never called
        raise AssertionError("an unavailable strategy must not run")


def test_an_unavailable_strategy_fails_before_running():
    class Plugin:
        @hookimpl
        def sealpy_register_strategies(self, registry):
            registry.register(_Unavailable)

    with pytest.raises(StrategyUnavailableError, match="apt-get install -y tool"):
        pipeline.select_strategy("needs-tool", manager=new_plugin_manager([Plugin()]))


def test_registry_refuses_duplicates_and_nameless_classes():
    registry = StrategyRegistry()
    registry.register(_Recorder)
    registry.register(_Recorder)  # the same class twice is fine

    class Other(_Recorder):
        pass

    with pytest.raises(ValueError, match="two strategies"):
        registry.register(Other)

    class Nameless(CacheStrategy):
        description = "x"

        def cache(self, *a):  # pragma: no cover
            pass

    with pytest.raises(ValueError, match="name"):
        registry.register(Nameless)


def _sealpy(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sealpy.core", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def example_plugin_dir(tmp_path_factory) -> Path:
    """The example plugin installed (as a real distribution) into a directory of its own."""
    target = tmp_path_factory.mktemp("example-plugin")
    source = tmp_path_factory.mktemp("example-source") / "plugin"
    shutil.copytree(EXAMPLE, source)  # building writes metadata next to the sources
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_installing_the_example_plugin_lists_it(example_plugin_dir):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    without = _sealpy(["strategies"], env)
    assert without.returncode == 0 and "shelf" not in without.stdout
    with_plugin = _sealpy(["strategies"], {**env, "PYTHONPATH": str(example_plugin_dir)})
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert "shelf" in with_plugin.stdout and "example plugin" in with_plugin.stdout


def test_the_installed_example_plugin_is_called_by_registry_save(
    example_plugin_dir, conformance_catalog, tmp_path
):
    c = conformance_catalog
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(example_plugin_dir),
        "SEALPY_CACHE_STRATEGY": "shelf",
        "SEALPY_SHELF_DIR": str(tmp_path / "shelf"),
    }
    result = _sealpy(
        [
            "registry",
            "save",
            "--platform",
            "linux/amd64",
            "--images",
            str(c.ref(c.plain, "library/single")),
            str(context),
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    assert "cached by shelf" in result.stderr


def test_strategies_command_shows_availability_and_the_install_hint(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no skopeo, no docker-registry
    result = _sealpy(["strategies"], env)
    assert result.returncode == 0
    lines = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in result.stdout.splitlines()
    }
    assert "[available]" in lines["proxy"]
    assert "unavailable" in lines["sync"] and "apt-get install -y skopeo" in lines["sync"]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\n")
    failed = _sealpy(["registry", "save", "--strategy", "sync", str(context)], env)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines() == [
        "error: strategy sync is unavailable: skopeo not found; apt-get install -y skopeo; "
        "docker-registry not found; apt-get install -y docker-registry"
    ]


def test_the_installed_example_plugin_is_called_by_build(
    example_plugin_dir, conformance_catalog, tmp_path
):
    """`sealpy build --strategy shelf`: the flag picks the plugin's strategy, whose cache
    fills registry/, which the build then copies into the image."""
    from sealpy.core.transport.distribution import DistributionLayout

    c = conformance_catalog
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    env = {k: v for k, v in os.environ.items() if k != "SEALPY_CACHE_STRATEGY"}
    result = _sealpy(
        [
            "build",
            "--strategy",
            "shelf",
            "--root",
            str(tmp_path / "store"),
            "--platform",
            "linux/amd64",
            "--images",
            str(c.ref(c.plain, "library/single")),
            "-t",
            "plugin/app:1",
            str(context),
        ],
        {**env, "PYTHONPATH": str(example_plugin_dir), "SEALPY_SHELF_DIR": str(tmp_path / "shelf")},
    )
    assert result.returncode == 0, result.stderr
    assert "1 images cached by shelf" in result.stderr
    assert DistributionLayout(tmp_path / "shelf").has_blob(c.single.config.digest)
    assert "Successfully tagged localhost/plugin/app:1" in result.stdout
    assert DistributionLayout(context / "registry").resolve("library/single", "1") == (
        c.single.digest
    )


def test_the_builtin_table_matches_the_entry_points_and_the_modules():
    """plugins.BUILTIN_HOOKS (which hooks load which of sealpy's own plugins) is exactly
    sealpy's entry points, and each module implements exactly the hooks listed for it."""
    import importlib

    from sealpy.core.plugins import BUILTIN_HOOKS

    ours = {
        (ep.name, ep.value)
        for ep in importlib.metadata.entry_points(group="sealpy")
        if ep.value.startswith("sealpy.")
    }
    assert ours == set(BUILTIN_HOOKS)
    manager = new_plugin_manager(entry_points=False)
    for (_name, module_name), hooks in BUILTIN_HOOKS.items():
        module = importlib.import_module(module_name)
        implemented = {
            attr for attr in dir(module) if manager.parse_hookimpl_opts(module, attr) is not None
        }
        assert implemented == set(hooks), module_name


def _modules_after(code: str) -> set[str]:
    """The sealpy modules a fresh interpreter has imported after running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in sys.modules if m.startswith('sealpy')))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_builtin_plugins_are_imported_when_their_hook_is_first_called():
    setup = "from sealpy.core import plugins\nmanager = plugins.new_plugin_manager()\n"
    made = _modules_after(setup)
    assert not made & {
        "sealpy.strategies.proxy",
        "sealpy.strategies.sync",
        "sealpy.core.discovery.manifests",
        "sealpy.core.build.native",
        "sealpy.core.build.buildah",
    }
    discovering = _modules_after(setup + "plugins.hook(manager, 'sealpy_discover_images')")
    assert {"sealpy.core.discovery.manifests", "sealpy.core.discovery.charts"} <= discovering
    assert "sealpy.strategies.proxy" not in discovering
    assert "sealpy.core.transport.remote" not in discovering
    strategies = _modules_after(setup + "print(plugins.strategy_registry(manager).names())")
    assert {"sealpy.strategies.proxy", "sealpy.strategies.sync"} <= strategies
    assert not strategies & {"sealpy.core.build.native", "sealpy.core.discovery.manifests"}


def test_a_builtin_plugin_also_passed_in_is_registered_once():
    import sealpy.strategies.proxy

    manager = new_plugin_manager([sealpy.strategies.proxy])
    # Its entry point, loaded with the hook's other built-ins, must not register it again.
    assert {"proxy", "sync"} <= set(strategy_registry(manager).names())
    assert manager.is_registered(sealpy.strategies.proxy)


def test_a_blocked_builtin_stays_out():
    manager = new_plugin_manager(entry_points=False)
    manager.set_blocked("sync")
    manager.load_entry_points()
    assert "sync" not in strategy_registry(manager).names()
    assert "proxy" in strategy_registry(manager).names()
