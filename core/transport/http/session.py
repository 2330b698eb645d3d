"""One HTTP exchange with a registry: the requests session, timeouts, the request count,
TLS policy, and the mapping of answers and transport failures to sealpy's errors.

:class:`HttpTransport` owns the ``requests.Session`` of a run (a connection pool shared
by every thread; loopback traffic never goes through a proxy). :meth:`HttpTransport.exchange`
sends one request without following redirects and without ``~/.netrc`` (credentials come
from the caller only), and reads no body whole beyond :data:`MAX_BODY_BYTES`
(:func:`read_capped`); :meth:`HttpTransport.check` turns an error status into
:class:`~sealpy.core.errors.NotFoundError`, :class:`~sealpy.core.errors.AuthenticationError`,
:class:`~sealpy.core.errors.RegistryError` or, for what is worth retrying,
:class:`~sealpy.core.transport.http.retry.TransientError`.
"""

from __future__ import annotations

import itertools
import re
import ssl
import threading
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from sealpy.core import __version__
from sealpy.core.errors import AuthenticationError, NotFoundError, RegistryError
from sealpy.core.hosts import HostPolicy, is_loopback
from sealpy.core.image.media import load_json
from sealpy.core.model import RetryPolicy
from sealpy.core.registries import Endpoint
from sealpy.core.transport.http.retry import TransientError, retry_after

# 520-524: the errors CDNs in front of registries answer with (origin down, timed out).
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})

RequestBody = bytes | BinaryIO | Iterator[bytes] | None

# The most sealpy reads whole of any answer but a manifest (which has its own bound, and
# blobs, which stream to disk): an error body, a token answer, a redirect's or an upload's
# answer. Registries send a few hundred bytes there; anything past this is hostile.
MAX_BODY_BYTES = 1 << 20
_READ_CHUNK = 64 << 10


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit "no auth" for requests, which otherwise reads ~/.netrc per request."""
    return request


def is_cert_error(exc: BaseException) -> bool:
    """Whether a failure (or anything in its chain) is an untrusted certificate."""
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


def is_unreachable(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether no connection could be made at all (refused, no such host, no route, the
    connect timed out), as opposed to one that broke (reset, closed without an answer)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def untrusted_certificate(host: str) -> RegistryError:
    """The error for a registry whose TLS certificate we cannot verify."""
    return RegistryError(
        f"TLS verification failed for {host}: its certificate is not trusted "
        "(use --tls-verify=false, or mark it insecure in registries.conf)"
    )


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


def short_cause(exc: BaseException) -> str:
    """A transport failure in a few words (urllib3's messages run to several lines)."""
    text = str(exc)
    for marker, words in _CAUSES:
        if marker in text:
            return words
    text = re.sub(r"<[^>]+>", "", text).strip(" ()'\"")
    return text[:160] or type(exc).__name__


def error_detail(response: requests.Response) -> str:
    """The registry's own words for an error (distribution's JSON errors), as one short
    printable line: the body is the server's, of any shape."""
    detail = response.reason or ""
    try:
        errors = load_json(response.content).get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, dict):
            code, message = first.get("code"), first.get("message")
            detail = f"{code if isinstance(code, str) else ''}: "
            detail += message if isinstance(message, str) else ""
    except (ValueError, AttributeError):
        pass
    return one_line(detail.strip(": "))


def one_line(text: str, limit: int = 200) -> str:
    """``text`` from a server as one printable line of at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_capped(response: requests.Response, limit: int) -> bytes | None:
    """The whole body of ``response``, counted as it is decoded (a gzip bomb counts by
    what it inflates to), or ``None`` — the connection closed — once it passes ``limit``
    bytes. The body read is kept as requests keeps it, so ``response.content`` and
    ``.json()`` work and the connection goes back to the pool; a transfer that breaks is
    a :class:`TransientError`."""
    if response._content is not False:  # read already (a redirect's, by requests)
        return response._content or b""
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_content(_READ_CHUNK):
            total += len(chunk)
            if total > limit:
                response.close()
                return None
            chunks.append(chunk)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
        raise TransientError(
            f"reading the answer of {urlsplit(response.url).netloc} failed: {short_cause(exc)}"
        ) from None
    response._content = b"".join(chunks)
    return response._content


def size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def read_body(response: requests.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """:func:`read_capped`, past ``limit`` a :class:`RegistryError` naming the host."""
    data = read_capped(response, limit)
    if data is None:
        where = urlsplit(response.url)
        raise RegistryError(
            f"{where.netloc} answered {response.request.method} {one_line(where.path, 100)} "
            f"with more than {size_text(limit)}; no registry sends that much there"
        )
    return data


def unsupported_url(url: str) -> str:
    """A URL sealpy will not follow, shown without credentials or query."""
    parts = urlsplit(url)
    return one_line(f"{parts.scheme}://{parts.hostname or ''}{parts.path}", 100)


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

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Where a redirect leads — checked, and its body read within bounds, here.

        requests asks this of every answer, and for a redirect reads its whole body
        (unbounded) before following it, or, when redirects are not followed, before
        noting where the next one would go (``Response.next``). Reading the body first,
        bounded, makes that read a no-op. A target that is not http(s) is refused here
        rather than failing later as "No connection adapters"."""
        target = super().get_redirect_target(resp)
        if target is None:
            return None
        read_body(resp)
        if urlsplit(target).scheme.lower() not in ("", "http", "https"):
            raise RegistryError(
                f"{urlsplit(resp.url).netloc}: the registry redirected to an unsupported URL "
                f"{unsupported_url(target)} (only http and https are followed)"
            )
        return target


class HttpTransport:
    """The session of one run, following a host policy; thread-safe."""

    def __init__(
        self,
        *,
        hosts: HostPolicy,
        retry: RetryPolicy,
        max_connections: int,
    ) -> None:
        self.hosts = hosts
        self.retry = retry
        self.session: requests.Session = _Session()
        self.session.headers["User-Agent"] = f"sealpy/{__version__}"
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max_connections, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._requests = itertools.count()
        self._sent = 0

    def close(self) -> None:
        self.session.close()

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far, token requests, probes and retries included."""
        return self._sent

    def count(self) -> None:
        """One more request is about to be sent (for :attr:`requests_sent`)."""
        with self._lock:
            self._sent = next(self._requests) + 1

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) timeouts of every request, from the retry policy."""
        return (self.retry.connect_timeout, self.retry.read_timeout)

    def insecure(self, endpoint: Endpoint) -> bool:
        """Whether TLS is not verified for this endpoint (the host policy's answer)."""
        return not self.hosts.verifies_tls(endpoint)

    def exchange(
        self,
        method: str,
        url: str,
        *,
        verify: bool,
        headers: dict[str, str] | None = None,
        authorization: str | None = None,
        stream: bool = False,
        data: RequestBody = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send one request, redirects not followed; transport failures worth another
        try raise :class:`TransientError`, an untrusted certificate a RegistryError.

        Without ``stream`` the body is read at once, up to :data:`MAX_BODY_BYTES`; with
        it, the caller reads (bounded too: :func:`read_capped`, or into a blob)."""
        all_headers = dict(headers or {})
        if authorization:
            all_headers["Authorization"] = authorization
        self.count()
        try:
            response = self.session.request(
                method,
                url,
                auth=no_auth,  # never ~/.netrc: credentials come from the provider only
                headers=all_headers,
                stream=True,  # requests would read a body whole, however long
                data=data,
                params=params,
                verify=verify,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            if is_cert_error(exc):
                raise untrusted_certificate(urlsplit(url).netloc) from None
            raise TransientError(f"TLS error talking to {urlsplit(url).netloc}") from None
        except requests.exceptions.ConnectionError as exc:
            host = urlsplit(url).netloc
            raise TransientError(
                f"cannot reach {host}: {short_cause(exc)}", unreachable=is_unreachable(exc)
            ) from None
        except requests.exceptions.Timeout:
            raise TransientError(
                f"timed out talking to {urlsplit(url).netloc}", timed_out=True
            ) from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
            # A URL the registry gave (an upload's Location): none of ours is like this.
            raise RegistryError(
                f"the registry sent an unsupported URL {unsupported_url(url)}"
            ) from None
        if not stream:
            read_body(response)
        return response

    def check(self, response: requests.Response, endpoint: Endpoint) -> requests.Response:
        """``response`` if it is no error (below 400), else the matching exception."""
        status = response.status_code
        if status < 400:
            return response
        read_body(response)
        detail = error_detail(response)
        response.close()
        if status in RETRY_STATUS:
            raise TransientError(f"{status} {detail}".strip(), retry_after(response))
        if status == 404:
            raise NotFoundError(f"not found ({detail})" if detail else "not found")
        if status == 403:
            raise AuthenticationError(f"{endpoint.host}: access denied ({detail})")
        raise RegistryError(f"{endpoint.host}: {status} {detail}".strip())
