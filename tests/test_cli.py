"""The command line: Sealos/skopeo flag spellings, one-line errors, --debug."""

from __future__ import annotations

import pytest

from sealpy.core.cli import main, normalize_bool_flags
from sealpy.core.errors import UsageError
from sealpy.core.transport.distribution import DistributionLayout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--all=true"], ["--all"]),
        (["--all=false"], ["--no-all"]),
        (["--tls-verify=false"], ["--no-tls-verify"]),
        (["--tls-verify=TRUE"], ["--tls-verify"]),
        (["--save-image=0"], ["--no-save-image"]),
        (["--all"], ["--all"]),
        (["--platform=linux/amd64"], ["--platform=linux/amd64"]),
        (["--", "--all=true"], ["--", "--all=true"]),
    ],
)
def test_boolean_flags_accept_the_sealos_spelling(argv, expected):
    assert normalize_bool_flags(argv) == expected


def test_a_bad_boolean_value_is_a_usage_error():
    with pytest.raises(UsageError, match="--all"):
        normalize_bool_flags(["--all=maybe"])


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    return ctx


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert "Traceback" not in err[0]
    return err[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sealpy ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registry", "save", "--strategy", "nope", "{ctx}"], "unknown strategy 'nope'"),
        (["registry", "save", "--platform", "linux", "{ctx}"], "invalid platform 'linux'"),
        (["registry", "save", "--platform", "linux/amd64,", "{ctx}"], "invalid platform"),
        (["registry", "save", "--creds", "nocolon", "{ctx}"], "invalid --creds"),
        (["registry", "save", "--all=maybe", "{ctx}"], "invalid boolean value"),
        (
            ["registry", "save", "--registry-mirror", "docker.io", "{ctx}"],
            "invalid --registry-mirror",
        ),
        (["registry", "save", "--no-such-flag", "{ctx}"], "No such option"),
        (["registry", "save", "{ctx}/missing"], "does not exist"),
        (["scan"], "Missing argument"),
        (["registry", "save", "--authfile", "{ctx}/none.json", "{ctx}"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_on_stderr(context, capsys, args, message):
    code = main([a.replace("{ctx}", str(context)) for a in args])
    assert code != 0
    assert message in one_error_line(capsys)


def test_unknown_strategy_fails_even_with_no_images(context, capsys):
    """Strategy selection is validated before anything else runs."""
    assert main(["registry", "save", "--strategy", "nope", str(context)]) == 2
    assert "known strategies: " in one_error_line(capsys)
    assert not (context / "registry").exists()


def test_debug_shows_the_traceback(context, capsys):
    assert main(["--debug", "registry", "save", "--strategy", "nope", str(context)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnknownStrategyError" in err


def test_registry_save_through_the_cli(conformance_catalog, context, capsys):
    c = conformance_catalog
    ref = c.ref(c.plain, "library/single")
    code = main(
        [
            "registry",
            "save",
            "--platform=linux/amd64",
            "--tls-verify=false",
            "--all=false",
            "--max-pull-procs",
            "2",
            "--images",
            str(ref),
            str(context),
        ]
    )
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"info saving images {ref}" in err
    assert "1 images cached by proxy" in err
    assert (
        DistributionLayout(context / "registry").resolve("library/single", "1") == c.single.digest
    )


def test_registry_dir_option(conformance_catalog, context, tmp_path, capsys):
    c = conformance_catalog
    out = tmp_path / "elsewhere"
    code = main(
        [
            "registry",
            "save",
            "--registry-dir",
            str(out),
            "--platform",
            "linux/amd64",
            "--images",
            str(c.ref(c.plain, "library/shared")),
            str(context),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert DistributionLayout(out).resolve("library/shared", "1") == c.shared.digest
    assert not (context / "registry").exists()


def test_sealos_sync_switch_selects_sync(conformance_catalog, context, capsys, monkeypatch):
    c = conformance_catalog
    monkeypatch.setenv("SEALOS_REGISTRY_SYNC_EXPERIMENTAL", "true")
    code = main(
        [
            "registry",
            "save",
            "--platform",
            "linux/amd64",
            "--images",
            str(c.ref(c.plain, "library/single")),
            str(context),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "cached by sync" in capsys.readouterr().err
