"""The registry HTTP API v2 client: auth, retries, TLS policy, mirrors, streamed blobs.

:class:`RegistryClient` speaks to any number of registries; it is thread-safe and meant to
be shared by all the images of one run. :class:`RemoteRepository` is one repository seen
through it: an image source (and, for push, a destination) for the copy engine.

Every operation is one retry loop (tenacity) around "send the request, read the body":
connection errors, timeouts, truncated bodies, 5xx and 429 are retried with jittered
exponential backoff (``Retry-After`` honoured), bounded in attempts and in the time spent
failing since the last progress (no wait ever sleeps past it). A blob download resumes
with ``Range`` from what is already written. Docker Hub's API is reached at
``registry-1.docker.io``; loopback registries are never reached through a proxy.

Authentication happens inside a request: a 401 carries a challenge; Basic sends the
credential, Bearer fetches a token (narrowest scope, cached per registry and scope until
it expires) and the request is sent again, once. Credentials are looked up per request
from the :class:`~sealpy.core.auth.CredentialProvider` — never stored on the session — and
the ``Authorization`` header is not sent to another host after a redirect.
"""

from __future__ import annotations

import email.utils
import itertools
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter

from sealpy.core import __version__
from sealpy.core.auth import AnonymousCredentials, Credential, CredentialProvider
from sealpy.core.errors import (
    AuthenticationError,
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    RegistryError,
    SealpyError,
)
from sealpy.core.image.media import ACCEPT, Descriptor, Manifest
from sealpy.core.model import RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import Endpoint, RegistriesConfig, api_host, is_loopback
from sealpy.core.transport.blobio import CHUNK

if TYPE_CHECKING:
    from sealpy.core.transport.blobio import BlobWriter

T = TypeVar("T")
MAX_MANIFEST_BYTES = 4 << 20  # containers/image's limit: a manifest is never bigger
# 520-524: the errors CDNs in front of registries answer with (origin down, timed out).
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit "no auth" for requests, which otherwise reads ~/.netrc per request."""
    return request


class TransientError(Exception):
    """A failure worth retrying: carries the cause for the final message and a Retry-After."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


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


@dataclass
class _Token:
    value: str
    expires: float


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(response: requests.Response) -> str:
    """The registry's own words for an error, short (distribution's JSON errors)."""
    try:
        errors = response.json().get("errors") or []
        if errors:
            first = errors[0]
            return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    return response.reason or ""


def _is_cert_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
            return True
        stack.extend(
            [e.__cause__, e.__context__, *[a for a in e.args if isinstance(a, BaseException)]]
        )
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return False


@dataclass(frozen=True)
class _Base:
    """How to reach one registry host: URL prefix and TLS verification."""

    url: str
    verify: bool


class _Session(requests.Session):
    """A session that never sends loopback traffic through a proxy from the environment.

    requests honours ``http_proxy`` even for 127.0.0.1, and a corporate proxy cannot reach
    the user's local registry (nor should it see that traffic). Other hosts keep the proxy.
    """

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if is_loopback(urlsplit(url).netloc):
            settings["proxies"] = {}
        return settings


class RegistryClient:
    """A thread-safe client for the registry HTTP API v2, shared by a whole run."""

    def __init__(
        self,
        *,
        credentials: CredentialProvider | None = None,
        tls_verify: bool = True,
        registries: RegistriesConfig | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
    ) -> None:
        self.credentials = credentials or AnonymousCredentials()
        self.tls_verify = tls_verify
        self.registries = registries or RegistriesConfig()
        self.retry = retry or RetryPolicy()
        self.session = _Session()
        self.session.headers["User-Agent"] = f"sealpy/{__version__}"
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max_connections, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._bases: dict[str, _Base] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._requests = itertools.count()
        self._sent = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far, token requests and retries included."""
        return self._sent

    def repository(self, ref: ImageReference) -> RemoteRepository:
        return RemoteRepository(self, ref)

    # --- one HTTP exchange ---------------------------------------------------------------

    def _count(self) -> None:
        with self._lock:
            self._sent = next(self._requests) + 1

    def _timeout(self) -> tuple[float, float]:
        return (self.retry.connect_timeout, self.retry.read_timeout)

    def _insecure(self, endpoint: Endpoint) -> bool:
        return (
            not self.tls_verify or endpoint.insecure or self.registries.is_insecure(endpoint.host)
        )

    def _base(self, endpoint: Endpoint) -> _Base:
        """Decide, once per host, between HTTPS (verified or not) and plain HTTP."""
        with self._lock:
            known = self._bases.get(endpoint.host)
        if known is not None:
            return known
        with self._probe_lock:  # one probe per host, however many threads ask at once
            with self._lock:
                known = self._bases.get(endpoint.host)
            if known is not None:
                return known
            insecure = self._insecure(endpoint)
            host = api_host(endpoint.host)
            if endpoint.scheme == "http":
                base = _Base(f"http://{host}", False)
            elif endpoint.scheme == "https" or not (insecure or is_loopback(host)):
                base = _Base(f"https://{host}", not insecure)
            else:
                base = self._probe(host, verify=not insecure)
            with self._lock:
                self._bases[endpoint.host] = base
            return base

    def _probe(self, host: str, *, verify: bool) -> _Base:
        """Loopback or insecure: HTTPS if the host speaks it, else plain HTTP (as Docker).

        A host that speaks TLS with a certificate we cannot verify is not downgraded: that
        is a TLS failure, reported as such unless verification was turned off. A loopback
        host is asked in plain HTTP first, as that is what local registries speak (and a
        TLS handshake with certificate loading costs more than the whole request)."""
        if is_loopback(host) and self._answers_plain_http(host):
            return _Base(f"http://{host}", False)
        https = _Base(f"https://{host}", verify)
        try:
            self._count()
            self.session.get(
                f"{https.url}/v2/", timeout=self._timeout(), verify=verify, auth=_no_auth
            ).close()
            return https
        except requests.exceptions.SSLError as exc:
            if verify and _is_cert_error(exc):
                raise RegistryError(
                    f"TLS verification failed for {host}: its certificate is not trusted "
                    "(use --tls-verify=false, or mark it insecure in registries.conf)"
                ) from None
            return _Base(f"http://{host}", False)
        except requests.exceptions.ConnectionError:
            return _Base(f"http://{host}", False)

    def _answers_plain_http(self, host: str) -> bool:
        """A registry's own answer to /v2/ over plain HTTP: 200 or 401 with distribution's
        API version header (a TLS-only server answers 400, or not at all)."""
        self._count()
        try:
            response = self.session.get(
                f"http://{host}/v2/", timeout=self._timeout(), auth=_no_auth, allow_redirects=False
            )
            response.close()
        except requests.exceptions.RequestException:
            return False
        return response.status_code in (200, 401) and (
            "Docker-Distribution-Api-Version" in response.headers
        )

    def send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        stream: bool = False,
        data: bytes | BinaryIO | Iterator[bytes] | None = None,
        params: dict[str, str] | None = None,
        url: str | None = None,
        also_pull: str | None = None,
    ) -> requests.Response:
        """Send one request (authenticating on a 401, once); raise for errors.

        ``also_pull`` names another repository the token must cover for pulling (a
        cross-repository mount reads from it). Returns a 2xx response (or 3xx when the
        caller follows redirects itself). Transient failures raise :class:`TransientError`
        for the operation's retry loop.
        """
        base = self._base(endpoint)
        target = url or f"{base.url}{path}"
        # Several scopes travel space-separated, as OAuth2 writes them (and as the cache
        # key); a GET to the token server sends them as repeated ``scope`` parameters.
        scope = f"repository:{endpoint.repository}:{actions}"
        if also_pull and also_pull != endpoint.repository:
            scope += f" repository:{also_pull}:pull"
        for attempt in range(2):
            auth = self._authorization(endpoint, scope, refresh=attempt > 0)
            response = self._exchange(
                method, target, base.verify, headers, auth, stream, data, params
            )
            if response.status_code != 401:
                return self._check(response, endpoint)
            response.close()
            challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
            if challenge is None:
                raise AuthenticationError(f"{endpoint.host}: 401 Unauthorized without a challenge")
            with self._lock:
                self._challenges[endpoint.host] = challenge
            # Worth one more try: a (new) token, or Basic credentials we have not sent yet.
            can_retry = challenge.scheme == "bearer" or (
                challenge.scheme == "basic"
                and auth is None
                and self._credential(endpoint) is not None
            )
            if attempt > 0 or not can_retry:
                break
            if hasattr(data, "seek"):
                data.seek(0)  # type: ignore[union-attr]
        who = "the credentials were" if self._credential(endpoint) else "anonymous access was"
        raise AuthenticationError(
            f"{endpoint.host}: authentication failed ({who} refused for {endpoint.repository})"
        )

    def _exchange(
        self, method, url, verify, headers, auth, stream, data, params
    ) -> requests.Response:
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = auth
        self._count()
        try:
            return self.session.request(
                method,
                url,
                auth=_no_auth,  # never ~/.netrc: credentials come from the provider only
                headers=all_headers,
                stream=stream,
                data=data,
                params=params,
                verify=verify,
                timeout=self._timeout(),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            if _is_cert_error(exc):
                host = urlsplit(url).netloc
                raise RegistryError(
                    f"TLS verification failed for {host}: its certificate is not trusted "
                    "(use --tls-verify=false, or mark it insecure in registries.conf)"
                ) from None
            raise TransientError(f"TLS error talking to {urlsplit(url).netloc}") from None
        except requests.exceptions.ConnectionError as exc:
            raise TransientError(f"cannot reach {urlsplit(url).netloc}: {_short(exc)}") from None
        except requests.exceptions.Timeout:
            raise TransientError(f"timed out talking to {urlsplit(url).netloc}") from None

    def _check(self, response: requests.Response, endpoint: Endpoint) -> requests.Response:
        status = response.status_code
        if status < 400:
            return response
        detail = _error_detail(response)
        response.close()
        if status in _RETRY_STATUS:
            raise TransientError(f"{status} {detail}".strip(), _retry_after(response))
        if status == 404:
            raise NotFoundError(f"not found ({detail})" if detail else "not found")
        if status == 403:
            raise AuthenticationError(f"{endpoint.host}: access denied ({detail})")
        raise RegistryError(f"{endpoint.host}: {status} {detail}".strip())

    def get_elsewhere(
        self, endpoint: Endpoint, url: str, headers: dict[str, str]
    ) -> requests.Response:
        """Follow a redirect to another host (object storage): never with our credentials."""
        verify = not self._insecure(endpoint)
        response = self._exchange("GET", url, verify, headers, None, True, None, None)
        return self._check(response, endpoint)

    # --- authentication ----------------------------------------------------------------

    def _credential(self, endpoint: Endpoint) -> Credential | None:
        return self.credentials.credentials_for(endpoint.host, endpoint.repository)

    def _authorization(self, endpoint: Endpoint, scope: str, *, refresh: bool) -> str | None:
        with self._lock:
            challenge = self._challenges.get(endpoint.host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credential = self._credential(endpoint)
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
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not refresh and cached.expires > time.monotonic():
                return cached.value
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(f"{endpoint.host}: bearer challenge without a usable realm")
        credential = self._credential(endpoint)
        token, lifetime = self._fetch_token(endpoint, realm, service, scope, credential)
        with self._lock:
            # Renew a little early so a token never expires on its way to the registry.
            self._tokens[key] = _Token(token, time.monotonic() + max(lifetime - 10, lifetime / 2))
        return token

    def _fetch_token(
        self,
        endpoint: Endpoint,
        realm: str,
        service: str,
        scope: str,
        credential: Credential | None,
    ) -> tuple[str, float]:
        realm_host = urlsplit(realm).netloc
        verify = not self._insecure(endpoint)
        if (
            credential is not None
            and realm.startswith("http://")
            and not (is_loopback(realm_host) or self._insecure(endpoint))
        ):
            raise AuthenticationError(
                f"{endpoint.host}: refusing to send credentials to a plain-HTTP token realm {realm}"
            )
        self._count()
        try:
            if credential is not None and credential.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": credential.identity_token,
                    "service": service,
                    "scope": scope,
                    "client_id": "sealpy",
                }
                response = self.session.post(
                    realm, data=form, verify=verify, timeout=self._timeout(), auth=_no_auth
                )
            else:
                query: dict[str, str | list[str]] = {
                    "service": service,
                    "scope": scope.split(" "),
                }
                auth = None
                if credential is not None:
                    query["account"] = credential.username
                    auth = (credential.username, credential.password)
                response = self.session.get(
                    realm,
                    params=query,
                    auth=auth or _no_auth,
                    verify=verify,
                    timeout=self._timeout(),
                )
        except requests.exceptions.SSLError as exc:
            if _is_cert_error(exc):
                raise RegistryError(
                    f"TLS verification failed for token server {realm_host}"
                ) from None
            raise TransientError(f"TLS error talking to token server {realm_host}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(f"cannot reach token server {realm_host}: {_short(exc)}") from None
        status = response.status_code
        if status in _RETRY_STATUS:
            raise TransientError(f"token server {realm_host}: {status}", _retry_after(response))
        if status in (401, 403):
            raise AuthenticationError(
                f"{endpoint.host}: the token server refused "
                f"{'the credentials' if credential else 'anonymous access'}"
            )
        if status >= 400:
            raise AuthenticationError(f"{endpoint.host}: token server answered {status}")
        try:
            body = response.json()
            token = str(body.get("token") or body.get("access_token"))
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise AuthenticationError(
                f"{endpoint.host}: unreadable answer from the token server"
            ) from None
        if not token or token == "None":
            raise AuthenticationError(f"{endpoint.host}: the token server sent no token")
        return token, lifetime

    # --- retry loop ----------------------------------------------------------------------

    def retrying(
        self, what: str, budget: RetryBudget | None = None
    ) -> Iterator[tenacity.AttemptManager]:
        """Attempts of one operation; raises RegistryError naming ``what`` once exhausted.

        Bounded in attempts and by ``max_seconds`` of time spent failing — measured from
        the last progress (``budget.progress()``: bytes received), so a long download that
        breaks once resumes however long it ran. A wait never reaches past the budget: a
        backoff or Retry-After that does not fit ends the operation now (tenacity's
        stop_before_delay), instead of sleeping beyond it."""
        budget = budget or RetryBudget(self.retry.max_seconds)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts) | budget.stop,
            wait=lambda state: budget.cap(self._wait(state)),
            retry=tenacity.retry_if_exception_type(TransientError),
            reraise=True,
        )
        try:
            yield from retrying
        except TransientError as exc:
            attempts = retrying.statistics.get("attempt_number", self.retry.attempts)
            # Causes may already name the operation ("manifest 1: content does not match").
            cause = exc.cause if exc.cause.startswith(f"{what}: ") else f"{what}: {exc.cause}"
            spent = " and the time budget" if budget.exhausted else ""
            raise RegistryError(f"{cause} (gave up after {attempts} attempts{spent})") from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry.max_seconds)  # retrying caps it further
        return tenacity.wait_random_exponential(
            multiplier=self.retry.initial_backoff, max=self.retry.max_backoff
        )(state)


class RetryBudget:
    """The time one operation may spend failing: ``seconds`` since it started or since it
    last made progress, whichever is later. Thread-confined (one operation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since = time.monotonic()
        self.exhausted = False

    def progress(self) -> None:
        """Bytes arrived: the time spent so far was not spent failing."""
        self._since = time.monotonic()

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self._since)

    def cap(self, wait: float) -> float:
        return max(0.0, min(wait, self.remaining()))

    def stop(self, state: tenacity.RetryCallState) -> bool:
        # The wait was computed (and capped) before this check: stop when it would use up
        # what is left, so no sleep ends past the budget and no attempt starts after it.
        self.exhausted = (state.upcoming_sleep or 0.0) >= self.remaining()
        return self.exhausted


_CAUSES = (
    ("Name or service not known", "the host name does not resolve"),
    ("Temporary failure in name resolution", "the host name does not resolve"),
    ("NameResolutionError", "the host name does not resolve"),
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset"),
    ("RemoteDisconnected", "the connection was closed without an answer"),
    ("IncompleteRead", "the body was cut short"),
    ("Read timed out", "read timed out"),
    ("timed out", "timed out"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network is unreachable"),
)


def _short(exc: BaseException) -> str:
    """A transport failure in a few words (urllib3's messages run to several lines)."""
    text = str(exc)
    for marker, words in _CAUSES:
        if marker in text:
            return words
    text = re.sub(r"<[^>]+>", "", text).strip(" ()'\"")
    return text[:160] or type(exc).__name__


class RemoteRepository:
    """One repository in a registry, reached through its mirrors first (registries.conf).

    An image source for the copy engine; once a manifest was fetched from an endpoint,
    the blobs of that image come from the same endpoint.
    """

    def __init__(self, client: RegistryClient, ref: ImageReference) -> None:
        self.client = client
        self.ref = ref
        self.endpoints = client.registries.endpoints(ref)
        self._served_by: Endpoint | None = None

    def __str__(self) -> str:
        return self.ref.name

    @property
    def _endpoint(self) -> Endpoint:
        return self._served_by or self.endpoints[-1]

    def _over_endpoints(self, operation: Callable[[Endpoint], T]) -> T:
        """Try each endpoint, mirrors first; the first that succeeds serves the image."""
        failed_mirrors: list[str] = []
        for endpoint in [self._served_by] if self._served_by else self.endpoints:
            try:
                result = operation(endpoint)
            except SealpyError as exc:
                if endpoint.mirror:
                    failed_mirrors.append(f"mirror {endpoint.host}: {exc}")
                    continue
                if failed_mirrors:
                    raise type(exc)(f"{exc} (also tried {'; '.join(failed_mirrors)})") from None
                raise
            self._served_by = endpoint
            return result
        raise RegistryError("; ".join(failed_mirrors))

    # --- reading -------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> Manifest:
        """The manifest or index for a tag or digest; verified when the digest is known."""
        what = f"manifest {reference}"
        pinned = reference if reference.startswith("sha256:") else None

        def fetch(endpoint: Endpoint) -> Manifest:
            for attempt in self.client.retrying(what):
                with attempt:
                    response = self.client.send(
                        endpoint,
                        "GET",
                        f"/v2/{endpoint.repository}/manifests/{reference}",
                        headers={"Accept": ACCEPT},
                        stream=True,
                    )
                    _expect_success(response, endpoint, what)
                    data = _read_limited(response, MAX_MANIFEST_BYTES, what)
                    served = response.headers.get("Docker-Content-Digest")
                    expected = pinned or (
                        served if served and served.startswith("sha256:") else None
                    )
                    try:
                        return Manifest.parse(
                            data,
                            response.headers.get("Content-Type"),
                            expected_digest=expected,
                            what=what,
                        )
                    except DigestMismatchError as exc:
                        # Wrong bytes in transit are retried; a source that keeps lying fails.
                        raise TransientError(str(exc)) from None
            raise AssertionError("unreachable")

        return self._over_endpoints(fetch)

    def head_manifest(self, reference: str) -> Descriptor | None:
        """The digest a tag points to now, without fetching the manifest (None if absent)."""
        what = f"manifest {reference}"

        def head(endpoint: Endpoint) -> Descriptor | None:
            for attempt in self.client.retrying(what):
                with attempt:
                    try:
                        response = self.client.send(
                            endpoint,
                            "HEAD",
                            f"/v2/{endpoint.repository}/manifests/{reference}",
                            headers={"Accept": ACCEPT},
                        )
                    except NotFoundError:
                        return None
                    _expect_success(response, endpoint, what)
                    digest = response.headers.get("Docker-Content-Digest", "")
                    if not digest.startswith("sha256:"):
                        return None
                    return Descriptor(
                        response.headers.get("Content-Type", ""),
                        digest,
                        int(response.headers.get("Content-Length") or 0),
                    )
            raise AssertionError("unreachable")

        return self._over_endpoints(head)

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``writer``, resuming from ``writer.offset`` after a break, and
        verify it: wrong content is fetched again from zero, and fails once retries run out."""
        endpoint = self._endpoint
        what = f"blob {descriptor.digest}"
        path = f"/v2/{endpoint.repository}/blobs/{descriptor.digest}"
        budget = RetryBudget(self.client.retry.max_seconds)
        for attempt in self.client.retrying(what, budget):
            with attempt:
                if writer.offset and writer.offset == descriptor.size:
                    try:
                        writer.verify()
                        return
                    except DigestMismatchError as exc:
                        writer.reset()
                        raise TransientError(str(exc)) from None
                # Identity encoding: Range offsets count the blob's own bytes, which a
                # proxy compressing the answer would change.
                headers = {"Accept-Encoding": "identity"}
                if writer.offset:
                    headers["Range"] = f"bytes={writer.offset}-"
                response = self._get_following_redirects(endpoint, path, headers)
                with response:
                    if response.status_code == 416:
                        writer.reset()
                        raise TransientError("range not satisfiable; starting again")
                    if writer.offset and response.status_code != 206:
                        writer.reset()  # the server ignored Range: take it all from zero
                    try:
                        for chunk in _arriving(response):
                            writer.write(chunk)
                            budget.progress()
                            if on_bytes:
                                on_bytes(len(chunk))
                    except DigestMismatchError as exc:
                        writer.reset()
                        raise TransientError(str(exc)) from None
                    except (
                        requests.exceptions.RequestException,
                        urllib3.exceptions.HTTPError,
                        OSError,
                    ) as exc:
                        raise TransientError(f"download interrupted: {_short(exc)}") from None
                if writer.offset != descriptor.size:
                    raise TransientError(
                        f"body ended after {writer.offset} of {descriptor.size} bytes"
                    )
                try:
                    writer.verify()
                except DigestMismatchError as exc:
                    writer.reset()
                    raise TransientError(str(exc)) from None
                return

    def _get_following_redirects(
        self, endpoint: Endpoint, path: str, headers: dict[str, str]
    ) -> requests.Response:
        response = self.client.send(endpoint, "GET", path, headers=headers, stream=True)
        for _hop in range(5):
            if not response.is_redirect:
                return response
            location = urljoin(response.url, response.headers["Location"])
            same_host = urlsplit(location).netloc == urlsplit(response.url).netloc
            response.close()
            if same_host:
                response = self.client.send(
                    endpoint, "GET", "", headers=headers, stream=True, url=location
                )
            else:
                response = self.client.get_elsewhere(endpoint, location, headers)
        raise RegistryError(f"{endpoint.host}: too many redirects")

    def blob_exists(self, digest: str, *, actions: str = "pull") -> bool:
        endpoint = self._endpoint
        for attempt in self.client.retrying(f"blob {digest}"):
            with attempt:
                try:
                    self.client.send(
                        endpoint,
                        "HEAD",
                        f"/v2/{endpoint.repository}/blobs/{digest}",
                        actions=actions,
                    ).close()
                    return True
                except NotFoundError:
                    return False
        raise AssertionError("unreachable")

    # --- writing (push) ------------------------------------------------------------------

    def _push_endpoint(self) -> Endpoint:
        # Pushes go to the registry itself, never to a mirror.
        return self.endpoints[-1]

    def push_blob(
        self,
        descriptor: Descriptor,
        open_blob: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
    ) -> bool:
        """Upload a blob unless the registry has it; ``True`` if bytes were sent.

        With ``mount_from`` (another repository on the same registry) a cross-repository
        mount is tried first, so the bytes are not sent again."""
        endpoint = self._push_endpoint()
        what = f"push blob {descriptor.digest}"
        if self.blob_exists(descriptor.digest, actions="pull,push"):
            return False
        uploads = f"/v2/{endpoint.repository}/blobs/uploads/"
        for attempt in self.client.retrying(what):
            with attempt:
                params = {"mount": descriptor.digest, "from": mount_from} if mount_from else None
                response = self.client.send(
                    endpoint,
                    "POST",
                    uploads,
                    actions="pull,push",
                    params=params,
                    also_pull=mount_from,
                )
                response.close()
                if response.status_code == 201:
                    return False
                location = urljoin(response.url, response.headers["Location"])
                separator = "&" if "?" in location else "?"
                with open_blob() as stream:
                    response = self.client.send(
                        endpoint,
                        "PUT",
                        "",
                        actions="pull,push",
                        url=f"{location}{separator}{urlencode({'digest': descriptor.digest})}",
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(descriptor.size),
                        },
                        data=stream,
                    )
                response.close()
                return True
        raise AssertionError("unreachable")

    def put_manifest(self, reference: str, manifest: Manifest) -> None:
        endpoint = self._push_endpoint()
        for attempt in self.client.retrying(f"push manifest {reference}"):
            with attempt:
                self.client.send(
                    endpoint,
                    "PUT",
                    f"/v2/{endpoint.repository}/manifests/{reference}",
                    actions="pull,push",
                    headers={"Content-Type": manifest.media_type},
                    data=manifest.data,
                ).close()


class RemotePushDestination:
    """A remote repository as a copy destination: ``sealpy push`` and the test factory.

    Blobs the registry already has are skipped (HEAD); with ``mount_from`` a blob is first
    mounted from another repository of the same registry. Manifests are put by digest,
    children first, and the tag last."""

    def __init__(self, repository: RemoteRepository, *, mount_from: str | None = None) -> None:
        self.repository = repository
        self.mount_from = mount_from
        self.blobs_sent = 0

    def has_blob(self, digest: str) -> bool:
        return self.repository.blob_exists(digest, actions="pull,push")

    def receive_blob(
        self, descriptor: Descriptor, source: object, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        open_blob = getattr(source, "open_blob", None)
        if open_blob is None:
            raise RegistryError(f"cannot push from {source}: it is not a local image")
        if self.repository.push_blob(
            descriptor, lambda: open_blob(descriptor), mount_from=self.mount_from
        ):
            self.blobs_sent += 1
            if on_bytes:
                on_bytes(descriptor.size)

    def stored_manifest(self, digest: str) -> Manifest | None:
        return None

    def put_manifest(self, manifest: Manifest) -> None:
        self.repository.put_manifest(manifest.digest, manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        self.repository.put_manifest(tag, manifest)


def _arriving(response: requests.Response) -> Iterator[bytes]:
    """A body as it arrives, up to CHUNK at a time. Unlike iter_content, whose reads wait
    to fill a whole chunk and lose it when the connection breaks, every byte received is
    handed over: it is written (the retry resumes after it) and counts as progress."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(CHUNK)
        return
    while chunk := read1(CHUNK, decode_content=True):
        yield chunk


def _expect_success(response: requests.Response, endpoint: Endpoint, what: str) -> None:
    """Anything but 2xx here is not a manifest: above all a redirect (not followed for
    manifests), which is what a host that is no registry answers — docker.io itself sends
    /v2/ to www.docker.com. Reading that as a manifest would only say "not valid JSON"."""
    status = response.status_code
    if 200 <= status < 300:
        return
    response.close()
    answer = f"{status} {response.reason or ''}".strip()
    location = response.headers.get("Location")
    if location:
        answer += f" (redirect to {location})"
    raise RegistryError(
        f"{what}: {endpoint.host} answered {answer} instead of a manifest; is it a registry?"
    )


def _read_limited(response: requests.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_content(65536):
            total += len(chunk)
            if total > limit:
                response.close()
                raise ManifestError(f"{what}: manifest larger than {limit} bytes")
            chunks.append(chunk)
    except (requests.exceptions.RequestException, OSError) as exc:
        raise TransientError(f"reading the manifest failed: {_short(exc)}") from None
    finally:
        response.close()
    return b"".join(chunks)
