"""The chart render worker: a child process that loads and renders charts, one per request.

Run as ``python -m sealpy.core.discovery.chartworker --memory-limit BYTES`` by
:mod:`sealpy.core.discovery.chartsandbox`, never imported by the scanning process. It
bounds itself before the Helm library (and with it the Go runtime) is loaded: data
segment (``RLIMIT_DATA``: the heap Go and Python actually use — ``RLIMIT_AS`` would count
the 1.8 GiB of address space Go reserves up front), no core files, killed with its parent.

Protocol: one JSON object per line on stdin, one JSON object per line on the original
stdout (fd 1 is pointed at stderr, so nothing else can reach that channel); stderr is the
parent's to read when the worker dies. A request::

    {"chart": "/abs/charts/app", "context": "/abs", "options": {...helm_render options},
     "fallbacks": [{...options to try when Helm refuses the first}]}

A reply is ``{"ok": false, "message": "..."}`` or ``{"ok": true, "skipped": [[path,
reason]], "values": {"file": rel, "skipped": reason|null}|null, "missing": [names],
"templates": [{"name", "found": [[line, ref]], "problems": [[line, message, text]],
"yaml_error"}]}``. Images are taken from the rendered text here, so only findings cross
the process boundary, never the rendered output itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

VALUES_SUFFIX = ".values.yaml"


def _bound_self(memory_limit: int, parent: int) -> None:
    """Limits that must be in place before the Go runtime starts."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:  # a tighter limit set from outside stays
        memory_limit = min(memory_limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _one_line(text: object) -> str:
    """Helm's message on one line: Helm 4 indents each cause on a line of its own."""
    parts = [part.strip() for part in str(text).splitlines() if part.strip()]
    joined = parts[0] if parts else ""
    for part in parts[1:]:
        joined += (" " if joined.endswith(":") else ": ") + part
    return joined


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return str(path)


class Failed(Exception):
    """A request that cannot be answered with findings: the message is the reply."""


def _values(helm_python: Any, chart: Path, name: str, context: Path) -> tuple[dict, dict | None]:
    """``charts/<Chart.yaml name>.values.yaml`` (Sealos's convention), parsed by Helm itself
    (``-f`` semantics), when it exists and resolves inside the context."""
    from sealpy.core.discovery.chartfs import resolves_within

    path = chart.parent / f"{name}{VALUES_SUFFIX}"
    if not name or not (path.exists() or path.is_symlink()):
        return {}, None
    relative = _relative(path, context)
    if not resolves_within(path, context):
        return {}, {"file": relative, "skipped": "resolves outside the build context"}
    if not path.is_file():
        return {}, {"file": relative, "skipped": "not a regular file"}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Failed(f"{relative}: cannot read: {exc}") from None
    try:
        return helm_python.values_from_yaml(text), {"file": relative, "skipped": None}
    except helm_python.HelmError as exc:
        raise Failed(f"{relative}: not a values file: {_one_line(exc)}") from None


def _missing_dependencies(chart: Any) -> list[str]:
    """Dependencies declared in Chart.yaml but absent from the chart's ``charts/``: Helm's
    render skips them silently, so their images would be missed without a word."""
    loaded = {str(d.get("name")) for d in chart.dependencies}
    declared = chart.metadata.get("dependencies") or []
    return sorted(str(d.get("name")) for d in declared if str(d.get("name")) not in loaded)


def _scan(rendered: dict[str, str]) -> list[dict]:
    from sealpy.core.discovery.yamlimages import images_in_text, text_lines

    templates = []
    for name, manifest in sorted(rendered.items()):
        if not manifest.strip():
            continue
        scanned = images_in_text(manifest)
        lines = text_lines(manifest) if scanned.problems else []
        problems = [
            [line, message, lines[line - 1].strip() if line <= len(lines) else ""]
            for line, message in sorted(scanned.problems.items())
        ]
        templates.append(
            {
                "name": name,
                "found": [[line, str(ref)] for line, ref in scanned.found],
                "problems": problems,
                "yaml_error": scanned.yaml_error,
            }
        )
    return templates


def _load(helm_python: Any, path: Path, relative: str) -> Any:
    try:
        return helm_python.Chart.load(path)
    except helm_python.HelmError as exc:
        message = _one_line(exc).replace(str(path), relative)
        raise Failed(f"chart {relative} does not render: {message}") from None


def _render_once(chart: Any, values: dict, options: dict) -> str:
    """The SDK's native render: ``Chart.render`` has no ``kube_version``/``api_versions``
    arguments, the call it wraps takes them (tests pin that they work)."""
    from helm_python import _native

    return _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options))


def _render_attempts(
    helm_python: Any, load_from: Path, loaded: Any, values: dict, request: dict, relative: str
) -> dict[str, str]:
    """Render as ``request["options"]`` says, then, if Helm refuses, as each of
    ``request["fallbacks"]`` (Sealos's context falls between the SDK's two modes)."""
    errors: list[str] = []
    for attempt, options in enumerate([request["options"], *request.get("fallbacks", ())]):
        # Each attempt on a freshly loaded chart: a render removes the subcharts that the
        # values disable from the loaded Chart, in place.
        chart = loaded if attempt == 0 else _load(helm_python, load_from, relative)
        try:
            return json.loads(_render_once(chart, values, options))
        except helm_python.HelmError as exc:
            errors.append(_one_line(exc))
        finally:
            if attempt:
                chart.close()
    if len(set(errors)) == 1:
        raise Failed(f"chart {relative} does not render: {errors[0]}")
    raise Failed(
        f"chart {relative} does not render: as an upgrade: {errors[0]}; "
        f"as an install: {'; '.join(errors[1:])}"
    )


def render(helm_python: Any, request: dict) -> dict:
    """Load, render and scan one chart."""
    from sealpy.core.discovery.chartfs import ChartTreeError, copy_chart, inspect_chart

    chart = Path(request["chart"])
    context = Path(request["context"])
    relative = _relative(chart, context)
    skipped: list[list[str]] = []
    load_from = chart
    scratch = None
    try:
        if chart.is_dir():
            try:
                tree = inspect_chart(chart)
            except ChartTreeError as exc:
                raise Failed(f"chart {relative} cannot be loaded safely: {exc}") from None
            skipped = [[path, reason] for path, reason in tree.skipped]
            if tree.needs_copy:
                scratch = Path(tempfile.mkdtemp(prefix="sealpy-chart-"))
                load_from = copy_chart(tree, scratch / chart.name)
        with _load(helm_python, load_from, relative) as loaded:
            values, values_file = _values(helm_python, chart, loaded.name, context)
            missing = _missing_dependencies(loaded)
            rendered = _render_attempts(helm_python, load_from, loaded, values, request, relative)
    except OSError as exc:  # an unreadable file or directory while copying the chart
        raise Failed(f"chart {relative} cannot be read: {exc.strerror or exc}") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "ok": True,
        "skipped": skipped,
        "values": values_file,
        "missing": missing,
        "templates": _scan(rendered),
    }


def serve(requests: TextIO, replies: TextIO) -> None:
    import helm_python

    for line in requests:
        if not line.strip():
            continue
        try:
            reply = render(helm_python, json.loads(line))
        except Failed as exc:
            reply = {"ok": False, "message": str(exc)}
        except MemoryError:
            reply = {"ok": False, "memory": True}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chartworker")
    parser.add_argument("--memory-limit", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _bound_self(args.memory_limit, args.parent)
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
