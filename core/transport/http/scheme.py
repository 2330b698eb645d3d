"""How each registry host is reached: HTTPS (verified or not) or plain HTTP.

Decided once per host and remembered for the run (go-containerregistry's "schemer" and
"ping"). Where the host policy decides the scheme (:meth:`HostPolicy.scheme
<sealpy.core.hosts.HostPolicy.scheme>`: one the user wrote, or HTTPS for a host that is
neither loopback nor insecure) no request is made; for the others a ping of ``/v2/``
decides.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import requests

from sealpy.core.errors import SealpyError
from sealpy.core.hosts import is_loopback
from sealpy.core.registries import Endpoint, api_host
from sealpy.core.transport.http.retry import TransientError
from sealpy.core.transport.http.session import (
    HttpTransport,
    is_cert_error,
    no_auth,
    read_capped,
    untrusted_certificate,
)

# What a probe reads of /v2/'s body ("{}" from a registry): only its status and headers
# count, so a longer body is not read but dropped with its connection.
_PROBE_BODY_BYTES = 64 << 10


def _discard(response: requests.Response) -> None:
    """Done with a probe's answer: a short body is read so the connection is reused."""
    with contextlib.suppress(TransientError):  # only the status and headers were wanted
        read_capped(response, _PROBE_BODY_BYTES)
    response.close()


@dataclass(frozen=True)
class ResolvedHost:
    """How to reach one registry host: URL prefix (``scheme://api host``) and whether
    TLS certificates are verified."""

    url: str
    verify: bool


class SchemeResolver:
    """The :class:`ResolvedHost` of every host a run talks to; thread-safe, and one probe
    per host however many threads ask at once."""

    def __init__(self, transport: HttpTransport) -> None:
        self.transport = transport
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._resolved: dict[str, ResolvedHost] = {}

    def resolve(self, endpoint: Endpoint) -> ResolvedHost:
        """Decide, once per host, between HTTPS (verified or not) and plain HTTP."""
        with self._lock:
            known = self._resolved.get(endpoint.host)
        if known is not None:
            return known
        with self._probe_lock:
            with self._lock:
                known = self._resolved.get(endpoint.host)
            if known is not None:
                return known
            policy = self.transport.hosts
            verify = policy.verifies_tls(endpoint)
            host = api_host(endpoint.host)
            scheme = policy.scheme(endpoint)
            if scheme == "http":
                resolved = ResolvedHost(f"http://{host}", False)
            elif scheme == "https":
                resolved = ResolvedHost(f"https://{host}", verify)
            else:
                resolved = self._probe(host, verify=verify)
            with self._lock:
                self._resolved[endpoint.host] = resolved
            return resolved

    def _probe(self, host: str, *, verify: bool) -> ResolvedHost:
        """Loopback or insecure: HTTPS if the host speaks it, else plain HTTP (as Docker).

        A host that speaks TLS with a certificate we cannot verify is not downgraded: that
        is a TLS failure, reported as such unless verification was turned off. A loopback
        host is asked in plain HTTP first, as that is what local registries speak (and a
        TLS handshake with certificate loading costs more than the whole request)."""
        if is_loopback(host) and self._answers_plain_http(host):
            return ResolvedHost(f"http://{host}", False)
        https = ResolvedHost(f"https://{host}", verify)
        transport = self.transport
        try:
            transport.count()
            response = transport.session.get(
                f"{https.url}/v2/",
                timeout=transport.timeout,
                verify=verify,
                auth=no_auth,
                stream=True,
                allow_redirects=False,
            )
            _discard(response)
            return https
        except requests.exceptions.SSLError as exc:
            if verify and is_cert_error(exc):
                raise untrusted_certificate(host) from None
            return ResolvedHost(f"http://{host}", False)
        except requests.exceptions.ConnectionError:
            return ResolvedHost(f"http://{host}", False)
        except requests.exceptions.Timeout:
            # Connected, but no answer in time: neither scheme is known to work.
            raise TransientError(f"timed out talking to {host}", timed_out=True) from None

    def _answers_plain_http(self, host: str) -> bool:
        """A registry's own answer to /v2/ over plain HTTP: 200 or 401 with distribution's
        API version header (a TLS-only server answers 400, or not at all)."""
        transport = self.transport
        transport.count()
        try:
            response = transport.session.get(
                f"http://{host}/v2/",
                timeout=transport.timeout,
                auth=no_auth,
                allow_redirects=False,
                stream=True,
            )
            _discard(response)
        except (requests.exceptions.RequestException, SealpyError):
            return False
        return response.status_code in (200, 401) and (
            "Docker-Distribution-Api-Version" in response.headers
        )
