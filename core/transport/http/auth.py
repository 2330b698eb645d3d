"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, and Bearer tokens.

Authentication happens inside a request: a 401 carries a challenge, remembered per
registry host; from then on each request to that host carries Basic credentials or a
Bearer token. A token is fetched from the challenge's realm for the narrowest scope
(``repository:NAME:ACTIONS``), with the user's credentials (or a refresh-token grant for
an identity token), and cached per registry, service and scope until shortly before it
expires. Credentials are looked up per request from the
:class:`~sealpy.core.auth.CredentialProvider` — never stored — and never sent to a
plain-HTTP token realm unless that realm is loopback or the registry is marked insecure.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from sealpy.core.auth import Credential, CredentialProvider
from sealpy.core.errors import AuthenticationError, RegistryError
from sealpy.core.hosts import is_loopback
from sealpy.core.image.media import load_json
from sealpy.core.registries import Endpoint
from sealpy.core.transport.http.retry import TransientError, retry_after
from sealpy.core.transport.http.session import (
    MAX_BODY_BYTES,
    RETRY_STATUS,
    HttpTransport,
    is_cert_error,
    no_auth,
    read_capped,
    short_cause,
    size_text,
)

_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# A token goes into a header as is: visible ASCII only (RFC 6750's b64token is narrower;
# this refuses what would break the header, such as CR LF, and nothing real).
_TOKEN = re.compile(r"[\x21-\x7e]+")

# (registry host, service, scope): what a token is valid for.
TokenKey = tuple[str, str, str]


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "basic" or "bearer"
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        if not scheme:
            return None
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _AUTH_PARAM.finditer(rest)
        }
        return cls(scheme.lower(), params)


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float  # time.monotonic() after which it is not used any more


class TokenCache:
    """Bearer tokens by :data:`TokenKey`, each until shortly before it expires; thread-safe.

    Public so that callers (and tests) can see and replace what a client holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[TokenKey, _Token] = {}

    def get(self, key: TokenKey) -> str | None:
        """The cached token for ``key`` if it has not expired."""
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached.expires > time.monotonic():
            return cached.value
        return None

    def put(self, key: TokenKey, token: str, lifetime: float) -> None:
        """Cache ``token`` for ``lifetime`` seconds (as the token server said), renewed a
        little early so a token never expires on its way to the registry."""
        expires = time.monotonic() + max(lifetime - 10, lifetime / 2)
        with self._lock:
            self._tokens[key] = _Token(token, expires)

    def cached(self) -> list[TokenKey]:
        """What tokens are cached for (expired ones included)."""
        with self._lock:
            return list(self._tokens)


class Authenticator:
    """The ``Authorization`` header for each request, from the challenges seen so far."""

    def __init__(self, transport: HttpTransport, credentials: CredentialProvider) -> None:
        self.transport = transport
        self.credentials = credentials
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}

    def credential(self, endpoint: Endpoint) -> Credential | None:
        return self.credentials.credentials_for(endpoint.host, endpoint.repository)

    def challenged(self, endpoint: Endpoint, response: requests.Response) -> Challenge:
        """Remember the challenge of a 401 from ``endpoint``'s host."""
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise AuthenticationError(f"{endpoint.host}: 401 Unauthorized without a challenge")
        with self._lock:
            self._challenges[endpoint.host] = challenge
        return challenge

    def authorization(self, endpoint: Endpoint, scope: str, *, refresh: bool) -> str | None:
        """The header value for a request covering ``scope`` (None: send none); with
        ``refresh`` a new token is fetched even if one is cached."""
        with self._lock:
            challenge = self._challenges.get(endpoint.host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credential = self.credential(endpoint)
            if credential is None or credential.identity_token:
                return None
            return requests.auth._basic_auth_str(credential.username, credential.password)
        if challenge.scheme == "bearer":
            return f"Bearer {self._token(endpoint, challenge, scope, refresh=refresh)}"
        return None

    def _token(self, endpoint: Endpoint, challenge: Challenge, scope: str, *, refresh: bool) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (endpoint.host, service, scope)
        if not refresh:
            cached = self.tokens.get(key)
            if cached is not None:
                return cached
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(f"{endpoint.host}: bearer challenge without a usable realm")
        credential = self.credential(endpoint)
        self._refuse_plain_http_realm(endpoint, realm, credential)
        response = self._request_token(endpoint, realm, service, scope, credential)
        token, lifetime = _read_token(endpoint, realm, response, credential)
        self.tokens.put(key, token, lifetime)
        return token

    def _refuse_plain_http_realm(
        self, endpoint: Endpoint, realm: str, credential: Credential | None
    ) -> None:
        """Credentials travel to a plain-HTTP realm only on loopback or when insecure."""
        if (
            credential is not None
            and realm.startswith("http://")
            and not (is_loopback(_host_of(realm)) or self.transport.insecure(endpoint))
        ):
            raise AuthenticationError(
                f"{endpoint.host}: refusing to send credentials to a plain-HTTP token realm {realm}"
            )

    def _request_token(
        self,
        endpoint: Endpoint,
        realm: str,
        service: str,
        scope: str,
        credential: Credential | None,
    ) -> requests.Response:
        """Ask the token server: a refresh-token grant (POST) for an identity token, else
        a GET with the scopes as repeated ``scope`` parameters, Basic credentials if any."""
        transport = self.transport
        verify = not transport.insecure(endpoint)
        transport.count()
        try:
            if credential is not None and credential.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": credential.identity_token,
                    "service": service,
                    "scope": scope,
                    "client_id": "sealpy",
                }
                return transport.session.post(
                    realm,
                    data=form,
                    verify=verify,
                    timeout=transport.timeout,
                    auth=no_auth,
                    stream=True,  # read bounded, by _read_token
                )
            query: dict[str, str | list[str]] = {"service": service, "scope": scope.split(" ")}
            auth = None
            if credential is not None:
                query["account"] = credential.username
                auth = (credential.username, credential.password)
            return transport.session.get(
                realm,
                params=query,
                auth=auth or no_auth,
                verify=verify,
                timeout=transport.timeout,
                stream=True,  # read bounded, by _read_token
            )
        except requests.exceptions.SSLError as exc:
            if is_cert_error(exc):
                raise RegistryError(
                    f"TLS verification failed for token server {_host_of(realm)}"
                ) from None
            raise TransientError(f"TLS error talking to token server {_host_of(realm)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(
                f"cannot reach token server {_host_of(realm)}: {short_cause(exc)}"
            ) from None


def _host_of(url: str) -> str:
    return urlsplit(url).netloc


def _read_token(
    endpoint: Endpoint, realm: str, response: requests.Response, credential: Credential | None
) -> tuple[str, float]:
    """The token and its lifetime in seconds from the token server's answer (read up to
    MAX_BODY_BYTES: a token answer is a few KiB)."""
    status = response.status_code
    server = _host_of(realm)
    body = read_capped(response, MAX_BODY_BYTES) if status < 400 else b""
    response.close()
    if status in RETRY_STATUS:
        raise TransientError(f"token server {server}: {status}", retry_after(response))
    if status in (401, 403):
        raise AuthenticationError(
            f"{endpoint.host}: the token server refused "
            f"{'the credentials' if credential else 'anonymous access'}"
        )
    if status >= 400:
        raise AuthenticationError(f"{endpoint.host}: token server answered {status}")
    if body is None:
        raise AuthenticationError(
            f"{endpoint.host}: the token server {server} sent an answer larger than "
            f"{size_text(MAX_BODY_BYTES)}"
        )
    try:
        answer = load_json(body)
        token = answer.get("token") or answer.get("access_token")
        lifetime = answer.get("expires_in") or 60
    except (ValueError, AttributeError):
        raise AuthenticationError(
            f"{endpoint.host}: unreadable answer from the token server {server}"
        ) from None
    if not token:
        raise AuthenticationError(f"{endpoint.host}: the token server {server} sent no token")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise AuthenticationError(
            f"{endpoint.host}: the token server {server} sent an unusable token"
        )
    return token, _lifetime(lifetime)


def _lifetime(value: object) -> float:
    """Seconds a token is valid for, from its ``expires_in``: 60, as when the server says
    nothing, unless that is a positive number (a day at most)."""
    try:
        seconds = float(value) if isinstance(value, int | float | str) else 60.0
    except ValueError:
        seconds = 60.0
    if isinstance(value, bool) or not seconds > 0:
        seconds = 60.0
    return min(seconds, 86400.0)
