"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s install_modes``, ``nox -s bench``,
``nox -s bench_build``, ``nox -s bench_cache``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite (needs skopeo and docker-registry: apt-get install -y skopeo docker-registry)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


PROBE = (
    "import importlib.metadata as m, sealpy.core, sealpy.strategies.proxy, sealpy.core.testing.images;"
    "eps = {e.name for e in m.entry_points(group='sealpy')};"
    "assert {'proxy', 'sync'} <= eps, eps;"
    "print(sealpy.core.__file__)"
)


@nox.session
def install_modes(session: nox.Session) -> None:
    """The package imports from a wheel and from an editable install (the package-dir
    mapping sealpy.core -> core/, sealpy.strategies -> strategies/), in fresh virtualenvs."""
    session.install(".")
    wheel_path = session.run("python", "-c", PROBE, silent=True)
    assert "site-packages" in wheel_path, wheel_path
    session.run("sealpy", "strategies")
    session.install("-e", ".")
    editable_path = session.run("python", "-c", PROBE, silent=True)
    assert "site-packages" not in editable_path, editable_path


@nox.session
def bench(session: nox.Session) -> None:
    """The A/B benchmark of caching strategies; results in benchmarks/results/."""
    session.install("-e", ".[dev]")
    # The example plugin competes too: strategies are found through entry points, as
    # `sealpy registry save` (timed end to end) finds them.
    session.install("-e", "examples/sealpy-example-strategy")
    session.run("python", "benchmarks/bench_strategies.py", *session.posargs)
    # The machine-wide blob cache's own workloads (second-context, overhead, fleet), beside
    # the strategies' (which all run cold): results in benchmarks/results/cache.{json,md}.
    full = "--full" in session.posargs
    session.run("python", "benchmarks/bench_cache.py", "--repeats", "5" if full else "3")
    # What signatures cost: copying them and verifying them, on the small workload.
    session.run("python", "benchmarks/bench_signatures.py", "--repeats", "5" if full else "3")


@nox.session
def bench_cache(session: nox.Session) -> None:
    """The blob cache's workloads alone. Pass --repeats/--skip after ``--``."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/bench_cache.py", *session.posargs)


@nox.session
def bench_build(session: nox.Session) -> None:
    """The build stage: sealpy build + save vs buildah bud + push (needs buildah); results in
    benchmarks/results/build-latest.{json,md}. Pass --sizes/--repeats after ``--``."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/bench_build.py", *session.posargs)
