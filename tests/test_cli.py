"""The command line: Sealos/skopeo flag spellings, one-line errors, --debug."""

from __future__ import annotations

import json

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


def test_pipeline_save_is_registry_save_in_one_call(conformance_catalog, tmp_path, capsys):
    """`pipeline.save(SaveJob(...))` does what `sealpy registry save` does, and says it
    with the events the CLI prints as `info`/`warn` lines."""
    from sealpy.core import pipeline
    from sealpy.core.events import Event, EventKind
    from sealpy.core.model import CacheOptions
    from sealpy.core.reference import Platform

    c = conformance_catalog
    ref = c.ref(c.plain, "library/single")
    contexts = []
    for name in ("cli", "python"):
        context = tmp_path / name
        (context / "manifests").mkdir(parents=True)
        (context / "manifests" / "app.yaml").write_text(f"image: {ref}\nimage: bad ref!\n")
        contexts.append(context)
    code = main(["registry", "save", "--platform=linux/amd64", str(contexts[0])])
    _, err = capsys.readouterr()
    assert code == 0, err

    events: list[Event] = []
    saved = pipeline.save(
        pipeline.SaveJob(
            context=contexts[1],
            strategy="proxy",
            cache=CacheOptions(platforms=(Platform.parse("linux/amd64"),)),
        ),
        events.append,
    )
    assert capsys.readouterr() == ("", "")
    warnings = [e.message for e in events if e.kind is EventKind.WARNING]
    info = [e.message for e in events if e.kind is EventKind.INFO]
    assert len(warnings) == 1 and [f"warn {w}" for w in warnings] == [
        line for line in err.splitlines() if line.startswith("warn ")
    ]
    assert info[0] == f"saving images {ref}" and f"info {info[0]}" in err.splitlines()
    assert saved.cache is not None and info[1] == saved.cache.summary()
    assert "1 images cached by proxy" in info[1] and "1 images cached by proxy" in err
    assert saved.registry_dir == contexts[1] / "registry"
    for context in contexts:
        layout = DistributionLayout(context / "registry")
        assert layout.resolve("library/single", "1") == c.single.digest


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


def test_build_file_errors_fail_before_any_registry_request(
    conformance_catalog, context, tmp_path, capsys
):
    """RUN (native builder) is found before the cache stage: no request, no registry/."""
    from sealpy.core.testing.faultproxy import FaultProxy

    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\nRUN true\n")
    with FaultProxy(conformance_catalog.plain.host) as proxy:
        code = main(
            [
                "build",
                "--root",
                str(tmp_path / "store"),
                "--platform",
                "linux/amd64",
                "--images",
                f"{proxy.host}/library/single:1",
                str(context),
            ]
        )
        seen = list(proxy.seen)
    assert code != 0
    assert "Kubefile:3: RUN: RUN needs a container" in one_error_line_after_info(capsys)
    assert seen == []
    assert not (context / "registry").exists()
    assert not (tmp_path / "store").exists()


def one_error_line_after_info(capsys) -> str:
    """The error line of a run that may print info/warn lines first."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_file_option_falls_back_to_the_context_directory(tmp_path, monkeypatch, capsys):
    """buildah reads -f relative to the current directory, else relative to the context."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY Kubefile /default\n")
    (ctx / "Kubefile.prod").write_text("FROM scratch\nCOPY Kubefile.prod /prod\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = tmp_path / "store"
    code = main(["build", "--root", str(store), "-f", "Kubefile.prod", "-t", "app:1", "ctx"])
    assert code != 0  # ctx is not under the current directory
    capsys.readouterr()
    code = main(["build", "--root", str(store), "-f", "Kubefile.prod", "-t", "app:1", str(ctx)])
    assert code == 0, capsys.readouterr().err
    assert "COPY Kubefile.prod /prod" in capsys.readouterr().out
    # A file of that name in the current directory wins, as in buildah.
    (elsewhere / "Kubefile.prod").write_text("FROM scratch\nCOPY Kubefile /from-cwd\n")
    code = main(["build", "--root", str(store), "-f", "Kubefile.prod", str(ctx)])
    assert code == 0, capsys.readouterr().err
    assert "COPY Kubefile /from-cwd" in capsys.readouterr().out


def test_registry_save_needs_no_build_file(conformance_catalog, tmp_path, capsys):
    """In Sealos the build file plays no part in caching; scan and build still need one."""
    c = conformance_catalog
    ctx = tmp_path / "ctx"
    (ctx / "images" / "shim").mkdir(parents=True)
    (ctx / "images" / "shim" / "list").write_text(f"{c.ref(c.plain, 'library/single')}\n")
    code = main(["registry", "save", "--platform", "linux/amd64", str(ctx)])
    assert code == 0, capsys.readouterr().err
    assert DistributionLayout(ctx / "registry").resolve("library/single", "1") == c.single.digest
    capsys.readouterr()
    assert main(["scan", str(ctx)]) != 0
    assert "no build file" in one_error_line(capsys)


def test_save_image_false_validates_the_name_but_needs_no_available_strategy(
    context, tmp_path, monkeypatch, capsys
):
    """--save-image=false: the strategy name is still checked; whether it could run is not
    (sync needs skopeo and docker-registry, which an empty PATH does not have)."""
    (context / "Kubefile").write_text("FROM scratch\nCOPY Kubefile /k\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    store = str(tmp_path / "store")
    args = ["build", "--root", store, "--save-image=false", str(context)]
    assert main([*args[:-1], "--strategy", "nope", str(context)]) == 2
    assert "unknown strategy 'nope'" in one_error_line(capsys)
    assert main([*args[:-1], "--strategy", "sync", str(context)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["build", "--root", store, "--strategy", "sync", str(context)]) != 0
    assert "strategy sync is unavailable" in one_error_line_after_info(capsys)


def test_images_option_takes_commas_and_repeats(context, capsys):
    code = main(
        [
            "scan",
            "--json",
            "--images",
            "nginx:1.25, quay.io/a/b:2",
            "--images",
            "busybox,nginx:1.25",
            str(context),
        ]
    )
    assert code == 0, capsys.readouterr().err
    found = json.loads(capsys.readouterr().out)["images"]
    assert [i["reference"] for i in found] == [
        "docker.io/library/busybox:latest",
        "docker.io/library/nginx:1.25",
        "quay.io/a/b:2",
    ]
    assert all(s == {"file": "<command line>", "line": None} for i in found for s in i["sources"])
