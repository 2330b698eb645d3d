"""A chart's files resolve inside the chart, a chart and its values file inside the context:
a symlink to a host file never reaches a render, whatever Helm's loader would follow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from discovery_kit import found, make_chart, make_context, pod_template, scan

from sealpy.core.errors import ContextError

HOST_IMAGE = "leaked/host:1"
# A template whose images show what the chart could read: a file it carries, the host's
# /etc/passwd (hashed: any content at all changes the tag), a file in a directory.
PROBE = """\
apiVersion: v1
kind: Pod
metadata:
  name: probe
spec:
  containers:
    - name: a
      image: {{ .Files.Get "data.txt" | trim | default "none:1" }}
    - name: b
      image: probe/passwd:{{ .Files.Get "passwd" | sha256sum | trunc 12 }}
    - name: c
      image: {{ .Files.Get "dir/data.txt" | trim | default "none:2" }}
"""
EMPTY_SHA = "e3b0c44298fc"  # sha256 of nothing: /etc/passwd was not read


def host_files(tmp_path: Path) -> Path:
    """Outside the context: a file naming an image, and a whole chart."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "data.txt").write_text(f"{HOST_IMAGE}\n")
    make_chart(host / "evil", "evil", templates={"p.yaml": pod_template("leaked/subchart:1")})
    (host / "values.yaml").write_text("image: leaked/values:1\n")
    return host


def probe_chart(ctx: Path) -> Path:
    return make_chart(
        ctx / "charts" / "app", "app", values={"image": "nginx:1.25"}, templates={"pod.yaml": PROBE}
    )


def images(result) -> set[str]:
    return set(found(result))


def warned(result) -> dict[str, str]:
    return {w.file: w.message for w in result.images.warnings}


def test_symlinks_out_of_a_chart_are_left_out_with_a_warning(tmp_path: Path) -> None:
    host = host_files(tmp_path)
    ctx = make_context(tmp_path / "ctx")
    chart = probe_chart(ctx)
    (chart / "data.txt").symlink_to(host / "data.txt")
    (chart / "passwd").symlink_to("/etc/passwd")
    (chart / "dir").symlink_to("/etc")
    (chart / "charts").mkdir()
    (chart / "charts" / "evil").symlink_to(host / "evil")
    (chart / "templates" / "host.yaml").symlink_to(host / "evil" / "templates" / "p.yaml")
    result = scan(ctx)
    assert images(result) == {
        "docker.io/library/none:1",
        "docker.io/library/none:2",
        f"docker.io/probe/passwd:{EMPTY_SHA}",
    }
    warnings = warned(result)
    for name in ("data.txt", "passwd", "dir", "charts/evil", "templates/host.yaml"):
        assert "resolves outside the chart; left out of the chart" in warnings[f"charts/app/{name}"]


def test_a_values_yaml_symlinked_out_of_the_chart_is_not_read(tmp_path: Path) -> None:
    host = host_files(tmp_path)
    ctx = make_context(tmp_path / "ctx")
    chart = make_chart(
        ctx / "charts" / "app",
        "app",
        templates={"p.yaml": pod_template('{{ .Values.image | default "safe:1" }}')},
    )
    (chart / "values.yaml").unlink()
    (chart / "values.yaml").symlink_to(host / "values.yaml")
    result = scan(ctx)
    assert images(result) == {"docker.io/library/safe:1"}
    assert "charts/app/values.yaml" in warned(result)


def test_symlinks_inside_the_chart_are_followed(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    chart = probe_chart(ctx)
    (chart / "files").mkdir()
    (chart / "files" / "data.txt").write_text("inside/file:1\n")
    (chart / "files" / "sub").mkdir()
    (chart / "files" / "sub" / "data.txt").write_text("inside/dir:1\n")
    (chart / "data.txt").symlink_to("files/data.txt")
    (chart / "dir").symlink_to("files/sub")
    (chart / "templates" / "again.yaml").symlink_to("pod.yaml")
    result = scan(ctx, strict=True)
    assert images(result) == {
        "docker.io/inside/file:1",
        "docker.io/inside/dir:1",
        f"docker.io/probe/passwd:{EMPTY_SHA}",
    }
    templates = {loc.detail for loc in found(result)["docker.io/inside/file:1"]}
    assert templates == {"app/templates/pod.yaml", "app/templates/again.yaml"}


def test_loops_dangling_links_and_special_files_are_left_out(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    chart = probe_chart(ctx)
    (chart / "templates" / "up").symlink_to("..")
    (chart / "gone").symlink_to("missing")
    os.mkfifo(chart / "fifo")  # Helm's loader would block on it forever
    result = scan(ctx)
    assert "docker.io/library/none:1" in images(result)
    warnings = warned(result)
    assert "loops back" in warnings["charts/app/templates/up"]
    assert "dangling symlink" in warnings["charts/app/gone"]
    assert "not a regular file" in warnings["charts/app/fifo"]


def test_a_chart_yaml_outside_the_chart_fails_the_chart(tmp_path: Path) -> None:
    host = host_files(tmp_path)
    ctx = make_context(tmp_path / "ctx")
    chart = probe_chart(ctx)
    (chart / "Chart.yaml").unlink()
    (chart / "Chart.yaml").symlink_to(host / "evil" / "Chart.yaml")
    with pytest.raises(
        ContextError, match=r"chart charts/app cannot be loaded safely: Chart\.yaml: symlink"
    ):
        scan(ctx)


def test_charts_and_values_files_outside_the_context_are_skipped(tmp_path: Path) -> None:
    host = host_files(tmp_path)
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "app",
        "app",
        templates={"p.yaml": pod_template('{{ .Values.image | default "safe:1" }}')},
    )
    (ctx / "charts" / "evil").symlink_to(host / "evil")
    (ctx / "charts" / "etc").symlink_to("/etc")
    (ctx / "charts" / "app.values.yaml").symlink_to(host / "values.yaml")
    result = scan(ctx)
    assert images(result) == {"docker.io/library/safe:1"}
    warnings = warned(result)
    assert warnings["charts/evil"] == "resolves outside the build context; skipped"
    assert warnings["charts/etc"] == "resolves outside the build context; skipped"
    assert warnings["charts/app.values.yaml"] == "resolves outside the build context; not used"


def test_a_chart_symlinked_inside_the_context_is_rendered(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(ctx / "vendor" / "app", "app", templates={"p.yaml": pod_template("nginx:1.25")})
    (ctx / "charts").mkdir()
    (ctx / "charts" / "app").symlink_to("../vendor/app")
    assert images(scan(ctx, strict=True)) == {"docker.io/library/nginx:1.25"}
