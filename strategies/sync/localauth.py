"""Locking sync's local registry: per-run credentials, checked through token auth.

While ``sync`` runs, its local registry serves ``<context>/registry`` on loopback, and any
local process could push into it (an image that would then ship in the cluster image).
So the registry refuses every request without a token, and only this run can get one:
a token endpoint served by sealpy on loopback for the run's duration checks a random
password that exists only in memory (skopeo reads it from the in-memory auth file; the
``Copier`` holds it), and signs tokens with a key made for the run.

Token auth was chosen over htpasswd by its measured cost (``benchmarks/bench_local_auth.py``):
distribution checks an htpasswd bcrypt hash on every request, while a token costs one
signature check per request and one token per repository.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sealpy.core.auth import Credential
from sealpy.core.errors import SealpyError
from sealpy.core.hosts import HostPolicy, TransportOptions
from sealpy.core.model import RetryPolicy
from sealpy.core.transport.remote import RegistryClient

SERVICE = "sealpy-sync"
ISSUER = "sealpy-sync-run"
TOKEN_SECONDS = 3600  # the registry enforces it; a run's tokens outlive the run


LOCK_ENV = "SEALPY_SYNC_LOCAL_AUTH"  # token (default); htpasswd and none: for measuring


class RunLock:
    """How one sync run locks its local registry: :meth:`auth_config` for the registry,
    :attr:`credential` for the run's clients (skopeo's auth file, :meth:`client`)."""

    def __init__(self, private: Path) -> None:
        self.private = private
        self.credential = Credential(username="sealpy", password=secrets.token_urlsafe(32))

    def auth_config(self) -> dict | None:
        return None

    def start(self) -> RunLock:
        return self

    def stop(self) -> None:
        pass

    def client(self, retry: RetryPolicy) -> RegistryClient:
        """A registry client that presents the run's credential (to its local registry)."""
        credential = self.credential

        class RunCredential:
            def credentials_for(self, registry: str, repository: str = "") -> Credential:
                return credential

        hosts = HostPolicy(credentials=RunCredential())
        return TransportOptions(hosts=hosts, retry=retry).client(max_connections=2)


def run_lock(private: Path, environ: Mapping[str, str] | None = None) -> RunLock:
    """The lock for a run: token auth, unless ``SEALPY_SYNC_LOCAL_AUTH`` asks for
    ``htpasswd`` or ``none`` (to measure what the lock costs; never for real use)."""
    mode = (os.environ if environ is None else environ).get(LOCK_ENV, "token")
    if mode == "none":
        return RunLock(private)
    if mode == "htpasswd":
        return RunHtpasswd(private)
    if mode != "token":
        raise SealpyError(f"{LOCK_ENV}={mode}: expected token, htpasswd or none")
    return RunTokens(private)


class RunHtpasswd(RunLock):
    """htpasswd auth (bcrypt, cost 4): distribution checks the hash on every request."""

    def auth_config(self) -> dict:
        import bcrypt

        path = self.private / "htpasswd"
        hashed = bcrypt.hashpw(self.credential.password.encode(), bcrypt.gensalt(4)).decode()
        path.write_text(f"{self.credential.username}:{hashed}\n")
        os.chmod(path, 0o600)
        return {"htpasswd": {"realm": SERVICE, "path": str(path)}}


class RunTokens(RunLock):
    """The token endpoint of one sync run, on loopback for the run's duration."""

    def __init__(self, private: Path) -> None:
        super().__init__(private)
        self._server: ThreadingHTTPServer | None = None
        self._key, self._x5c = signing_key(private / "token-cert.pem")

    @property
    def realm(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def auth_config(self) -> dict:
        """The registry configuration's ``auth`` section."""
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.private / "token-cert.pem"),
            }
        }

    def start(self) -> RunTokens:
        tokens = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                status, body = tokens.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str, authorization: str) -> tuple[int, dict]:
        """A token for the run's own credential (any scope asked), else 401."""
        if not self._is_run(authorization):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "not this run"}]}
        scopes = parse_qs(urlsplit(path).query).get("scope", [])
        token = self.issue([s for scope in scopes for s in scope.split(" ") if s])
        return 200, {"token": token, "access_token": token, "expires_in": TOKEN_SECONDS}

    def _is_run(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.credential
        return hmac.compare_digest(user, expected.username or "") & hmac.compare_digest(
            password.encode(), (expected.password or "").encode()
        )

    def issue(self, scopes: list[str]) -> str:
        """An ES256 JWT granting ``scopes`` (``repository:NAME:ACTIONS``)."""
        import jwt

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and actions:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": self.credential.username,
            "aud": SERVICE,
            "exp": now + TOKEN_SECONDS,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})


def signing_key(  # type: ignore[no-untyped-def]
    cert_path: Path, *, name: str = "sealpy sync run", days: int = 1
):
    """A new P-256 token-signing key, and its self-signed certificate (valid ``days``)
    written to ``cert_path`` (the registry's trust root) and returned as the ``x5c``
    header value. The test kit's token server makes its keys here too."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
