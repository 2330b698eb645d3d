"""buildah's build flags on ``sealpy build`` mean what they mean to ``buildah bud`` 1.28:
the same Kubefile is built by real buildah and by sealpy (both builders) with each flag
alone and all combined, and the results are compared field by field.

What is compared: the config's Env, Labels, Cmd, Entrypoint, WorkingDir and created, the
manifest's annotations and media types, the files and their times. What buildah adds
and sealpy deliberately does not (README, "Differences from Sealos") is left out of the
comparison explicitly: the ``io.buildah.version`` label and the
``org.opencontainers.image.base.*`` annotations.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from _build_support import cli
from _buildah_support import Buildah, Image, sealpy_build, sealpy_image

from sealpy.core.build.flags import BUILDAH_BUD_FLAGS, BUILDAH_SHORT_FLAGS
from sealpy.core.image import media
from sealpy.core.testing.registry import skopeo

KUBEFILE = """FROM scratch AS base
ENV A=1 B=k
LABEL l=kube x=1
WORKDIR /w
ENTRYPOINT ["/bin/e"]
CMD ["c"]
COPY a /a
FROM base AS app
ENV C=$A D=$E
LABEL m=$E
COPY b /b
COPY ignored* /
FROM scratch
ENV S=3
COPY --from=app /a /final
"""
BASE_ANNOTATIONS = ("org.opencontainers.image.base.digest", "org.opencontainers.image.base.name")

CASES = {
    "no flags": [],
    "label": ["--label", "l=flag", "--label", "l=flag2", "--label", "n", "--target", "app"],
    "annotation": ["--annotation", "an=1", "--annotation", "an=2", "--annotation", "bn"],
    "env": [
        *("--env", "A=2", "--env", "E=e1", "--env", "E=e2", "--env", "F=$A"),
        *("--env", "HOSTV", "--env", "G=${NOPE}", "--target", "app"),
    ],
    "target app": ["--target", "app"],
    "target base": ["--target", "base"],
    "format docker": ["--format", "docker", "--target", "app"],
    "format oci": ["--format", "oci"],
    "timestamp": ["--timestamp", "100"],
    "squash": ["--squash", "--target", "app"],
    "ignorefile": ["--ignorefile", "{ignorefile}", "--target", "app"],
    "combined": [
        *("--target", "app", "--env", "A=2", "--env", "E=e", "--label", "l=flag"),
        *("--annotation", "an=1", "--timestamp", "100", "--squash", "--format", "docker"),
        *("--ignorefile", "{ignorefile}"),
    ],
}


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("a", "b", "ignored-1", "ignored-2"):
        (ctx / name).write_text(name)
    (ctx / ".dockerignore").write_text("ignored-1\n")
    (tmp_path / "myignore").write_text("ignored-2\n")
    (tmp_path / "Kubefile").write_text(KUBEFILE)
    return ctx


def _flags(case: str, tmp_path: Path) -> list[str]:
    return [f.replace("{ignorefile}", str(tmp_path / "myignore")) for f in CASES[case]]


def _env(image: Image) -> list[str]:
    return list(image.body.get("Env") or [])


def _annotations(image: Image) -> dict:
    found = dict(image.manifest.get("annotations") or {})
    for key in BASE_ANNOTATIONS:
        found.pop(key, None)
    return found


def assert_same(ours: Image, theirs: Image) -> None:
    for key in ("Cmd", "Entrypoint", "WorkingDir"):
        assert ours.body.get(key) == theirs.body.get(key), key
    assert _env(ours) == _env(theirs)
    assert ours.labels() == theirs.labels()
    assert ours.config["created"] == theirs.config["created"]
    assert _annotations(ours) == _annotations(theirs)
    assert ours.media_types() == theirs.media_types()
    assert ours.files() == theirs.files()  # names and modification times


@pytest.mark.parametrize("case", list(CASES))
def test_flag_matches_buildah(case: str, tmp_path: Path, context: Path, capsys, monkeypatch):
    flags = _flags(case, tmp_path)
    monkeypatch.setenv("HOSTV", "from-the-host")
    buildah = Buildah(tmp_path / "buildah")
    timestamp = [] if "--timestamp" in flags else ["--timestamp", "0"]  # sealpy's default
    theirs = buildah.build(context, tmp_path / "Kubefile", *flags, *timestamp, env=dict(os.environ))
    store = tmp_path / "store"
    code, out, err = sealpy_build(capsys, context, tmp_path / "Kubefile", store, *flags)
    assert code == 0, err
    ours = sealpy_image(store)
    assert_same(ours, theirs)
    # -q: the image ID only, as buildah prints it: the config digest.
    assert out == ours.manifest["config"]["digest"].removeprefix("sha256:") + "\n"


def test_the_facts_each_flag_is_about(tmp_path: Path, context: Path, capsys, monkeypatch):
    """What the comparison above relies on, pinned so that it cannot pass vacuously."""
    monkeypatch.setenv("HOSTV", "from-the-host")
    store = tmp_path / "store"
    kubefile = tmp_path / "Kubefile"

    def build(case: str) -> Image:
        code, _, err = sealpy_build(capsys, context, kubefile, store, *_flags(case, tmp_path))
        assert code == 0, err
        return sealpy_image(store)

    env = _env(build("env"))
    # the build file's first, then the flags in order (a re-set variable moves to the end)
    assert env[1:] == ["B=k", "C=2", "D=e2", "A=2", "E=e2", "F=2", "HOSTV=from-the-host", "G=NOPE"]
    assert build("label").labels() == {"l": "flag2", "m": "", "n": "", "x": "1"}
    assert _annotations(build("annotation")) == {"an": "2", "bn": ""}
    assert _env(build("target base"))[1:] == ["A=1", "B=k"]
    docker = build("format docker")
    assert docker.media_types() == {
        "manifest": media.DOCKER_MANIFEST,
        "config": media.DOCKER_CONFIG,
        "layers": [media.DOCKER_LAYER_GZIP],
    }
    assert docker.config["container_config"]["Env"] == docker.body["Env"]
    stamped = build("timestamp")
    assert stamped.config["created"] == "1970-01-01T00:01:40Z"
    assert set(stamped.files().values()) == {100}
    squashed = build("squash")
    assert len(squashed.manifest["layers"]) == 1
    assert set(squashed.files()) == {"a", "b", "ignored-2"}
    assert (
        "ignored-1" in build("ignorefile").files()
        and "ignored-2" not in build("ignorefile").files()
    )


def test_buildah_builder_passes_the_flags_on(tmp_path: Path, context: Path, capsys):
    flags = _flags("combined", tmp_path)
    theirs = Buildah(tmp_path / "buildah").build(context, tmp_path / "Kubefile", *flags)
    store = tmp_path / "store"
    code, out, err = sealpy_build(
        capsys, context, tmp_path / "Kubefile", store, "--builder", "buildah", *flags
    )
    assert code == 0, err
    ours = sealpy_image(store)
    assert_same(ours, theirs)
    assert out == ours.manifest["config"]["digest"].removeprefix("sha256:") + "\n"


@pytest.mark.parametrize("builder", ["native", "buildah"])
def test_iidfile_holds_the_image_id_as_buildah_writes_it(
    tmp_path: Path, context: Path, capsys, builder: str
):
    buildah = Buildah(tmp_path / "buildah")
    theirs_file, ours_file = tmp_path / "theirs.iid", tmp_path / "ours.iid"
    done = buildah.bud(
        context, tmp_path / "Kubefile", "--iidfile", str(theirs_file), "--timestamp", "0"
    )
    assert done.returncode == 0 and done.stdout == ""  # the ID goes to the file only
    store = tmp_path / "store"
    code, out, err = sealpy_build(
        capsys, context, tmp_path / "Kubefile", store, "--builder", builder,
        "--iidfile", str(ours_file),
    )  # fmt: skip
    assert code == 0 and out == "", err
    pattern = re.compile(r"sha256:[0-9a-f]{64}")  # no newline
    assert pattern.fullmatch(theirs_file.read_text())
    assert ours_file.read_text() == sealpy_image(store).manifest["config"]["digest"]
    if builder == "buildah":  # the very ID buildah gives the same build
        assert ours_file.read_text() == theirs_file.read_text()


def test_quiet_prints_only_the_image_id_and_nothing_on_stderr(tmp_path: Path, capsys):
    context = tmp_path / "ctx"
    (context / "manifests").mkdir(parents=True)
    (context / "Kubefile").write_text("FROM scratch\nCOPY manifests /m\n")
    (context / "manifests" / "a.yaml").write_text("kind: ConfigMap\n")
    code, out, err = cli(
        capsys, "build", "-q", "-t", "x", str(context), "--root", str(tmp_path / "s")
    )
    assert code == 0 and err == ""
    assert re.fullmatch(r"[0-9a-f]{64}\n", out)
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    manifest = json.loads(
        (tmp_path / "s" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    assert out.strip() == manifest["config"]["digest"][7:]
    code, out, _ = cli(
        capsys, "build", "-q", "--no-save-image", "--platform", "linux/amd64,linux/arm64",
        str(context), "--root", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 0 and re.fullmatch(r"([0-9a-f]{64}\n){2}", out)  # one per platform


@pytest.mark.parametrize("flag", sorted(BUILDAH_BUD_FLAGS - {"help"}))
def test_every_buildah_flag_is_either_supported_or_named_as_unsupported(
    tmp_path: Path, capsys, flag: str
):
    code, out, err = cli(capsys, "build", f"--{flag}=x", str(tmp_path))
    if f"--{flag}" in err and "does not support" in err:
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"error: --{flag} is a `buildah bud` flag that sealpy build ")
    else:  # a flag sealpy has: whatever happens, it is not "no such option"
        assert "No such option" not in err


@pytest.mark.parametrize("short", sorted(BUILDAH_SHORT_FLAGS))
def test_short_buildah_flags_are_named_too(tmp_path: Path, capsys, short: str):
    code, _, err = cli(capsys, "build", short, "x", str(tmp_path))
    assert (
        code == 2
        and err == f"error: {short} is a `buildah bud` flag that sealpy build does not support\n"
    )


def test_a_typo_keeps_the_generic_message(tmp_path: Path, capsys):
    code, _, err = cli(capsys, "build", "--lables", "a=b", str(tmp_path))
    assert code == 2 and err.startswith("error: No such option: --lables")


def test_a_docker_format_image_is_pushed_as_docker_schema2(
    tmp_path: Path, context: Path, capsys, plain_registry
):
    store = tmp_path / "store"
    name = f"{plain_registry.host}/flags/docker:1"
    code, out, err = sealpy_build(
        capsys, context, tmp_path / "Kubefile", store, "--format", "docker", tag=name
    )
    assert code == 0, err
    assert cli(capsys, "push", name, "--root", str(store))[0] == 0
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == media.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == media.DOCKER_CONFIG
    assert out.strip() == manifest["config"]["digest"].removeprefix("sha256:")


def test_readme_lists_every_buildah_flag_sealpy_build_takes():
    import typer

    from sealpy.core.cli import app

    command = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("Build flags (on `build`)") : readme.index("Any other `buildah")]
    taken = [
        opt
        for param in command.params
        for opt in getattr(param, "opts", [])
        if opt.startswith("--") and opt[2:] in BUILDAH_BUD_FLAGS
    ]
    assert len(taken) >= 15
    for opt in taken:
        assert f"`{opt}" in section or f"/{opt}" in section, opt
