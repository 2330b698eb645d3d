"""Credentials never leak: every command that touches a registry runs with secrets
(--creds, SEALPY_CREDS, an authfile), with and without --debug, succeeding and failing;
everything printed, and the command line of every process sealpy starts, is searched."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sealpy.core.auth import Credential
from sealpy.core.containers import write_authfile
from sealpy.core.testing.conformance import Catalog
from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER

WRONG_SECRET = "wr0ng-S3CRET-never-print"
HELPER_SECRET = "h3lper-S3CRET-never-print"  # what a credential helper hands out (refused)
TOOLS = ("skopeo", "docker-registry", "buildah")


def recording_path(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose skopeo, docker-registry and buildah record their arguments and
    environment, then exec the real program."""
    bindir, record = tmp_path / "shims", tmp_path / "argv.log"
    bindir.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        (bindir / tool).write_text(
            f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {record}\nenv >> {record}.env\nexec {real} "$@"\n'
        )
        (bindir / tool).chmod(0o755)
    # Credential helpers: one hands out the fixtures' password, one a secret of its own.
    for name, secret in (("sealpy-good", TEST_PASSWORD), ("sealpy-bad", HELPER_SECRET)):
        helper = bindir / f"docker-credential-{name}"
        helper.write_text(
            "#!/bin/sh\ncat >/dev/null\n"
            f'printf \'{{"Username": "{TEST_USER}", "Secret": "{secret}"}}\'\n'
        )
        helper.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}", record


def helper_authfile(path: Path, hosts: list[str], helper: str) -> Path:
    path.write_text(json.dumps({"credHelpers": {host: helper for host in hosts}}))
    return path


class DescendantWatcher:
    """Polls /proc for processes below ``pid`` and keeps their command lines."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cmdlines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            family = {self.pid}
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid in family and int(entry.name) != self.pid:
                        # (sealpy's own command line is the user's: --creds is their choice)
                        family.add(int(entry.name))
                        self.cmdlines.add(
                            (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                        )
                except (OSError, ValueError, IndexError):
                    continue
            time.sleep(0.005)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        return self.cmdlines


def sealpy(args: list[str], env: dict[str, str]) -> tuple[int, str, set[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sealpy.core", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = DescendantWatcher(process.pid)
    out, err = process.communicate(timeout=300)
    return process.returncode, out + err, watcher.stop()


def secrets_in(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


@pytest.fixture
def context(tmp_path: Path, conformance_catalog: Catalog) -> Path:
    c = conformance_catalog
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "images" / "shim").mkdir(parents=True)
    (ctx / "images" / "shim" / "private.txt").write_text(f"{c.ref(c.htpasswd, 'private/app')}\n")
    (ctx / "Kubefile").write_text(
        f"FROM {c.ref(c.token, 'private/app')}\nCOPY registry ./registry\n"
    )
    return ctx


def test_no_secret_in_any_output_or_child_command_line(
    conformance_catalog: Catalog, context, tmp_path
):
    c = conformance_catalog
    path, record = recording_path(tmp_path)
    authfile = tmp_path / "auth.json"
    write_authfile(
        authfile, {c.htpasswd.host: c.htpasswd.credential, c.token.host: c.token.credential}
    )
    wrong = tmp_path / "wrong.json"
    write_authfile(
        wrong,
        {
            c.htpasswd.host: Credential(TEST_USER, WRONG_SECRET),
            c.token.host: Credential(TEST_USER, WRONG_SECRET),
        },
    )
    base = {k: v for k, v in os.environ.items() if k not in ("SEALPY_CREDS", "REGISTRY_AUTH_FILE")}
    base["PATH"] = path
    store = ["--root", str(tmp_path / "store")]
    private_ref = str(c.ref(c.htpasswd, "private/app"))
    runs = []
    for debug in ([], ["--debug"]):
        for strategy in ("proxy", "sync"):
            fresh = str(
                tmp_path / f"cache-{strategy}-{len(debug)}"
            )  # nothing cached yet: real copies
            runs.append(
                (
                    0,
                    [
                        *debug,
                        "registry",
                        "save",
                        "--strategy",
                        strategy,
                        "--authfile",
                        str(authfile),
                        "--platform",
                        "linux/amd64",
                        "--registry-dir",
                        fresh,
                        str(context),
                    ],
                    base,
                )
            )
            runs.append(
                (
                    1,
                    [
                        *debug,
                        "registry",
                        "save",
                        "--strategy",
                        strategy,
                        "--authfile",
                        str(wrong),
                        str(context),
                    ],
                    base,
                )
            )
        runs += [
            (
                0,
                [*debug, "registry", "save", "--registry-dir", str(tmp_path / "r2"), str(context)],
                {**base, "SEALPY_CREDS": f"{TEST_USER}:{TEST_PASSWORD}"},
            ),
            (
                0,
                [
                    *debug,
                    "build",
                    "-t",
                    "leak/test",
                    "--authfile",
                    str(authfile),
                    *store,
                    str(context),
                ],
                base,
            ),
            (
                1,
                [*debug, "build", "-t", "leak/bad", "--authfile", str(wrong), *store, str(context)],
                base,
            ),
            (
                0,
                [
                    *debug,
                    "build",
                    "--builder",
                    "buildah",
                    "--no-save-image",
                    "-t",
                    "leak/buildah",
                    "--authfile",
                    str(authfile),
                    *store,
                    str(context),
                ],
                base,
            ),
            (0, [*debug, "pull", "--authfile", str(authfile), *store, private_ref], base),
            (
                1,
                [*debug, "pull", "--creds", f"{TEST_USER}:{WRONG_SECRET}", *store, private_ref],
                base,
            ),
            (
                0,
                [
                    *debug,
                    "push",
                    "--authfile",
                    str(authfile),
                    *store,
                    "localhost/leak/test:latest",
                    f"{c.htpasswd.host}/private/pushed:1",
                ],
                base,
            ),
            (
                1,
                [
                    *debug,
                    "push",
                    "--authfile",
                    str(wrong),
                    *store,
                    "localhost/leak/test:latest",
                    f"{c.htpasswd.host}/private/pushed:2",
                ],
                base,
            ),
            (0, [*debug, "scan", "--json", str(context)], base),
        ]
    # SEALPY_CREDS and credential helpers, with every child: skopeo and docker-registry
    # (sync), buildah; none of them may see the secret in its environment or arguments.
    hosts = [c.htpasswd.host, c.token.host]
    good = str(helper_authfile(tmp_path / "helper-good.json", hosts, "sealpy-good"))
    bad = str(helper_authfile(tmp_path / "helper-bad.json", hosts, "sealpy-bad"))
    env_creds = {**base, "SEALPY_CREDS": f"{TEST_USER}:{TEST_PASSWORD}"}
    sync_save = ["--debug", "registry", "save", "--strategy", "sync", "--platform", "linux/amd64"]
    buildah = ["--debug", "build", "--builder", "buildah", "--no-save-image", *store]
    runs += [
        (0, [*sync_save, "--registry-dir", str(tmp_path / "r3"), str(context)], env_creds),
        (0, [*buildah, "-t", "leak/env", str(context)], env_creds),
        (
            0,
            [*sync_save, "--authfile", good, "--registry-dir", str(tmp_path / "r4"), str(context)],
            base,
        ),
        (
            1,
            [*sync_save, "--authfile", bad, "--registry-dir", str(tmp_path / "r5"), str(context)],
            base,
        ),
        (0, [*buildah, "--authfile", good, "-t", "leak/helper", str(context)], base),
        (1, [*buildah, "--authfile", bad, "-t", "leak/helper-bad", str(context)], base),
    ]
    secrets = [
        TEST_PASSWORD,
        WRONG_SECRET,
        HELPER_SECRET,
        base64.b64encode(f"{TEST_USER}:{HELPER_SECRET}".encode()).decode(),
        base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode(),
        base64.b64encode(f"{TEST_USER}:{WRONG_SECRET}".encode()).decode(),
    ]
    children: set[str] = set()
    for expected, args, env in runs:
        code, output, cmdlines = sealpy(args, env)
        assert (code == 0) == (expected == 0), (
            f"sealpy {' '.join(args)} exited {code}: {output[-600:]}"
        )
        # Issued tokens are secrets too, once they exist.
        leaked = secrets_in(output, secrets + c.token.token_server.issued)
        assert leaked == [], f"sealpy {' '.join(args)} printed a secret"
        assert not secrets_in("\n".join(cmdlines), secrets + c.token.token_server.issued), cmdlines
        children |= cmdlines
    recorded = record.read_text()
    assert "skopeo" in recorded and "docker-registry" in recorded and "buildah" in recorded
    assert not secrets_in(recorded, secrets + c.token.token_server.issued)
    child_env = Path(f"{record}.env").read_text()
    assert not secrets_in(child_env, secrets), "a child's environment holds a secret"
    assert "SEALPY_CREDS" not in child_env
    assert any("skopeo" in line for line in children), "the watcher saw the children"


def test_tokens_are_requested_with_the_narrowest_scope(conformance_catalog: Catalog, tmp_path):
    from sealpy.core import pipeline
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.model import CacheOptions, ImageSet

    c = conformance_catalog
    tokens = c.token.token_server
    before = len(tokens.requests)
    pipeline.cache(
        ImageSet.of([c.ref(c.token, "private/app")]),
        tmp_path / "r",
        strategy="proxy",
        options=CacheOptions(credentials=ConfiguredCredentials(creds=c.token.credential)),
    )
    scopes = {r.query.get("scope") for r in tokens.requests[before:]}
    assert scopes == {"repository:private/app:pull"}
