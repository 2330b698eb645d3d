"""Helpers for the discovery tests: hand-made build contexts and charts in ``tmp_path``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from sealpy.core import pipeline
from sealpy.core.model import Location, ScanResult

DIGEST = "sha256:" + "0123456789abcdef" * 4


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` (relative path → text, dedented, or bytes) under ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))
    return root


def make_context(root: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """A build context: a Kubefile plus ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    return write_files(root, {"Kubefile": "FROM scratch\nCOPY . .\n", **(files or {})})


def scan(root: Path, **kwargs) -> ScanResult:
    return pipeline.scan(root, **kwargs)


def found(result: ScanResult) -> dict[str, tuple[Location, ...]]:
    """Reference → every place it was found."""
    return {str(image.reference): image.sources for image in result.images.images}


def warnings_at(result: ScanResult) -> list[tuple[str | None, int | None]]:
    return [(w.file, w.line) for w in result.images.warnings]


def pod_template(image_expr: str, name: str = "app") -> str:
    """A Pod template whose single container's image is the Helm expression given."""
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: {name}-{{{{ .Release.Name }}}}
        spec:
          containers:
            - name: {name}
              image: {image_expr}
        """
    )


def make_chart(
    directory: Path,
    name: str,
    *,
    values: dict | None = None,
    templates: dict[str, str] | None = None,
    dependencies: list[dict] | None = None,
) -> Path:
    """A chart directory ``directory`` (its Chart.yaml says ``name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict = {"apiVersion": "v2", "name": name, "version": "0.1.0"}
    if dependencies:
        meta["dependencies"] = dependencies
    (directory / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (directory / "values.yaml").write_text(yaml.safe_dump(values or {}))
    (directory / "templates").mkdir(exist_ok=True)
    for template, text in (templates or {}).items():
        (directory / "templates" / template).write_text(text)
    return directory


def make_umbrella_chart(directory: Path, name: str = "app") -> Path:
    """A chart with image ``nginx:1.25`` and two subcharts, both disabled by default:
    ``cache`` (redis, by ``condition: cache.enabled``) and ``metrics`` (exporter, by
    ``tags: [monitoring]``)."""
    make_chart(
        directory,
        name,
        values={
            "image": "nginx:1.25",
            "cache": {"enabled": False},
            "tags": {"monitoring": False},
        },
        templates={"pod.yaml": pod_template('"{{ .Values.image }}"')},
        dependencies=[
            {"name": "cache", "version": "0.1.0", "condition": "cache.enabled"},
            {"name": "metrics", "version": "0.1.0", "tags": ["monitoring"]},
        ],
    )
    make_chart(
        directory / "charts" / "cache",
        "cache",
        values={"image": {"repository": "redis", "tag": "7.2"}},
        templates={
            "pod.yaml": pod_template("{{ .Values.image.repository }}:{{ .Values.image.tag }}")
        },
    )
    make_chart(
        directory / "charts" / "metrics",
        "metrics",
        values={"image": "quay.io/prometheus/node-exporter:v1.7.0"},
        templates={"pod.yaml": pod_template("{{ .Values.image }}", name="metrics")},
    )
    return directory
