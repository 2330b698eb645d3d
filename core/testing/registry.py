"""Real registries for tests and benchmarks: Debian's ``docker-registry`` (distribution
v2.8) on 127.0.0.1, without auth, with htpasswd, or with token auth served by a small
token server signing JWTs with a self-made certificate.

Nothing here is a mock: the registry is the stock binary, so what sealpy writes is
checked against the real thing. Missing binaries raise :class:`MissingTool` naming the
Debian package, so a test run that lacks them fails loudly instead of skipping.

Token auth needs the ``dev`` extra (pyjwt, cryptography); htpasswd needs bcrypt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sealpy.core.auth import Credential
from sealpy.core.cache.localregistry import RegistryProcess

PACKAGES = {"docker-registry": "docker-registry", "skopeo": "skopeo", "buildah": "buildah"}


# Seconds distribution's token check adds to ``exp`` and ``nbf`` (token.Leeway, v2.8).
REGISTRY_LEEWAY = 60


class MissingTool(RuntimeError):
    """A binary the test kit needs is not installed."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"{name} not found: apt-get install -y {PACKAGES.get(name, name)}")
    return path


class RegistryServer(RegistryProcess):
    """A registry for tests: ``auth`` is the registry's ``auth`` config section (see
    :meth:`htpasswd` and :class:`TokenServer`); ``credential`` logs in to it;
    ``proxy_remote`` (``http://127.0.0.1:PORT``) makes it a pull-through cache of that
    registry, as a CI fleet's shared mirror is."""

    def __init__(
        self,
        root: Path,
        *,
        workdir: Path | None = None,
        auth: dict | None = None,
        credential: Credential | None = None,
        tls: tuple[Path, Path] | None = None,
        proxy_remote: str | None = None,
    ) -> None:
        root = Path(root).absolute()
        super().__init__(
            root,
            workdir or root.parent / f".registry-{uuid.uuid4().hex[:8]}",
            auth=auth,
            tls=tls,
            proxy_remote=proxy_remote,
        )
        self.credential = credential

    def start(self, *, timeout: float = 15.0) -> RegistryServer:
        require_tool("docker-registry")
        super().start(timeout=timeout)
        return self

    def __enter__(self) -> RegistryServer:
        return self.start()

    @staticmethod
    def htpasswd(workdir: Path, users: dict[str, str]) -> dict:
        """An htpasswd ``auth`` section for ``users`` (bcrypt cost 4: fast requests)."""
        import bcrypt

        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "htpasswd"
        path.write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                for user, password in users.items()
            )
        )
        return {"htpasswd": {"realm": "sealpy-test", "path": str(path)}}


def self_signed_certificate(workdir: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate and key for ``host`` (for TLS-failure tests)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
        )
        .sign(key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / "tls.crt", workdir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TokenRequest:
    """What the token server saw (for tests: account and scope sent, credentials used)."""

    user: str | None
    query: dict[str, str]
    method: str


@dataclass
class TokenServer:
    """A token server for distribution's ``auth.token``: checks Basic credentials (or a
    refresh token) and signs ES256 JWTs whose ``x5c`` header carries its certificate.

    ``fail_next`` makes the next requests fail with a status (fault tests); ``ttl`` is
    the token lifetime in seconds, as the registry enforces it: distribution 2.8 accepts a
    token up to 60 s past its ``exp`` claim (clock-skew leeway), so the claim is set that
    much earlier and a ``ttl=1`` token is really refused after a second."""

    workdir: Path
    users: dict[str, str]
    ttl: int = 300
    service: str = "sealpy-test-registry"
    issuer: str = "sealpy-test-issuer"
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    requests: list[TokenRequest] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every token handed out (leak tests)
    port: int = 0

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def auth_config(self) -> dict:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.workdir / "token-cert.pem"),
            }
        }

    def _make_key(self) -> None:
        from sealpy.strategies.sync.localauth import signing_key

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key, self._x5c = signing_key(
            self.workdir / "token-cert.pem", name="sealpy test token signer", days=30
        )

    def issue(self, user: str, scopes: list[str]) -> str:
        import jwt

        now = int(time.time())
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3:
                access.append(
                    {
                        "type": parts[0],
                        "name": ":".join(parts[1:-1]),
                        "actions": parts[-1].split(","),
                    }
                )
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            # Rounded up: a token lives at least ``ttl`` seconds, never a fraction of one.
            "exp": math.ceil(time.time() + self.ttl) - REGISTRY_LEEWAY,
            "nbf": now - REGISTRY_LEEWAY - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})
        self.issued.append(token)
        return token

    def start(self) -> TokenServer:
        self._make_key()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, form: dict[str, str]) -> None:
                raw = parse_qs(urlsplit(self.path).query)
                query = {k: v[-1] for k, v in raw.items()}
                # Several scopes come as repeated parameters (distribution's token spec).
                query["scope"] = " ".join(raw.get("scope", []))
                query.update(form)
                user = server._authenticate(self.headers.get("Authorization", ""), query)
                with server._lock:
                    server.requests.append(TokenRequest(user, query, self.command))
                    failure = server.fail_next.pop(0) if server.fail_next else None
                if failure:
                    return self._answer(failure, {"error": "injected failure"})
                if user is None:
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                scopes = [s for s in query.get("scope", "").split(" ") if s]
                token = server.issue(user, scopes)
                body = {
                    "token": token,
                    "access_token": token,
                    "expires_in": server.ttl,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                if query.get("grant_type") == "password" or (
                    user and query.get("offline_token") == "true"
                ):
                    body["refresh_token"] = server._refresh_for(user)
                self._answer(200, body)

            def do_GET(self) -> None:
                self._handle({})

            def do_POST(self) -> None:
                form = {k: v[-1] for k, v in parse_qs(self._body().decode()).items()}
                self._handle(form)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Go's HTTP client (skopeo's OAuth2 refresh-token POST) sends it chunked.
                body = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()  # the CRLF after each chunk
                while self.rfile.readline().strip():  # trailers, up to the empty line
                    pass
                return body

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _refresh_for(self, user: str) -> str:
        token = secrets.token_hex(16)
        self.refresh_tokens[token] = user
        return token

    def _authenticate(self, header: str, query: dict[str, str]) -> str | None:
        if query.get("grant_type") == "refresh_token":
            return self.refresh_tokens.get(query.get("refresh_token", ""))
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_directory(root: Path, workdir: Path) -> RegistryServer:
    """A stock registry serving an existing storage root (the oracle); started."""
    return RegistryServer(root, workdir=workdir).start()


def skopeo(
    *args: str, check: bool = True, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run skopeo (output as bytes); a failure raises with skopeo's stderr."""
    command = [require_tool("skopeo"), *args]
    result = subprocess.run(command, capture_output=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"skopeo {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}"
        )
    return result


def skopeo_manifest_digest(reference: str, *, authfile: Path | None = None) -> str:
    """The digest of the manifest skopeo reads for ``reference`` (``docker://...``; plain
    HTTP and unverified TLS allowed, as for the loopback registries of tests)."""
    args = ["inspect", "--raw"]
    if reference.startswith("docker://"):
        args.append("--tls-verify=false")
    if authfile is not None:
        args += ["--authfile", str(authfile)]
    return "sha256:" + hashlib.sha256(skopeo(*args, reference).stdout).hexdigest()


def skopeo_pull(
    reference: str,
    destination: Path,
    *,
    authfile: Path | None = None,
    override_arch: str | None = None,
) -> str:
    """Pull ``reference`` with skopeo into a ``dir:`` directory (manifest kept byte for byte,
    every blob verified by skopeo); one platform: the reference's own manifest, or the
    host's (or ``override_arch``'s) child of an index. Returns the pulled manifest's digest."""
    args = ["copy", "--quiet", "--src-tls-verify=false"]
    if override_arch:
        args = ["--override-arch", override_arch, *args]
    if authfile is not None:
        args += ["--authfile", str(authfile)]
    skopeo(*args, reference, f"dir:{destination}")
    return "sha256:" + hashlib.sha256((destination / "manifest.json").read_bytes()).hexdigest()
