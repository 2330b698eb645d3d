"""charts/: rendered by the real Helm engine, values from ``<name>.values.yaml``."""

from __future__ import annotations

import shutil
from pathlib import Path

import helm_python
import pytest
from discovery_kit import (
    DIGEST,
    found,
    make_chart,
    make_context,
    make_umbrella_chart,
    pod_template,
    scan,
)

from sealpy.core.errors import ContextError
from sealpy.core.model import Location

NGINX = "docker.io/library/nginx:1.25"
REDIS = "docker.io/library/redis:7.2"
EXPORTER = "quay.io/prometheus/node-exporter:v1.7.0"


def test_chart_directory_is_rendered_and_located(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_umbrella_chart(ctx / "charts" / "app")
    assert found(scan(ctx)) == {
        NGINX: (Location("charts/app", None, "app/templates/pod.yaml"),),
    }


def test_values_file_named_after_the_chart_enables_a_disabled_subchart(tmp_path: Path) -> None:
    # Sealos issues #1973 and #2800: images only a values override enables must be found.
    ctx = make_context(tmp_path / "ctx", {"charts/app.values.yaml": "cache:\n  enabled: true\n"})
    make_umbrella_chart(ctx / "charts" / "app")
    images = found(scan(ctx))
    assert images[REDIS] == (Location("charts/app", None, "app/charts/cache/templates/pod.yaml"),)
    assert NGINX in images
    assert EXPORTER not in images  # still disabled: its tag is false


def test_values_file_enables_a_subchart_by_tag(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/app.values.yaml": "tags:\n  monitoring: true\n"})
    make_umbrella_chart(ctx / "charts" / "app")
    assert set(found(scan(ctx))) == {NGINX, EXPORTER}


def test_values_file_can_disable_what_the_chart_enables(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/app.values.yaml": "cache: {enabled: false}\n"})
    make_umbrella_chart(ctx / "charts" / "app")
    values = ctx / "charts" / "app" / "values.yaml"
    values.write_text(values.read_text().replace("enabled: false", "enabled: true"))
    assert set(found(scan(ctx))) == {NGINX}


def test_values_file_is_named_by_chart_yaml_not_by_directory(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "charts/app.values.yaml": "image: nginx:1.26\n",
            "charts/my-dir.values.yaml": "image: wrong:1\n",
        },
    )
    make_umbrella_chart(ctx / "charts" / "my-dir", name="app")
    assert set(found(scan(ctx))) == {"docker.io/library/nginx:1.26"}


def test_tgz_chart_honours_values_and_conditions(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/app.values.yaml": "cache: {enabled: true}\n"})
    source = make_umbrella_chart(tmp_path / "src" / "app")
    archive = Path(helm_python.package(source, destination=ctx / "charts"))
    assert archive.name == "app-0.1.0.tgz"
    images = found(scan(ctx))
    assert set(images) == {NGINX, REDIS}
    assert images[NGINX] == (Location("charts/app-0.1.0.tgz", None, "app/templates/pod.yaml"),)


def test_tgz_chart_without_values_file_leaves_disabled_subcharts_out(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    source = make_umbrella_chart(tmp_path / "src" / "app")
    helm_python.package(source, destination=ctx / "charts")
    assert set(found(scan(ctx))) == {NGINX}


def test_pinned_chart_images_keep_tag_and_digest(tmp_path: Path) -> None:
    # Like ingress-nginx: image: "{{ repo }}:{{ tag }}@{{ digest }}".
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "ingress",
        "ingress",
        values={
            "repo": "registry.k8s.io/ingress-nginx/controller",
            "tag": "v1.9.4",
            "digest": DIGEST,
        },
        templates={
            "pod.yaml": pod_template('"{{ .Values.repo }}:{{ .Values.tag }}@{{ .Values.digest }}"')
        },
    )
    assert set(found(scan(ctx))) == {f"registry.k8s.io/ingress-nginx/controller:v1.9.4@{DIGEST}"}


def test_every_chart_child_but_not_other_files(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {"charts/README.md": "image: not/scanned:1\n", "charts/notes/readme.txt": "x\n"},
    )
    make_chart(ctx / "charts" / "one", "one", templates={"p.yaml": pod_template("one:1")})
    make_chart(ctx / "charts" / "two", "two", templates={"p.yaml": pod_template("two:2")})
    result = scan(ctx)
    assert set(found(result)) == {"docker.io/library/one:1", "docker.io/library/two:2"}
    # A directory that is not a chart is reported, not silently skipped.
    assert [(w.file, w.message) for w in result.images.warnings] == [
        ("charts/notes", "not a chart (no Chart.yaml); skipped")
    ]


def test_chart_that_fails_to_render_is_an_error_naming_chart_and_quoting_helm(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "broken",
        "broken",
        templates={"p.yaml": '{{ required "value host is required" .Values.host }}\n'},
    )
    with pytest.raises(ContextError) as caught:
        scan(ctx)
    message = str(caught.value)
    assert "charts/broken" in message
    assert "value host is required" in message
    assert "\n" not in message


def test_values_file_fixes_the_render(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/broken.values.yaml": "host: example.com\n"})
    make_chart(
        ctx / "charts" / "broken",
        "broken",
        templates={
            "p.yaml": '# {{ required "value host is required" .Values.host }}\n'
            + pod_template("nginx:1.25")
        },
    )
    assert set(found(scan(ctx))) == {NGINX}


def test_corrupt_tgz_is_an_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/bad.tgz": b"not a gzip archive"})
    with pytest.raises(ContextError, match=r"charts/bad\.tgz"):
        scan(ctx)


def test_values_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"charts/app.values.yaml": "- a\n- b\n"})
    make_umbrella_chart(ctx / "charts" / "app")
    with pytest.raises(ContextError, match=r"charts/app\.values\.yaml"):
        scan(ctx)


def test_missing_declared_dependency_is_a_warning(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    chart = make_umbrella_chart(ctx / "charts" / "app")
    shutil.rmtree(chart / "charts" / "metrics")
    result = scan(ctx)
    assert set(found(result)) == {NGINX}
    (warning,) = result.images.warnings
    assert warning.file == "charts/app"
    assert "'metrics'" in warning.message


def test_invalid_rendered_reference_is_a_warning_in_the_template_file(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "app",
        "app",
        values={"image": "Nginx:1"},
        templates={"pod.yaml": pod_template("{{ .Values.image }}")},
    )
    result = scan(ctx)
    assert found(result) == {}
    (warning,) = result.images.warnings
    # The template's own file; its source line is unknown (the line is templated).
    assert (warning.file, warning.line) == ("charts/app/templates/pod.yaml", None)
    assert warning.message.startswith("rendered line 8: invalid image reference")
    assert "Nginx:1" in warning.message


def test_chart_warnings_have_the_template_file_and_line_where_known(tmp_path: Path) -> None:
    """A literal line of a template is found again in its source: file and line point
    there. Inside a .tgz there is no file in the context: the chart and the template."""
    ctx = make_context(tmp_path / "ctx")
    templates = {
        "pod.yaml": "# a comment\n{{- if true }}\n" + pod_template("Bad:Ref") + "{{- end }}\n",
        "bad.yaml": "kind: ConfigMap\ndata: {{ .Values.broken }}: [\n  image: redis:7.2\n",
    }
    make_chart(ctx / "charts" / "app", "app", values={"broken": "x"}, templates=templates)
    result = scan(ctx, strict=False)
    assert found(result) == {REDIS: (Location("charts/app", None, "app/templates/bad.yaml"),)}
    bad, pod = result.images.warnings
    assert (pod.file, pod.line) == ("charts/app/templates/pod.yaml", 10)
    assert "Bad:Ref" in pod.message and "rendered" not in pod.message
    # Rendered output that is not YAML is line-scanned, and says so.
    assert (bad.file, bad.line) == ("charts/app/templates/bad.yaml", None)
    assert "rendered output is not valid YAML" in bad.message
    shutil.move(ctx / "charts" / "app", tmp_path / "app")
    helm_python.package(tmp_path / "app", destination=ctx / "charts")
    bad, pod = scan(ctx).images.warnings
    assert (pod.file, pod.line) == ("charts/app-0.1.0.tgz", None)
    assert pod.message.startswith("app/templates/pod.yaml, rendered line 9: ")
    assert bad.message.startswith("app/templates/bad.yaml: rendered output is not valid YAML")


def test_chart_and_manifest_findings_are_merged(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"manifests/pod.yaml": pod_template("nginx:1.25")})
    make_umbrella_chart(ctx / "charts" / "app")
    assert found(scan(ctx))[NGINX] == (
        Location("charts/app", None, "app/templates/pod.yaml"),
        Location("manifests/pod.yaml", 8),
    )


def test_helm_is_never_imported_by_the_scanning_process(tmp_path: Path) -> None:
    """Charts render in a child process: sealpy itself (``--help`` included) never loads the
    Helm library and its Go runtime."""
    import subprocess
    import sys

    ctx = make_context(tmp_path / "ctx")
    make_umbrella_chart(ctx / "charts" / "app")
    code = (
        "import sys\n"
        "from sealpy.core import pipeline\n"
        "import sealpy.core.cli\n"
        f"refs = pipeline.scan({str(ctx)!r}).images.references\n"
        "print(len(refs), 'helm_python' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_multi_line_helm_message_is_quoted_on_one_line(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(ctx / "charts" / "bad", "bad", templates={"a.yaml": "{{ .Values.x.y.z }}\n"})
    with pytest.raises(ContextError) as caught:
        scan(ctx)
    message = str(caught.value)
    assert message.startswith("chart charts/bad does not render: bad/templates/a.yaml:1:10")
    assert "nil pointer evaluating" in message
    assert "\n" not in message


NOTES = (
    "Thank you for installing {{ .Chart.Name }}.\n"
    "Your release is named {{ .Release.Name }}: enjoy!\n"
    "To debug, run a pod with image: busybox:1.36\n"
)


def test_notes_txt_is_line_scanned_without_a_yaml_warning(tmp_path: Path) -> None:
    """NOTES.txt is prose, never YAML: Sealos line-scans it, and so does sealpy, silently —
    so --strict passes on a chart whose only non-YAML output is its NOTES.txt."""
    ctx = make_context(tmp_path / "ctx")
    chart = make_umbrella_chart(ctx / "charts" / "app")
    (chart / "templates" / "NOTES.txt").write_text(NOTES)
    (chart / "charts" / "cache" / "templates" / "NOTES.txt").write_text(
        "Cache: {{ .Values.x }}: on\n"
    )
    (ctx / "charts" / "app.values.yaml").write_text("cache: {enabled: true}\n")
    result = scan(ctx, strict=True)
    assert result.images.warnings == ()
    assert found(result)["docker.io/library/busybox:1.36"] == (
        Location("charts/app", None, "app/templates/NOTES.txt"),
    )
    assert set(found(result)) == {NGINX, REDIS, "docker.io/library/busybox:1.36"}


def test_a_yaml_template_that_is_not_yaml_still_warns_next_to_notes(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "app",
        "app",
        templates={
            "NOTES.txt": NOTES,
            "broken.yml": "kind: ConfigMap\ndata: {{ .Release.Name }}: [\n",
            "cm.tpl": "a: b: c\n",
        },
    )
    result = scan(ctx)
    assert [(w.file, w.message.split(" (")[0]) for w in result.images.warnings] == [
        ("charts/app/templates/broken.yml", "rendered output is not valid YAML"),
        ("charts/app/templates/cm.tpl", "rendered output is not valid YAML"),
    ]
    with pytest.raises(ContextError, match="2 scan warning"):
        scan(ctx, strict=True)
