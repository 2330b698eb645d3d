"""Discovery source: ``charts/``, Helm charts rendered with the real Helm engine.

Every direct child of ``charts/`` that is a chart directory (it has a ``Chart.yaml``) or a
``.tgz`` chart archive is rendered as ``helm template`` would: release name ``dryrun``,
namespace ``default``, dependencies whose ``condition``/``tags`` the values disable left
out, and values from ``charts/<name in Chart.yaml>.values.yaml`` when that file exists
(Sealos's convention). So an image only a values override enables is found, and the images
of a disabled subchart are not. Images are then taken from every rendered template as from
a manifest (see :mod:`sealpy.core.discovery.yamlimages`). A finding's location is the chart,
with the rendered template as its detail; a warning names the template's own file where the
chart is a directory (and its line where the rendered line appears there verbatim), and
rendered output that is not YAML gets a warning of its own, as a manifest file does.

Rendering uses ``helm-python-sdk`` (``helm_python``, Helm's Go SDK in a shared library),
imported only when a context has charts so that ``sealpy --help`` stays fast. A chart that
does not load or render fails the scan with Helm's message: its images are unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sealpy.core.discovery.yamlimages import TextImages, images_in_text, text_lines
from sealpy.core.errors import ContextError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BuildContext, DiscoveryResult, Finding, Location, ScanWarning

CHARTS_DIR = "charts"
RELEASE_NAME = "dryrun"
NAMESPACE = "default"
VALUES_SUFFIX = ".values.yaml"


def chart_children(charts_dir: Path) -> tuple[list[Path], list[str]]:
    """The charts to render (directories with a Chart.yaml, ``.tgz`` files), sorted, and
    the names of directories that are not charts. Hidden entries are skipped."""
    charts: list[Path] = []
    not_charts: list[str] = []
    for child in sorted(charts_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if (child / "Chart.yaml").is_file():
                charts.append(child)
            else:
                not_charts.append(child.name)
        elif child.is_file() and child.name.lower().endswith(".tgz"):
            charts.append(child)
    return charts, not_charts


def _one_line(text: object) -> str:
    """Helm's message on one line: Helm 4 indents each cause on a line of its own."""
    parts = [part.strip() for part in str(text).splitlines() if part.strip()]
    joined = parts[0] if parts else ""
    for part in parts[1:]:
        joined += (" " if joined.endswith(":") else ": ") + part
    return joined


def _read_values(path: Path, relative: str) -> dict[str, Any]:
    """``<name>.values.yaml`` parsed by Helm itself (``-f`` semantics), so dates, big numbers
    and anchors mean what they mean to ``helm template``."""
    import helm_python

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContextError(f"{relative}: cannot read: {exc}") from None
    try:
        return helm_python.values_from_yaml(text)
    except helm_python.HelmError as exc:
        raise ContextError(f"{relative}: not a values file: {_one_line(exc)}") from None


def _missing_dependencies(chart: Any) -> list[str]:
    """Dependencies declared in Chart.yaml but absent from the chart's ``charts/``: Helm's
    render skips them silently, so their images would be missed without a word."""
    loaded = {str(d.get("name")) for d in chart.dependencies}
    declared = chart.metadata.get("dependencies") or []
    return sorted(str(d.get("name")) for d in declared if str(d.get("name")) not in loaded)


def render_chart(path: Path, context: BuildContext) -> DiscoveryResult:
    """Render one chart and extract the images of every template it produces."""
    import helm_python

    relative = context.relative(path)
    warnings: list[ScanWarning] = []
    try:
        with helm_python.Chart.load(path) as chart:
            name = chart.name
            values_path = path.parent / f"{name}{VALUES_SUFFIX}"
            values: dict[str, Any] = {}
            if name and values_path.is_file():
                values = _read_values(values_path, context.relative(values_path))
            for missing in _missing_dependencies(chart):
                warnings.append(
                    ScanWarning(
                        relative,
                        None,
                        f"dependency {missing!r} is declared in Chart.yaml but missing from the "
                        "chart's charts/ directory (run helm dependency build); "
                        "its images are not scanned",
                    )
                )
            # Render once only: helm-python-sdk's render removes the subcharts that the
            # values disable from this loaded Chart, in place, so a second render of the
            # same object (with other values) would silently miss their images. It does
            # honour `condition`/`tags` in the values passed here.
            rendered = chart.render(values, name=RELEASE_NAME, namespace=NAMESPACE)
    except helm_python.HelmError as exc:
        raise ContextError(f"chart {relative} does not render: {_one_line(exc)}") from None
    findings: list[Finding] = []
    for template, manifest in sorted(rendered.items()):
        if not manifest.strip():
            continue
        scanned = images_in_text(manifest)
        findings.extend(
            Finding(ref, Location(relative, None, template)) for _line, ref in scanned.found
        )
        warnings.extend(_template_warnings(path, relative, template, manifest, scanned))
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))


def _template_warnings(
    chart_path: Path, relative: str, template: str, manifest: str, scanned: TextImages
) -> list[ScanWarning]:
    """Warnings about one rendered template, placed in the template's own file when the
    chart is a directory holding it (``charts/app/templates/pod.yaml``), with the source
    line where the rendered line appears there verbatim, exactly once. Otherwise (a
    ``.tgz``, a templated line) the chart, and the rendered line in the message."""
    source = _template_source(chart_path, template)
    file = relative if source is None else f"{relative}/{template.split('/', 1)[1]}"
    source_lines = _source_lines(source)
    rendered_lines = text_lines(manifest)
    out: list[ScanWarning] = []
    for line, message in scanned.problems.items():
        text = rendered_lines[line - 1].strip() if line <= len(rendered_lines) else ""
        at = [n for n, s in enumerate(source_lines, 1) if s.strip() == text] if text else []
        if len(at) == 1:
            out.append(ScanWarning(file, at[0], message))
        elif source is not None:
            out.append(ScanWarning(file, None, f"rendered line {line}: {message}"))
        else:
            out.append(ScanWarning(file, None, f"{template}, rendered line {line}: {message}"))
    if scanned.yaml_error:
        where = "" if source is not None else f"{template}: "
        out.append(
            ScanWarning(
                file,
                None,
                f"{where}rendered output is not valid YAML ({scanned.yaml_error}); "
                "read with Sealos's line scan only",
            )
        )
    return out


def _template_source(chart_path: Path, template: str) -> Path | None:
    """The file a rendered template came from (Helm names it ``<chart name>/templates/…``,
    subcharts ``<chart name>/charts/<sub>/templates/…``), when it is on disk."""
    if not chart_path.is_dir() or "/" not in template:
        return None
    candidate = chart_path / template.split("/", 1)[1]
    try:
        candidate.resolve().relative_to(chart_path.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


def _source_lines(source: Path | None) -> list[str]:
    if source is None:
        return []
    try:
        return text_lines(source.read_bytes().decode("utf-8-sig", errors="replace"))
    except OSError:
        return []


@hookimpl
def sealpy_discover_images(context: BuildContext) -> DiscoveryResult | None:
    charts_dir = context.root / CHARTS_DIR
    if not charts_dir.is_dir():
        return None
    charts, not_charts = chart_children(charts_dir)
    findings: list[Finding] = []
    warnings = [
        ScanWarning(f"{CHARTS_DIR}/{name}", None, "not a chart (no Chart.yaml); skipped")
        for name in not_charts
    ]
    for path in charts:
        result = render_chart(path, context)
        findings.extend(result.findings)
        warnings.extend(result.warnings)
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))
