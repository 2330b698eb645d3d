"""Discovery source: ``charts/``, Helm charts rendered with the real Helm engine.

Every direct child of ``charts/`` that is a chart directory (it has a ``Chart.yaml``) or a
``.tgz`` chart archive is rendered as Sealos renders it (``lifecycle/pkg/sreg/buildimage/
chart.go``), as far as the Helm SDK allows (:class:`~sealpy.core.model.RenderOptions`):
release name ``dryrun``, ``.Release.IsInstall`` false, ``.Capabilities.KubeVersion``
v1.20.0 unless ``--kube-version`` says otherwise, dependencies whose ``condition``/``tags``
the values disable left out, and values from ``charts/<name in Chart.yaml>.values.yaml``
when that file exists. So an image only a values override enables is found, the images of
a disabled subchart are not, and a chart refusing ``helm install`` into ``default`` still
renders. Images are then taken from every rendered template as from a manifest (see
:mod:`sealpy.core.discovery.yamlimages`); ``NOTES.txt`` and other templates not meant to be
YAML are line-scanned as Sealos does, without a warning that they are not YAML.

A finding's location is the chart, with the rendered template as its detail; a warning
names the template's own file where the chart is a directory (and its line where the
rendered line appears there verbatim).

Rendering happens in a sandboxed child process (:mod:`sealpy.core.discovery.chartsandbox`),
started only when a context has charts, so neither ``sealpy --help`` nor this process ever
loads the Helm library. A chart that does not load or render, or overruns the sandbox's
memory or time, fails the scan with one line naming it: its images are unknown. A chart,
or its values file, that resolves outside the context is skipped with a warning; inside a
chart, files that resolve outside it are (:mod:`sealpy.core.discovery.chartfs`).
"""

from __future__ import annotations

from pathlib import Path

from sealpy.core.discovery.chartfs import resolves_within
from sealpy.core.discovery.chartsandbox import RenderWorker
from sealpy.core.discovery.yamlimages import text_lines
from sealpy.core.errors import ContextError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BuildContext, DiscoveryResult, Finding, Location, ScanWarning
from sealpy.core.reference import ImageReference

CHARTS_DIR = "charts"
# Rendered templates Helm means as manifests; any other output (NOTES.txt above all) is
# text that Sealos line-scans, and so does sealpy, without calling it broken YAML.
YAML_SUFFIXES = (".yaml", ".yml", ".tpl")
NOTES_SUFFIX = "NOTES.txt"


def chart_children(context: BuildContext, charts_dir: Path) -> tuple[list[Path], list[ScanWarning]]:
    """The charts to render (directories with a Chart.yaml, ``.tgz`` files), sorted, and
    warnings for what is skipped: directories that are not charts, and children resolving
    outside the build context (a symlink to ``/etc``). Hidden entries are skipped."""
    charts: list[Path] = []
    warnings: list[ScanWarning] = []
    for child in sorted(charts_dir.iterdir()):
        if child.name.startswith("."):
            continue
        archive = child.name.lower().endswith(".tgz")
        if not (archive or child.is_dir()):
            continue  # values files, READMEs
        relative = context.relative(child)
        if not resolves_within(child, context.root):
            warnings.append(
                ScanWarning(relative, None, "resolves outside the build context; skipped")
            )
        elif child.is_dir():
            if (child / "Chart.yaml").is_file():
                charts.append(child)
            else:
                warnings.append(ScanWarning(relative, None, "not a chart (no Chart.yaml); skipped"))
        elif child.is_file():
            charts.append(child)
    return charts, warnings


def expects_yaml(template: str) -> bool:
    """Whether Helm means the rendered ``template`` as a manifest (so output that is not
    YAML deserves a warning): ``.yaml``, ``.yml``, ``.tpl``, never ``NOTES.txt``."""
    name = template.rsplit("/", 1)[-1]
    return not name.endswith(NOTES_SUFFIX) and name.lower().endswith(YAML_SUFFIXES)


def render_chart(path: Path, context: BuildContext, worker: RenderWorker) -> DiscoveryResult:
    """Render one chart in the worker and turn its findings into locations and warnings."""
    relative = context.relative(path)
    reply = worker.render(
        {
            "chart": str(path),
            "context": str(context.root),
            "options": context.render.helm_options(),
            "fallbacks": [context.render.helm_options(as_install=True)],
        },
        relative,
    )
    if not reply.get("ok"):
        raise ContextError(str(reply.get("message") or f"chart {relative} does not render"))
    warnings = [
        ScanWarning(
            f"{relative}/{inside}",
            None,
            f"{reason}; left out of the chart",
        )
        for inside, reason in reply["skipped"]
    ]
    values = reply.get("values")
    if values and values.get("skipped"):
        warnings.append(ScanWarning(values["file"], None, f"{values['skipped']}; not used"))
    warnings.extend(
        ScanWarning(
            relative,
            None,
            f"dependency {missing!r} is declared in Chart.yaml but missing from the "
            "chart's charts/ directory (run helm dependency build); its images are not scanned",
        )
        for missing in reply["missing"]
    )
    findings: list[Finding] = []
    for template in reply["templates"]:
        name = template["name"]
        findings.extend(
            Finding(ImageReference.parse(ref), Location(relative, None, name))
            for _line, ref in template["found"]
        )
        warnings.extend(_template_warnings(path, relative, template))
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))


def _template_warnings(chart_path: Path, relative: str, template: dict) -> list[ScanWarning]:
    """Warnings about one rendered template, placed in the template's own file when the
    chart is a directory holding it (``charts/app/templates/pod.yaml``), with the source
    line where the rendered line appears there verbatim, exactly once. Otherwise (a
    ``.tgz``, a templated line) the chart, and the rendered line in the message."""
    name = template["name"]
    source = _template_source(chart_path, name)
    file = relative if source is None else f"{relative}/{name.split('/', 1)[1]}"
    source_lines = _source_lines(source)
    out: list[ScanWarning] = []
    for line, message, text in template["problems"]:
        at = [n for n, s in enumerate(source_lines, 1) if s.strip() == text] if text else []
        if len(at) == 1:
            out.append(ScanWarning(file, at[0], message))
        elif source is not None:
            out.append(ScanWarning(file, None, f"rendered line {line}: {message}"))
        else:
            out.append(ScanWarning(file, None, f"{name}, rendered line {line}: {message}"))
    if template["yaml_error"] and expects_yaml(name):
        where = "" if source is not None else f"{name}: "
        out.append(
            ScanWarning(
                file,
                None,
                f"{where}rendered output is not valid YAML ({template['yaml_error']}); "
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
    charts, warnings = chart_children(context, charts_dir)
    findings: list[Finding] = []
    if charts:
        with RenderWorker(context.render) as worker:
            for path in charts:
                result = render_chart(path, context, worker)
                findings.extend(result.findings)
                warnings.extend(result.warnings)
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))
