"""Credentials per registry: from ``--creds``, auth files and credential helpers.

Lookup order (as skopeo and podman do):

1. ``--creds USER:PASSWORD`` (or ``SEALPY_CREDS``): used for every registry that asks.
2. ``--authfile FILE`` if given — and then only that file; else ``REGISTRY_AUTH_FILE``,
   ``$XDG_RUNTIME_DIR/containers/auth.json``, ``~/.config/containers/auth.json``,
   ``~/.docker/config.json``, in that order, the first file with an entry winning.
3. In each file: ``credHelpers[registry]``, an ``auths`` entry (base64 ``auth`` or
   ``identitytoken``; the most specific ``registry/namespace`` key wins), then ``credsStore``.

``docker.io``, ``index.docker.io`` and ``registry-1.docker.io`` are one registry.
A :class:`Credential` never prints its secret: ``repr`` and ``str`` mask it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sealpy.core.errors import CredentialsError, UsageError
from sealpy.core.process import child_environment
from sealpy.core.reference import DEFAULT_REGISTRY, DOCKER_HUB_ALIASES

CREDS_ENV = "SEALPY_CREDS"
AUTHFILE_ENV = "REGISTRY_AUTH_FILE"
# What Docker's credential helpers are asked for, for Docker Hub.
_DOCKER_HUB_HELPER_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    """A username and password, or an OAuth2 identity (refresh) token."""

    username: str = field(repr=False)
    password: str = field(repr=False, default="")
    identity_token: str | None = field(repr=False, default=None)

    def __repr__(self) -> str:
        return "Credential(<redacted>)"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """Every secret string this credential holds (for redaction checks)."""
        return tuple(s for s in (self.password, self.identity_token) if s)

    @classmethod
    def parse(cls, text: str) -> Credential:
        """Parse ``USER:PASSWORD`` as skopeo's ``--creds`` does (the password may hold ``:``)."""
        username, sep, password = text.partition(":")
        if not sep or not username:
            raise UsageError("invalid --creds: expected USERNAME:PASSWORD")
        return cls(username, password)


class CredentialProvider(Protocol):
    """Gives the credential to use for a registry host (and repository), or ``None``."""

    def credentials_for(self, registry: str, repository: str = "") -> Credential | None: ...


class AnonymousCredentials:
    """No credentials anywhere."""

    def credentials_for(self, registry: str, repository: str = "") -> Credential | None:
        return None


def normalize_registry(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``host:5000/ns/`` → ``host:5000/ns``."""
    key = key.strip()
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    key = key.rstrip("/")
    host, _, path = key.partition("/")
    if path in ("v1", "v2"):
        path = ""
    if host in DOCKER_HUB_ALIASES:
        host = DEFAULT_REGISTRY
    return f"{host}/{path}" if path else host


def _helper_server_url(registry: str) -> str:
    return _DOCKER_HUB_HELPER_KEY if registry == DEFAULT_REGISTRY else registry


def run_credential_helper(helper: str, registry: str) -> Credential | None:
    """Ask ``docker-credential-<helper> get`` for ``registry``; ``None`` if it has nothing."""
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise CredentialsError(
            f"credential helper docker-credential-{helper} (for {registry}) not found on PATH"
        )
    try:
        result = subprocess.run(
            [program, "get"],
            input=_helper_server_url(registry),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=child_environment(),  # a helper has no business seeing SEALPY_CREDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(
            f"credential helper docker-credential-{helper} failed for {registry}: "
            f"{type(exc).__name__}"
        ) from None
    if result.returncode != 0:
        said = (result.stdout.strip() or result.stderr.strip()).splitlines()
        first = said[0][:200] if said else ""
        if "credentials not found" in first.lower():
            return None
        raise CredentialsError(
            f"credential helper docker-credential-{helper} failed for {registry} "
            f"(exit {result.returncode}){': ' + first if first else ''}"
        )
    try:
        data = json.loads(result.stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(
            f"credential helper docker-credential-{helper} gave an unreadable answer for {registry}"
        ) from None
    if username == "<token>":
        return Credential("<token>", "", identity_token=secret)
    return Credential(username, secret)


@dataclass(frozen=True)
class AuthFile:
    """One parsed auth file (containers auth.json or Docker config.json)."""

    path: Path
    auths: Mapping[str, Credential]
    helpers: Mapping[str, str]
    store: str | None

    @classmethod
    def load(cls, path: Path) -> AuthFile:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise CredentialsError(f"authfile {path} does not exist") from None
        except OSError as exc:
            raise CredentialsError(f"authfile {path} is unreadable: {exc.strerror}") from None
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise CredentialsError(
                f"authfile {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})"
            ) from None
        if not isinstance(data, dict):
            raise CredentialsError(f"authfile {path} is not a JSON object")
        auths: dict[str, Credential] = {}
        for key, entry in (data.get("auths") or {}).items():
            if not isinstance(entry, dict):
                raise CredentialsError(f"authfile {path}: entry for {key} is not an object")
            credential = _entry_credential(path, key, entry)
            if credential is not None:
                auths[normalize_registry(key)] = credential
        helpers = {
            normalize_registry(k): str(v) for k, v in (data.get("credHelpers") or {}).items()
        }
        store = data.get("credsStore") or None
        return cls(path, auths, helpers, str(store) if store else None)

    def lookup(self, registry: str, repository: str) -> Credential | None:
        if registry in self.helpers:
            return run_credential_helper(self.helpers[registry], registry)
        # Most specific key first: registry/ns/repo, registry/ns, registry.
        parts = repository.split("/") if repository else []
        for n in range(len(parts), -1, -1):
            key = "/".join([registry, *parts[:n]])
            if key in self.auths:
                return self.auths[key]
        if self.store:
            return run_credential_helper(self.store, registry)
        return None


def _entry_credential(path: Path, key: str, entry: Mapping) -> Credential | None:
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    username = password = ""
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(
                f"authfile {path}: `auth` for {key} is not valid base64"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"authfile {path}: `auth` for {key} is not user:password")
    if token:
        return Credential(username or "<token>", "", identity_token=str(token))
    if auth:
        return Credential(username, password)
    return None


def default_authfile_paths(environ: Mapping[str, str]) -> list[Path]:
    """The auth files looked at when ``--authfile`` is not given, in order."""
    paths: list[Path] = []
    if environ.get(AUTHFILE_ENV):
        paths.append(Path(environ[AUTHFILE_ENV]))
    if environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path(environ.get("HOME") or Path.home())
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    paths.append(config_home / "containers" / "auth.json")
    docker_config = environ.get("DOCKER_CONFIG")
    paths.append(
        Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    )
    return paths


class ConfiguredCredentials:
    """Credentials from ``--creds``, auth files and credential helpers (see module doc).

    Files are read on first use; answers are memoised per registry and repository so a
    credential helper runs once per registry, not once per request.
    """

    def __init__(
        self,
        *,
        creds: Credential | None = None,
        authfile: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._creds = creds
        if authfile is not None:
            self._paths: Sequence[Path] = [authfile]
            self._required = True
        else:
            self._paths = default_authfile_paths(environ)
            self._required = False
        self._files: list[AuthFile] | None = None
        self._answers: dict[tuple[str, str], Credential | None] = {}
        self._lock = threading.Lock()

    def _load(self) -> list[AuthFile]:
        if self._files is None:
            files = []
            for path in self._paths:
                if self._required or path.exists():
                    files.append(AuthFile.load(path))
            self._files = files
        return self._files

    def check(self) -> None:
        """Read the auth files now, so a bad file fails before any work starts."""
        with self._lock:
            self._load()

    def credentials_for(self, registry: str, repository: str = "") -> Credential | None:
        if self._creds is not None:
            return self._creds
        registry = normalize_registry(registry)
        key = (registry, repository)
        with self._lock:
            if key not in self._answers:
                answer = None
                for auth_file in self._load():
                    answer = auth_file.lookup(registry, repository)
                    if answer is not None:
                        break
                self._answers[key] = answer
            return self._answers[key]
