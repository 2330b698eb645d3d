"""The whole scan: merging, de-duplication, .sealignore, plugins, and ``sealpy scan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from discovery_kit import (
    DIGEST,
    found,
    make_context,
    make_umbrella_chart,
    pod_template,
    scan,
    warnings_at,
)

from sealpy.core import pipeline
from sealpy.core.cli import main
from sealpy.core.errors import ContextError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import (
    BuildContext,
    DiscoveryResult,
    Finding,
    Location,
    ScanWarning,
)
from sealpy.core.plugins import new_plugin_manager
from sealpy.core.reference import ImageReference

# --- merging and .sealignore ------------------------------------------------------------------


def test_same_image_everywhere_is_one_entry_with_every_location(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "manifests/a.yaml": pod_template("nginx:1.25"),
            "manifests/b.yaml": "spec:\n  image: docker.io/library/nginx:1.25\n",
            "images/shim/list": "nginx:1.25\nindex.docker.io/library/nginx:1.25\n",
        },
    )
    make_umbrella_chart(ctx / "charts" / "app")
    result = scan(ctx, extra_images=["nginx:1.25"])
    assert found(result) == {
        "docker.io/library/nginx:1.25": (
            Location("<command line>"),
            Location("charts/app", None, "app/templates/pod.yaml"),
            Location("images/shim/list", 1),
            Location("images/shim/list", 2),
            Location("manifests/a.yaml", 8),
            Location("manifests/b.yaml", 2),
        )
    }


def test_tag_and_digest_are_different_images_and_both_kept(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {"images/shim/list": f"nginx:1.25\nnginx:1.25@{DIGEST}\nnginx@{DIGEST}\n"},
    )
    assert list(found(scan(ctx))) == [
        "docker.io/library/nginx:1.25",
        f"docker.io/library/nginx:1.25@{DIGEST}",
        f"docker.io/library/nginx@{DIGEST}",
    ]


def test_images_are_sorted(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"images/shim/list": "zeta:1\nquay.io/a/b:1\nalpha:1\n"})
    assert list(found(scan(ctx))) == [
        "docker.io/library/alpha:1",
        "docker.io/library/zeta:1",
        "quay.io/a/b:1",
    ]


def test_sealignore_plain_normalised_and_glob(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "images/shim/list": f"""
                nginx
                nginx:1.25
                redis:7
                redis:7@{DIGEST}
                quay.io/prometheus/node-exporter:v1.7.0
                quay.io/prometheus/alertmanager:v0.27.0
                quay.io/other/app:1
            """,
            ".sealignore": """
                # leave these out
                nginx            # normalised: docker.io/library/nginx:latest
                docker.io/library/redis:7
                quay.io/prometheus/*
                Not A Reference
            """,
        },
    )
    result = scan(ctx)
    assert list(found(result)) == ["docker.io/library/nginx:1.25", "quay.io/other/app:1"]
    assert [(str(i.reference), i.rule) for i in result.images.ignored] == [
        ("docker.io/library/nginx:latest", "nginx"),
        ("docker.io/library/redis:7", "docker.io/library/redis:7"),
        (f"docker.io/library/redis:7@{DIGEST}", "docker.io/library/redis:7"),
        ("quay.io/prometheus/alertmanager:v0.27.0", "quay.io/prometheus/*"),
        ("quay.io/prometheus/node-exporter:v1.7.0", "quay.io/prometheus/*"),
    ]
    assert warnings_at(result) == [(".sealignore", 5)]


def test_sealignore_digest_rule_leaves_out_that_content_under_any_tag(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "images/shim/list": f"nginx:1.25@{DIGEST}\nnginx@{DIGEST}\nnginx:1.25\n",
            ".sealignore": f"nginx@{DIGEST}\n",
        },
    )
    assert list(found(scan(ctx))) == ["docker.io/library/nginx:1.25"]


def test_extra_images_are_added_and_invalid_ones_are_an_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    assert found(scan(ctx, extra_images=["busybox"])) == {
        "docker.io/library/busybox:latest": (Location("<command line>"),)
    }
    with pytest.raises(ContextError, match="--images"):
        scan(ctx, extra_images=["Not Valid"])


def test_build_files_all_found_or_the_one_given(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"Sealfile": "FROM scratch\n", "Dockerfile": "x\n"})
    names = [p.name for p in scan(ctx).context.build_files]
    assert names == ["Sealfile", "Kubefile", "Dockerfile"]
    assert scan(ctx, build_file=ctx / "Dockerfile").context.build_files == (
        (ctx / "Dockerfile").absolute(),
    )


def test_strict_scan_fails_on_warnings(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"images/shim/list": "Bad Ref\n"})
    assert len(pipeline.scan(ctx).images.warnings) == 1
    with pytest.raises(ContextError, match="strict"):
        pipeline.scan(ctx, strict=True)


# --- a third-party discovery plugin --------------------------------------------------------


class HelmfilePlugin:
    """A fixture third-party source: pretends to read ``helmfile.yaml``."""

    @hookimpl
    def sealpy_discover_images(self, context: BuildContext) -> DiscoveryResult | None:
        if not (context.root / "helmfile.yaml").is_file():
            return None
        return DiscoveryResult(
            findings=(
                Finding(
                    ImageReference.parse("quay.io/thirdparty/tool:1"), Location("helmfile.yaml", 3)
                ),
                Finding(ImageReference.parse("nginx:1.25"), Location("helmfile.yaml", 7)),
            ),
            warnings=(ScanWarning("helmfile.yaml", 9, "could not resolve release x"),),
        )


def test_third_party_plugin_findings_are_merged(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {"helmfile.yaml": "releases: []\n", "manifests/pod.yaml": pod_template("nginx:1.25")},
    )
    manager = new_plugin_manager(plugins=[HelmfilePlugin()])
    result = pipeline.scan(ctx, manager=manager)
    assert found(result) == {
        "docker.io/library/nginx:1.25": (
            Location("helmfile.yaml", 7),
            Location("manifests/pod.yaml", 8),
        ),
        "quay.io/thirdparty/tool:1": (Location("helmfile.yaml", 3),),
    }
    assert warnings_at(result) == [("helmfile.yaml", 9)]
    # Without the plugin (the process-wide manager), only the built-in sources answer.
    assert list(found(pipeline.scan(ctx))) == ["docker.io/library/nginx:1.25"]


def test_third_party_plugin_error_fails_the_scan(tmp_path: Path) -> None:
    class Failing:
        @hookimpl
        def sealpy_discover_images(self, context: BuildContext) -> DiscoveryResult | None:
            raise ContextError("helmfile.yaml:1: cannot parse")

    ctx = make_context(tmp_path / "ctx")
    with pytest.raises(ContextError, match="helmfile"):
        pipeline.scan(ctx, manager=new_plugin_manager(plugins=[Failing()]))


# --- sealpy scan --------------------------------------------------------------------------


def _full_context(tmp_path: Path) -> Path:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "manifests/app.yaml": pod_template("nginx:1.25") + "---\nx:\n  image: Bad:Ref\n",
            "images/shim/list": "redis:7\nquay.io/prometheus/node-exporter:v1.7.0\n",
            "images/skopeo/app.tar": b"x",
            "images/skopeo/tar.txt": "docker-archive:app.tar@my/app:1\n",
            ".sealignore": "quay.io/prometheus/*\n",
        },
    )
    make_umbrella_chart(ctx / "charts" / "app")
    return ctx


def test_scan_json_is_one_object_with_the_documented_keys(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = _full_context(tmp_path)
    assert main(["scan", "--json", str(ctx)]) == 0
    out, _err = capfd.readouterr()
    data = json.loads(out)  # exactly one JSON document: nothing else on stdout
    assert list(data) == ["images", "archives", "ignored", "warnings", "render"]
    assert data["images"] == [
        {
            "reference": "docker.io/library/nginx:1.25",
            "sources": [
                {"file": "charts/app", "line": None, "detail": "app/templates/pod.yaml"},
                {"file": "manifests/app.yaml", "line": 8},
            ],
        },
        {
            "reference": "docker.io/library/redis:7",
            "sources": [{"file": "images/shim/list", "line": 1}],
        },
    ]
    assert data["archives"] == [
        {
            "transport": "docker-archive",
            "path": "images/skopeo/app.tar",
            "destination": "docker.io/my/app:1",
            "source": {"file": "images/skopeo/tar.txt", "line": 1},
        }
    ]
    assert data["ignored"] == [
        {"reference": "quay.io/prometheus/node-exporter:v1.7.0", "rule": "quay.io/prometheus/*"}
    ]
    (warning,) = data["warnings"]
    assert (warning["file"], warning["line"]) == ("manifests/app.yaml", 11)
    assert "Bad:Ref" in warning["message"]
    # The context charts are rendered in: Sealos's, as far as the Helm SDK allows.
    assert data["render"] == {
        "release_name": "dryrun",
        "namespace": "default",
        "is_install": False,
        "is_upgrade": True,
        "retry_as_install": True,
        "kube_version": "v1.20.0",
        "api_versions": [],
        "memory_limit": 2 << 30,
        "timeout": 60.0,
    }
    assert str(tmp_path) not in out  # every path is relative to the context


def test_scan_json_key_sets_and_types_are_pinned(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The README documents `scan --json` as a stable interface: these are its keys and
    types, every one of them (a new key is a documented change, not an accident)."""
    ctx = _full_context(tmp_path)
    (ctx / "charts" / "not-a-chart").mkdir()  # a warning without a line
    args = ["--kube-version", "1.27", "--api-versions", "example.com/v1,x.io/v2/Kind"]
    assert main(["scan", "--json", "--images", "busybox:1.36", *args, str(ctx)]) == 0
    data = json.loads(capfd.readouterr().out)
    assert list(data) == ["images", "archives", "ignored", "warnings", "render"]
    render = data["render"]
    assert list(render) == [
        "release_name",
        "namespace",
        "is_install",
        "is_upgrade",
        "retry_as_install",
        "kube_version",
        "api_versions",
        "memory_limit",
        "timeout",
    ]
    assert isinstance(render["release_name"], str) and isinstance(render["namespace"], str)
    assert all(
        isinstance(render[k], bool) for k in ("is_install", "is_upgrade", "retry_as_install")
    )
    assert render["kube_version"] == "v1.27.0"  # as Helm writes .Capabilities.KubeVersion
    assert render["api_versions"] == ["example.com/v1", "x.io/v2/Kind"]
    assert isinstance(render["memory_limit"], int) and isinstance(render["timeout"], float)
    sources = [s for image in data["images"] for s in image["sources"]]
    assert all(set(i) == {"reference", "sources"} for i in data["images"])
    assert all(isinstance(i["reference"], str) and i["sources"] for i in data["images"])
    assert {tuple(sorted(s)) for s in sources} == {("file", "line"), ("detail", "file", "line")}
    for source in sources:
        assert isinstance(source["file"], str)
        assert source["line"] is None or isinstance(source["line"], int)
        if "detail" in source:  # a chart: the template it was rendered from, no line
            assert isinstance(source["detail"], str) and source["line"] is None
    assert {"file": "<command line>", "line": None} in sources
    (archive,) = data["archives"]
    assert set(archive) == {"transport", "path", "destination", "source"}
    assert set(archive["source"]) == {"file", "line"}
    assert all(set(i) == {"reference", "rule"} for i in data["ignored"])
    assert data["ignored"]
    assert all(set(w) == {"file", "line", "message"} for w in data["warnings"])
    assert {w["line"] is None for w in data["warnings"]} == {True, False}
    refs = [i["reference"] for i in data["images"]]
    assert refs == sorted(refs)
    keys = [(w["file"] or "", w["line"] or 0, w["message"]) for w in data["warnings"]]
    assert keys == sorted(keys)


def test_scan_table_lists_references_places_and_warnings(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = _full_context(tmp_path)
    assert main(["scan", str(ctx)]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["REFERENCE", "FOUND", "IN"]
    assert lines[1].split(None, 1) == [
        "docker.io/library/nginx:1.25",
        "charts/app (app/templates/pod.yaml), manifests/app.yaml:8",
    ]
    assert "manifests/app.yaml:11" in err


@pytest.mark.parametrize(
    ("setup", "complaint"),
    [
        ("missing", "does not exist"),
        ("no-build-file", "no build file"),
        ("bad-chart", "value host is required"),
        ("bad-tar-line", "images/skopeo/tar.txt:1"),
    ],
)
def test_scan_errors_exit_non_zero_with_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], setup: str, complaint: str
) -> None:
    ctx = tmp_path / "ctx"
    if setup == "no-build-file":
        ctx.mkdir()
        (ctx / "manifests").mkdir()
    elif setup == "bad-chart":
        make_context(
            ctx,
            {
                "charts/bad/Chart.yaml": "apiVersion: v2\nname: bad\nversion: 0.1.0\n",
                "charts/bad/templates/p.yaml": '{{ required "value host is required" .Values.h }}',
            },
        )
    elif setup == "bad-tar-line":
        make_context(ctx, {"images/skopeo/tar.txt": "docker-archive:app.tar\n"})
    assert main(["scan", "--json", str(ctx)]) != 0
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert complaint in err
    assert "Traceback" not in err


def test_scan_exit_code_with_warnings_and_strict(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = make_context(tmp_path / "ctx", {"images/shim/list": "nginx\nBad Ref\n"})
    assert main(["scan", str(ctx)]) == 0
    assert main(["scan", "--strict", str(ctx)]) != 0
    assert main(["scan", "--json", "--strict", str(ctx)]) != 0
    clean = make_context(tmp_path / "clean", {"images/shim/list": "nginx\n"})
    assert main(["scan", "--strict", str(clean)]) == 0
    capfd.readouterr()


EXAMPLES = Path(__file__).parents[1] / "examples"


def test_the_demo_context_scans_as_committed(tmp_path: Path) -> None:
    """`sealpy scan examples/demo-context` works on a fresh clone: the archive tar.txt
    names is committed, and it is exactly what the demo's deterministic factory makes."""
    import importlib.util

    from sealpy.core.testing.images import ImageFactory

    spec = importlib.util.spec_from_file_location("sealpy_demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    committed = EXAMPLES / "demo-context" / "images" / "skopeo" / "pause.tar"
    made = demo.make_archive(ImageFactory(tmp_path / "factory"), tmp_path / "pause.tar")
    assert made.read_bytes() == committed.read_bytes()
    assert committed.stat().st_size <= 32 * 1024
    result = scan(EXAMPLES / "demo-context", strict=True)
    (archive,) = result.images.archives
    assert archive.path == committed.resolve()
    assert "docker.io/library/nginx:1.25" in found(result)
