"""Charts render in a child process bounded in memory and time: a chart that loops or
allocates without end is one clear error naming it, never a Go trace or a hung scan."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from discovery_kit import found, make_chart, make_context, pod_template, scan

from sealpy.core.discovery import chartsandbox
from sealpy.core.errors import ContextError
from sealpy.core.model import RenderOptions

# CPU without memory: 10^10 iterations over small, collected slices.
LOOP = "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}\n"
# 2 GB in one string.
GREEDY = 'data: {{ repeat 2000000000 "x" }}\n'
SMALL_MEMORY = 512 << 20


def hostile_context(tmp_path: Path, template: str) -> Path:
    ctx = make_context(tmp_path / "ctx")
    make_chart(ctx / "charts" / "fine", "fine", templates={"p.yaml": pod_template("nginx:1.25")})
    make_chart(ctx / "charts" / "hostile", "hostile", templates={"p.yaml": template})
    return ctx


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen]:
    """Every render worker started, in order."""
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        process = real(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(chartsandbox.subprocess, "Popen", popen)
    return started


def test_a_chart_that_never_ends_is_stopped_at_the_timeout(
    tmp_path: Path, spawned: list[subprocess.Popen]
) -> None:
    ctx = hostile_context(tmp_path, LOOP)
    started = time.monotonic()
    with pytest.raises(ContextError) as caught:
        scan(ctx, render=RenderOptions(timeout=2))
    assert time.monotonic() - started < 15
    assert str(caught.value) == (
        "chart charts/hostile does not render: still rendering after 2 s "
        "(the limit per chart; set SEALPY_CHART_TIMEOUT to change it)"
    )
    (worker,) = spawned
    assert worker.poll() is not None  # killed, not left spinning


def test_a_chart_that_allocates_without_bound_is_stopped_at_the_memory_limit(
    tmp_path: Path, spawned: list[subprocess.Popen]
) -> None:
    ctx = hostile_context(tmp_path, GREEDY)
    with pytest.raises(ContextError) as caught:
        scan(ctx, render=RenderOptions(memory_limit=SMALL_MEMORY))
    assert str(caught.value) == (
        "chart charts/hostile does not render: it needs more than 512 MiB of memory "
        "(the render process's limit; set SEALPY_CHART_MEMORY to change it)"
    )
    (worker,) = spawned
    assert worker.poll() is not None


@pytest.mark.parametrize(
    ("template", "environment", "message"),
    [
        (GREEDY, {"SEALPY_CHART_MEMORY": "512MiB"}, "it needs more than 512 MiB of memory"),
        (LOOP, {"SEALPY_CHART_TIMEOUT": "1.5"}, "still rendering after 1.5 s"),
    ],
)
def test_the_command_line_shows_one_error_line_and_no_go_trace(
    tmp_path: Path, template: str, environment: dict[str, str], message: str
) -> None:
    ctx = hostile_context(tmp_path, template)
    command = [sys.executable, "-m", "sealpy.core", "scan", str(ctx)]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **environment}, timeout=60
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: chart charts/hostile does not render: {message} (")
    assert "goroutine" not in result.stderr and "runtime." not in result.stderr


def test_one_worker_renders_every_chart_and_none_starts_without_charts(
    tmp_path: Path, spawned: list[subprocess.Popen]
) -> None:
    ctx = make_context(tmp_path / "ctx", {"manifests/pod.yaml": pod_template("redis:7")})
    assert set(found(scan(ctx))) == {"docker.io/library/redis:7"}
    (ctx / "charts").mkdir()
    (ctx / "charts" / "README.md").write_text("no charts here\n")
    scan(ctx)
    assert spawned == []
    for name in ("a", "b", "c"):
        make_chart(ctx / "charts" / name, name, templates={"p.yaml": pod_template(f"{name}:1")})
    assert len(found(scan(ctx))) == 4
    (worker,) = spawned
    assert worker.wait(timeout=5) == 0  # ended when the scan did
