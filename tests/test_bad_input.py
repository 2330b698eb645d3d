"""Bad input, as a table: each case is one clear line on stderr, a non-zero exit, no
traceback, and nothing half-written. (Build-file cases live with the builder's tests.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sealpy.core.cli import main
from sealpy.core.testing.conformance import Catalog
from sealpy.core.testing.registry import RegistryServer, self_signed_certificate
from sealpy.core.transport.distribution import DistributionLayout


def make_context(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"Kubefile": "FROM scratch\nCOPY registry ./registry\n", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert "Traceback" not in captured.err + captured.out
    assert lines[-1] == errors[0], "the error is the last thing said"
    return code, errors[0]


BROKEN_CHART = {
    "charts/bad/Chart.yaml": "apiVersion: v2\nname: bad\nversion: 0.1.0\n",
    "charts/bad/templates/x.yaml": "kind: Pod\nimage: {{ .Values.nope.missing }}\n",
}

SAVE = ["registry", "save"]
BUILD = ["build", "--root", "{tmp}/store"]
SCAN = ["scan"]
UNREACHABLE = ["--images", "127.0.0.1:1/app:1", "--retry-times", "0"]

# name: (arguments, context files, message[, command (default registry save)]). Cases that
# pass UNREACHABLE must fail before the cache stage: otherwise the error is "cannot reach".
CASES = {
    "missing context": ([], {"__nocontext__": ""}, "does not exist"),
    "no build file (scan)": ([], {"__nokubefile__": ""}, "no build file", SCAN),
    "no build file (build)": (UNREACHABLE, {"__nokubefile__": ""}, "no build file", BUILD),
    "-f names a directory": (["-f", "{ctx}/sub"], {"sub/x": ""}, "is a directory", SCAN),
    "-f names a missing file": (["-f", "Kubefile.nope"], {}, "does not exist", SCAN),
    "--registry-dir is a file": (
        ["--registry-dir", "{ctx}/afile", *UNREACHABLE],
        {"afile": ""},
        "--registry-dir",
    ),
    "--registry-dir under a file": (
        ["--registry-dir", "{ctx}/afile/registry", *UNREACHABLE],
        {"afile": ""},
        "afile is not a directory",
    ),
    "<context>/registry is a file": (UNREACHABLE, {"registry": ""}, "registry directory"),
    "build --root is a file": (
        ["--root", "{ctx}/afile", *UNREACHABLE],
        {"afile": "", "Kubefile": "FROM scratch\n"},
        "--root",
        ["build"],
    ),
    "malformed instruction (build)": (
        UNREACHABLE,
        {"Kubefile": "FROM scratch\nFROBNICATE registry\n"},
        "Kubefile:2: unknown instruction FROBNICATE",
        BUILD,
    ),
    "RUN without buildah (build)": (
        UNREACHABLE,
        {"Kubefile": "FROM scratch\nRUN true\nCOPY registry ./registry\n"},
        "Kubefile:2: RUN: RUN needs a container",
        BUILD,
    ),
    "COPY of a missing path (build)": (
        UNREACHABLE,
        {"Kubefile": "FROM scratch\nCOPY registry ./registry\nCOPY nothere /x\n"},
        "Kubefile:3: COPY: nothere: no such file",
        BUILD,
    ),
    "COPY escaping the context (build)": (
        UNREACHABLE,
        {"Kubefile": "FROM scratch\nCOPY ../outside /x\n"},
        "Kubefile:2: COPY: ../outside: outside the build context",
        BUILD,
    ),
    "unknown strategy without --save-image (build)": (
        ["--save-image=false", "--strategy", "nope", *UNREACHABLE],
        {},
        "unknown strategy 'nope'",
        BUILD,
    ),
    "unknown strategy": (["--strategy", "fast"], {}, "unknown strategy 'fast'"),
    "invalid --images reference": (["--images", "Bad Name:1"], {}, "invalid image reference"),
    "invalid reference in a manifest, --strict": (
        ["--strict"],
        {"manifests/a.yaml": "image: library/-bad-:1\n"},
        "scan warning",
    ),
    "YAML that does not parse, --strict": (
        ["--strict"],
        {"manifests/a.yaml": "a: [unclosed\n  image: nginx\n"},
        "scan warning",
    ),
    "a chart that does not render": ([], BROKEN_CHART, "charts/bad"),
    "wrong tar.txt line": (
        [],
        {"images/skopeo/tar.txt": "tarball:x.tar@app:1\n"},
        "images/skopeo/tar.txt:1",
    ),
    "missing archive": (
        [],
        {"images/skopeo/tar.txt": "docker-archive:gone.tar@app:1\n"},
        "gone.tar",
    ),
    "malformed --platform": (["--platform", "linux/amd64/v8/extra"], {}, "invalid platform"),
    "malformed --creds": (["--creds", "only-user"], {}, "invalid --creds"),
    "invalid authfile": (
        ["--authfile", "{ctx}/auth.json"],
        {"auth.json": "{nope"},
        "not valid JSON",
    ),
    "unreadable authfile": (["--authfile", "{ctx}/dir.json"], {"dir.json/x": ""}, "unreadable"),
    "bad --registry-mirror": (["--registry-mirror", "docker.io"], {}, "invalid --registry-mirror"),
    "unreachable registry": (
        ["--images", "127.0.0.1:1/app:1", "--retry-times", "1"],
        {},
        "cannot reach 127.0.0.1:1: connection refused (gave up after 2 attempts)",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_table(case, tmp_path, capsys):
    extra, files, message, *command = CASES[case]
    ctx = tmp_path / "ctx"
    if "__nocontext__" not in files:
        ctx.mkdir()
        make_context(ctx, {k: v for k, v in files.items() if not k.startswith("__")})
        if "__nokubefile__" in files:
            (ctx / "Kubefile").unlink()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    words = [*(command[0] if command else SAVE), *extra]
    args = [a.replace("{ctx}", str(ctx)).replace("{tmp}", str(tmp_path)) for a in words]
    args.append(str(ctx))
    code, error = run(capsys, args)
    assert code != 0
    assert message in error
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert all(not (tmp_path / p).is_file() for p in new), f"half-written files: {new}"


def test_missing_credential_helper(conformance_catalog: Catalog, tmp_path, capsys, monkeypatch):
    c = conformance_catalog
    ctx = make_context(tmp_path / "ctx", {})
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credHelpers": {c.htpasswd.host: "nowhere"}}))
    monkeypatch.setenv("PATH", os.environ["PATH"])
    code, error = run(
        capsys,
        [
            "registry",
            "save",
            "--authfile",
            str(authfile),
            "--images",
            str(c.ref(c.htpasswd, "private/app")),
            str(ctx),
        ],
    )
    assert code != 0
    assert "docker-credential-nowhere" in error and "not found" in error
    assert str(c.ref(c.htpasswd, "private/app")) in error


def test_failing_credential_helper(conformance_catalog: Catalog, tmp_path, capsys, monkeypatch):
    c = conformance_catalog
    ctx = make_context(tmp_path / "ctx", {})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-broken"
    helper.write_text("#!/bin/sh\necho 'the keyring is locked' >&2\nexit 4\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    authfile = tmp_path / "config.json"
    authfile.write_text(json.dumps({"credsStore": "broken"}))
    code, error = run(
        capsys,
        [
            "registry",
            "save",
            "--authfile",
            str(authfile),
            "--images",
            str(c.ref(c.htpasswd, "private/app")),
            str(ctx),
        ],
    )
    assert code != 0
    assert "docker-credential-broken failed" in error and "the keyring is locked" in error


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, image_factory):
    work = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(work / "cert")
    with RegistryServer(work / "root", workdir=work / "work", tls=(cert, key)) as server:
        image = image_factory.image("tls/app", [100])
        import requests

        from sealpy.core.transport.remote import RegistryClient

        with RegistryClient(tls_verify=False) as client:
            image_factory.push(image, server.host, "tls/app", "1", client=client)
        assert requests.get(f"https://{server.host}/v2/", verify=str(cert)).status_code == 200
        yield server, image


def test_tls_failure_with_a_self_signed_certificate(tls_registry, tmp_path, capsys):
    server, image = tls_registry
    ctx = make_context(tmp_path / "ctx", {})
    code, error = run(
        capsys, ["registry", "save", "--images", f"{server.host}/tls/app:1", str(ctx)]
    )
    assert code != 0
    assert f"TLS verification failed for {server.host}" in error and "--tls-verify=false" in error
    assert not DistributionLayout(ctx / "registry").exists() or not list(
        (ctx / "registry").rglob("data")
    )
    # Turning verification off, explicitly, works.
    assert (
        main(
            [
                "registry",
                "save",
                "--tls-verify=false",
                "--images",
                f"{server.host}/tls/app:1",
                str(ctx),
            ]
        )
        == 0
    )
    assert DistributionLayout(ctx / "registry").resolve("tls/app", "1") == image.digest


@pytest.mark.parametrize("command", [["images"], ["pull", "127.0.0.1:1/app:1"], ["rmi", "x"]])
def test_store_commands_refuse_a_file_as_root(command, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    code, error = run(capsys, [*command, "--root", str(afile)])
    assert code == 2
    assert "--root" in error and "not a directory" in error
    assert afile.read_text() == ""


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_a_registry_marked_insecure_in_registries_conf_skips_verification(
    strategy, tls_registry, tmp_path, capsys, monkeypatch
):
    """Turning verification off per registry: registries.conf `insecure = true` for that
    registry only (the self-signed one); everything else keeps verification."""
    server, image = tls_registry
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{server.host}"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    ctx = make_context(tmp_path / "ctx", {})
    ref = f"{server.host}/tls/app:1"
    assert main(["registry", "save", "--strategy", strategy, "--images", ref, str(ctx)]) == 0
    assert DistributionLayout(ctx / "registry").resolve("tls/app", "1") == image.digest
