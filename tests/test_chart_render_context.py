"""Charts render in Sealos's context (release ``dryrun``, not an install, Kubernetes
v1.20.0), as far as the Helm SDK allows; ``--kube-version``/``--api-versions`` change it."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery_kit import found, make_chart, make_context, pod_template, scan

from sealpy.core.cli import main
from sealpy.core.discovery.chartoptions import parse_kube_version, render_options
from sealpy.core.errors import ContextError, UsageError
from sealpy.core.model import RenderOptions

# A tag made of what the render context says: .Capabilities and .Release.
CONTEXT_TAG = (
    "{{ .Capabilities.KubeVersion.Version }}-{{ .Capabilities.KubeVersion.Major }}"
    "-{{ .Capabilities.KubeVersion.Minor }}-{{ .Release.IsInstall }}-{{ .Release.IsUpgrade }}"
    "-{{ .Release.Name }}-{{ .Release.Namespace }}"
)
# The MySQL operator chart's guard against `helm install` into the default namespace.
GUARD = (
    '{{ if and .Release.IsInstall (eq .Release.Namespace "default") }}'
    '{{ fail "Installing in the default namespace is not supported" }}{{ end }}\n'
)


def context_chart(tmp_path: Path) -> Path:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "probe",
        "probe",
        templates={"pod.yaml": pod_template(f"probe:{CONTEXT_TAG}")},
    )
    return ctx


def test_the_sdk_render_options_sealpy_relies_on_still_work(tmp_path: Path) -> None:
    """Pins the helm-python-sdk behaviour the render context rests on: the native render
    call takes ``kube_version``, ``is_upgrade`` makes ``IsInstall`` false, ``api_versions``
    adds to Helm's defaults. An SDK upgrade that drops any of them fails here."""
    ctx = context_chart(tmp_path)
    template = (
        '{{ if .Capabilities.APIVersions.Has "example.com/v1" }}x{{ else }}y{{ end }}'
        '{{ if .Capabilities.APIVersions.Has "apps/v1" }}a{{ end }}'
    )
    make_chart(
        ctx / "charts" / "apis", "apis", templates={"pod.yaml": pod_template(f"apis:{template}")}
    )
    assert set(found(scan(ctx))) == {
        "docker.io/library/probe:v1.20.0-1-20-false-true-dryrun-default",
        "docker.io/library/apis:ya",
    }
    render = RenderOptions(kube_version="v1.27.3", api_versions=("example.com/v1",))
    assert set(found(scan(ctx, render=render))) == {
        "docker.io/library/probe:v1.27.3-1-27-false-true-dryrun-default",
        "docker.io/library/apis:xa",
    }


def test_a_chart_refusing_helm_install_into_default_renders_as_under_sealos(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "mysql-operator",
        "mysql-operator",
        templates={"deployment.yaml": GUARD + pod_template("mysql/mysql-operator:8.0.30")},
    )
    assert set(found(scan(ctx))) == {"docker.io/mysql/mysql-operator:8.0.30"}


# bitnami's common.errors.upgrade.passwords.empty: on an upgrade, an empty password fails.
UPGRADE_CHECK = (
    "{{ if and .Release.IsUpgrade (not .Values.auth.rootPassword) }}"
    '{{ fail "PASSWORDS ERROR: You must provide your current passwords when upgrading" }}'
    "{{ end }}\n"
)


def test_a_chart_refusing_an_upgrade_without_passwords_renders_as_under_sealos(
    tmp_path: Path,
) -> None:
    """Sealos renders with IsInstall and IsUpgrade both false, which the SDK cannot: a chart
    that fails as an upgrade is rendered again as an install (IsUpgrade false)."""
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "mongodb",
        "mongodb",
        values={"auth": {"rootPassword": ""}},
        templates={
            "secret.yaml": UPGRADE_CHECK + "kind: Secret\n",
            "sts.yaml": pod_template("bitnami/mongodb:6.0.2-{{ .Release.IsInstall }}"),
        },
    )
    assert set(found(scan(ctx))) == {"docker.io/bitnami/mongodb:6.0.2-true"}


def test_a_chart_failing_both_ways_names_both_failures(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "both",
        "both",
        values={"auth": {"rootPassword": ""}},
        templates={"a.yaml": UPGRADE_CHECK, "b.yaml": GUARD},
    )
    with pytest.raises(ContextError) as caught:
        scan(ctx)
    message = str(caught.value)
    assert message.startswith("chart charts/both does not render: as an upgrade: ")
    assert "PASSWORDS ERROR" in message
    assert "; as an install: " in message and "default namespace is not supported" in message


def test_a_chart_failing_the_same_way_both_times_says_it_once(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    make_chart(
        ctx / "charts" / "a", "a", templates={"p.yaml": '{{ required "host!" .Values.host }}'}
    )
    with pytest.raises(ContextError) as caught:
        scan(ctx)
    assert str(caught.value).count("host!") == 1 and "as an install" not in str(caught.value)


def test_kube_version_flag_changes_capability_derived_images(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Like bitnami's kubectl jobs: the image tag follows the cluster's version.
    ctx = make_context(tmp_path / "ctx")
    tag = "{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}"
    make_chart(
        ctx / "charts" / "job",
        "job",
        templates={"job.yaml": pod_template(f"bitnami/kubectl:{tag}")},
    )
    assert main(["scan", str(ctx)]) == 0
    assert "docker.io/bitnami/kubectl:1.20 " in capfd.readouterr().out
    assert main(["scan", "--kube-version", "v1.28.4", str(ctx)]) == 0
    assert "docker.io/bitnami/kubectl:1.28 " in capfd.readouterr().out


def test_api_versions_flag_is_repeatable_and_comma_separated(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = make_context(tmp_path / "ctx")
    has = '{{ if and (.Capabilities.APIVersions.Has "a.io/v1") (.Capabilities.APIVersions.Has "b.io/v1/K") }}'
    make_chart(
        ctx / "charts" / "c",
        "c",
        templates={"p.yaml": pod_template(f"{has}new:1{{{{ else }}}}old:1{{{{ end }}}}")},
    )
    assert main(["scan", "--api-versions", "a.io/v1", str(ctx)]) == 0
    assert "docker.io/library/old:1" in capfd.readouterr().out
    assert (
        main(["scan", "--api-versions", "a.io/v1", "--api-versions", "x/v1,b.io/v1/K", str(ctx)])
        == 0
    )
    assert "docker.io/library/new:1" in capfd.readouterr().out


def _version_gate(ctx: Path) -> None:
    # No image at all, so caching and building need no registry; fails below 1.25.
    gate = '{{ if semverCompare "<1.25-0" .Capabilities.KubeVersion.Version }}{{ fail "needs 1.25" }}{{ end }}\n'
    make_chart(ctx / "charts" / "gate", "gate", templates={"cm.yaml": gate + "kind: ConfigMap\n"})


def test_registry_save_and_build_take_the_render_flags(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = make_context(tmp_path / "ctx")
    _version_gate(ctx)
    store = ["--root", str(tmp_path / "store")]
    for command in (["registry", "save"], ["build", *store]):
        assert main([*command, str(ctx)]) == 1
        assert "needs 1.25" in capfd.readouterr().err
        assert main([*command, "--kube-version", "1.25", "--api-versions", "a/v1", str(ctx)]) == 0
        capfd.readouterr()


@pytest.mark.parametrize("command", [["scan"], ["registry", "save"], ["build"]])
@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        (["--kube-version", "one.two"], "invalid --kube-version 'one.two'"),
        (
            ["--api-versions", "apps/v1,not a version"],
            "invalid --api-versions entry 'not a version'",
        ),
    ],
)
def test_bad_render_flags_are_one_usage_error(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    command: list[str],
    flag: list[str],
    complaint: str,
) -> None:
    ctx = make_context(tmp_path / "ctx")
    assert main([*command, *flag, str(ctx)]) == 2
    out, err = capfd.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {complaint}: ") and not out


def test_debug_shows_the_render_context(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ctx = make_context(tmp_path / "ctx")
    assert (
        main(["--debug", "scan", "--kube-version", "1.26", "--api-versions", "a.io/v1", str(ctx)])
        == 0
    )
    err = capfd.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("debug chart render context")]
    for part in (
        "'dryrun'",
        "IsInstall false, IsUpgrade true",
        "as an install if that fails",
        "KubeVersion v1.26.0",
        "a.io/v1",
        "2 GiB",
        "60 s",
    ):
        assert part in line
    assert main(["scan", str(ctx)]) == 0
    assert "render context" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("given", "helm"),
    [
        ("1.20", "v1.20.0"),
        ("v1.27.3", "v1.27.3"),
        ("1", "v1.0.0"),
        ("1.27.3-gke.100", "v1.27.3-gke.100"),
    ],
)
def test_kube_version_is_written_as_helm_writes_it(given: str, helm: str) -> None:
    assert parse_kube_version(given) == helm


def test_sandbox_bounds_come_from_the_environment() -> None:
    options = render_options(
        environ={"SEALPY_CHART_MEMORY": "512MiB", "SEALPY_CHART_TIMEOUT": "2.5"}
    )
    assert (options.memory_limit, options.timeout) == (512 << 20, 2.5)
    assert render_options(environ={"SEALPY_CHART_MEMORY": "3G"}).memory_limit == 3 << 30
    assert render_options().memory_limit == 2 << 30 and render_options().timeout == 60.0
    for bad in (
        {"SEALPY_CHART_MEMORY": "lots"},
        {"SEALPY_CHART_MEMORY": "1M"},
        {"SEALPY_CHART_TIMEOUT": "0"},
    ):
        with pytest.raises(UsageError, match=next(iter(bad))):
            render_options(environ=bad)
