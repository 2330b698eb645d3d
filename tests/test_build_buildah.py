"""The optional buildah builder: RUN works, the result lands in the store (skopeo reads
it), and the build is reproducible with --timestamp."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _build_support import cli, manifest_of, member_names

from sealpy.core.build.buildah import BuildahBuilder, _may_copy_registry
from sealpy.core.build.parser import parse_text
from sealpy.core.testing.registry import require_tool, skopeo_manifest_digest


def shell_rootfs(root: Path) -> None:
    """/bin/sh (dash) and the libraries it needs, copied from this host: enough for RUN."""
    (root / "bin").mkdir(parents=True)
    shutil.copy(os.path.realpath("/bin/dash"), root / "bin" / "sh")
    ldd = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        for word in line.split():
            if word.startswith("/"):
                target = root / word.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(os.path.realpath(word), target)


def test_buildah_builder_runs_run_and_stores_a_reproducible_image(
    tmp_path: Path, capsys, plain_registry
):
    require_tool("buildah")
    assert BuildahBuilder.availability().available
    store = tmp_path / "store"
    base_ctx = tmp_path / "base"
    shell_rootfs(base_ctx / "rootfs")
    (base_ctx / "Kubefile").write_text("FROM scratch\nCOPY rootfs /\n")
    base = f"{plain_registry.host}/base/shell:1"
    assert (
        cli(capsys, "build", "--no-save-image", "-t", base, str(base_ctx), "--root", str(store))[0]
        == 0
    )
    assert cli(capsys, "push", base, "--root", str(store))[0] == 0

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a")
    (context / "Kubefile").write_text(
        f"FROM {base}\nRUN echo built-by-buildah > /hello.txt\nCOPY a.txt /a.txt\nLABEL x=y\n"
    )
    code, out, err = cli(
        capsys,
        "build",
        "--no-save-image",
        "--builder",
        "buildah",
        "-t",
        "bh",
        str(context),
        "--root",
        str(store),
    )
    assert code == 0, err
    assert "STEP 2/4: RUN echo built-by-buildah > /hello.txt" in out
    assert "sealpy-buildah" not in out
    digest = out.splitlines()[-1]
    assert out.splitlines()[-2] == "Successfully tagged localhost/bh:latest"
    assert skopeo_manifest_digest(f"oci:{store}:localhost/bh:latest") == digest
    layers = manifest_of(store, "localhost/bh:latest")["layers"]
    assert {"hello.txt", "a.txt"} <= set(member_names(store, layers[-1]["digest"]))
    code, out, _ = cli(
        capsys,
        "build",
        "--no-save-image",
        "--builder",
        "buildah",
        "-t",
        "bh2",
        str(context),
        "--root",
        str(store),
    )
    assert code == 0 and out.splitlines()[-1] == digest


def test_buildah_errors_are_one_line(tmp_path: Path, capsys):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY missing /x\n")
    code, _, err = cli(
        capsys,
        "build",
        "--no-save-image",
        "--builder",
        "buildah",
        "-t",
        "bad",
        str(context),
        "--root",
        str(tmp_path / "store"),
    )
    assert code == 1 and err.startswith("error: buildah bud failed (exit ") and err.count("\n") == 1
    assert "localhost/bad" not in (tmp_path / "store" / "index.json").read_text()


def test_buildah_sees_no_secret_and_only_our_authfile(
    tmp_path: Path, capsys, monkeypatch, conformance_catalog
):
    require_tool("buildah")
    c = conformance_catalog
    bindir, record = tmp_path / "bin", tmp_path / "record"
    bindir.mkdir()
    record.mkdir()
    (bindir / "buildah").write_text(
        f'#!/bin/sh\nenv > {record}/env.$$\necho "$*" > {record}/args.$$\n'
        f'exec {shutil.which("buildah")} "$@"\n'
    )
    (bindir / "buildah").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    credential = c.htpasswd.credential
    monkeypatch.setenv("SEALPY_CREDS", f"{credential.username}:{credential.password}")
    users_authfile = tmp_path / "users-auth.json"
    users_authfile.write_text('{"auths": {}}')
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(users_authfile))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text(f"FROM {c.ref(c.htpasswd, 'private/app')}\nLABEL a=b\n")
    code, _, err = cli(
        capsys,
        *("build", "--no-save-image", "--builder", "buildah", "-t", "env", str(context)),
        *("--root", str(tmp_path / "store")),
    )
    assert code == 0, err
    runs = {
        path.name.split(".")[1]: path.read_text()
        for path in record.iterdir()
        if path.name.startswith("args.")
    }
    bud = [pid for pid, args in runs.items() if " bud " in f" {args}"]
    assert bud and all("--authfile" in runs[pid] for pid in bud)
    for pid in runs:
        env = (record / f"env.{pid}").read_text()
        assert credential.password not in env and "SEALPY_CREDS" not in env
    for pid in bud:  # given our auth file, buildah must not read the user's instead
        assert "REGISTRY_AUTH_FILE" not in (record / f"env.{pid}").read_text()


@pytest.mark.parametrize(
    ("build_file", "copies"),
    [
        ("FROM scratch\nCOPY registry ./registry\n", True),
        ("FROM scratch\nCOPY ./registry/ /registry\n", True),
        ('FROM scratch\nADD ["registry", "/registry"]\n', True),
        ("FROM scratch\nCOPY . /\n", True),
        ("FROM scratch\nCOPY $DIR /x\n", True),  # buildah expands it: maybe
        ("FROM scratch\nCOPY manifests ./manifests\n", False),
        ("FROM scratch\nCOPY --from=other registry ./registry\n", False),
        ("FROM scratch\nRUN cp -r registry /registry\n", False),
    ],
)
def test_the_buildah_builder_knows_whether_registry_is_copied(build_file, copies):
    assert _may_copy_registry(parse_text(build_file, "Kubefile")) is copies
