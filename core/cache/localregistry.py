"""A stock distribution registry process (``docker-registry serve``) on 127.0.0.1.

Used by the ``sync`` strategy (storage root = ``<context>/registry``) and by the test
kit's fixtures. The config follows what works on Debian's distribution v2.8: filesystem
storage, loopback only, upload purging off (it would delete in-progress uploads of
other tools), deletion off (nothing may delete through it during a run), access log off.
The process gets a parent-death signal, so it never outlives sealpy — start it from the
thread that will stop it (normally the main thread).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import requests
from urllib3.exceptions import InsecureRequestWarning

from sealpy.core.errors import SealpyError
from sealpy.core.process import child_environment, popen_tied, stop
from sealpy.core.transport.distribution import DistributionLayout

REGISTRY_BINARY = "docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INSTANCE_HEADER = "X-Sealpy-Instance"


def registry_config(
    root: Path,
    port: int,
    *,
    auth: dict | None = None,
    tls: tuple[Path, Path] | None = None,
    instance: str = "",
    proxy_remote: str | None = None,
) -> dict:
    config: dict = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(Path(root).absolute())},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if instance:  # sent with every answer: tells this registry from whatever else is there
        config["http"]["headers"] = {INSTANCE_HEADER: [instance]}
    if auth:
        config["auth"] = auth
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if proxy_remote:  # a pull-through cache of that registry (read-only to clients)
        config["proxy"] = {"remoteurl": proxy_remote}
    return config


def registry_environment() -> dict[str, str]:
    """The registry's environment: no sealpy secret, and no ``REGISTRY_*`` variable —
    distribution reads those as overrides of its configuration, so a user's
    ``REGISTRY_AUTH_FILE`` (containers' auth file) stops it, and ``REGISTRY_HTTP_ADDR``
    or ``REGISTRY_STORAGE_DELETE_ENABLED`` would undo what the generated config ensures."""
    return {k: v for k, v in child_environment().items() if not k.startswith("REGISTRY_")}


def wait_for_http(
    url: str, process: subprocess.Popen | None, *, timeout: float = 15.0
) -> requests.Response:
    """Wait until ``url`` gives any HTTP answer (a 401 counts: auth is configured) and
    return it. Proxy variables are ignored: the registry is on loopback, and a proxy that
    does not know it would keep us waiting for an answer that never comes."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        session.trust_env = False  # no http_proxy, no netrc: straight to 127.0.0.1
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"exited with status {process.returncode}")
            try:
                with warnings.catch_warnings():
                    # a test registry's self-signed certificate: only its headers matter
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                    response = session.get(url, timeout=1, verify=False)
                response.close()
                return response
            except requests.RequestException:
                time.sleep(0.02)
    raise RuntimeError(f"no answer from {url} after {timeout:.0f} s")


class _PortTaken(RuntimeError):
    """Something else answered on the chosen port."""


class RegistryProcess:
    """``docker-registry serve`` with its storage at ``root``; its config and log live in
    ``workdir`` (keep that outside a build context). ``proxy_remote`` (a URL) makes it a
    pull-through cache of that registry (distribution's ``proxy.remoteurl``)."""

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        auth: dict | None = None,
        tls: tuple[Path, Path] | None = None,
        environment: Mapping[str, str] | None = None,
        proxy_remote: str | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.proxy_remote = proxy_remote
        self.workdir = Path(workdir)
        self.auth = auth
        self.tls = tls
        self.environment = dict(environment or {})  # added to registry_environment()
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, *, timeout: float = 15.0) -> RegistryProcess:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise SealpyError("docker-registry not found; apt-get install -y docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        # The registry follows symlinks: it writes only into a tree that has none. Checked
        # once here; a symlink planted while it runs is not covered (see README).
        DistributionLayout(self.root).refuse_symlinks()
        tail = ""
        for _ in range(5):  # the chosen port may be taken before the registry binds it
            self.port = free_port()
            try:
                self._start_on_port(binary, timeout)
                return self
            except _PortTaken as exc:
                self.stop()
                tail = str(exc)
            except RuntimeError as exc:
                self.stop()
                tail = f"{exc}; log: {self.log_tail()}"
                if "address already in use" not in tail:
                    break
        raise SealpyError(f"the local registry did not start: {tail}")

    def _start_on_port(self, binary: str, timeout: float) -> None:
        instance = secrets.token_hex(8)
        config = self.workdir / "config.yml"
        config.write_text(
            json.dumps(
                registry_config(
                    self.root,
                    self.port,
                    auth=self.auth,
                    tls=self.tls,
                    instance=instance,
                    proxy_remote=self.proxy_remote,
                )
            )
        )
        with open(self.log_path, "wb") as log:
            self.process = popen_tied(
                [binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**registry_environment(), **self.environment},
            )
        scheme = "https" if self.tls else "http"
        answer = wait_for_http(f"{scheme}://{self.host}/v2/", self.process, timeout=timeout)
        # Another server may hold the port (taken between free_port() and the registry's
        # bind): then the answer is not a registry's, or not this one's (ours exits soon).
        if "Docker-Distribution-Api-Version" not in answer.headers:
            raise _PortTaken(f"port {self.port} answered, but not as a registry")
        if answer.headers.get(INSTANCE_HEADER) != instance or self.process.poll() is not None:
            raise _PortTaken(f"another registry holds port {self.port}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, grace=5.0)
            self.process = None

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
