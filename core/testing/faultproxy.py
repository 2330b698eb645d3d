"""A scripted, fault-injecting HTTP proxy to put in front of a real registry.

Clients talk to the proxy as if it were the registry; it forwards each request to the
upstream and, when the script says so, answers with a fault instead:

==============  =================================================================
``500/502/503`` that status, with a JSON error body
``429``         Too Many Requests with ``Retry-After: 1``; ``429-bare`` without it
``reset``       the connection is reset before any answer
``reset-mid``   headers and half the body, then a reset
``truncate``    full Content-Length announced, half the body sent, connection closed
``stall``       headers and half the body, then silence longer than a read timeout
``corrupt``     the whole body with its bytes changed (same length): a digest mismatch
``endless``     no Content-Length, the whole body, then filler bytes until the client
                hangs up (a hostile or broken server: never transient)
``401``         Unauthorized with the upstream's challenge (a token that expired early)
==============  =================================================================

The script is a :class:`FaultPlan`: faults at given request numbers, each request
failing with a probability (seeded, so runs repeat), or ``spread`` faults at a fixed
rate, evenly spaced, cycling through the kinds (so a test knows how many of each it
gets), limited to paths matching a pattern. A body fault (``reset-mid``, ``truncate``,
``stall``, ``corrupt``) only counts when it lands on a response with a body: otherwise it
passes to the next request that has one. Every request is recorded (method, path,
status, fault, whether it carried an Authorization header), which also makes the proxy
a neutral request counter; :meth:`FaultProxy.fault_counts` says what was injected.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = (
    "500",
    "502",
    "503",
    "429",
    "429-bare",
    "reset",
    "reset-mid",
    "truncate",
    "stall",
    "corrupt",
    "401",
    "endless",
)
# Faults that only make sense with a body to damage.
BODY_FAULTS = frozenset({"reset-mid", "truncate", "stall", "corrupt", "endless"})
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
}


@dataclass
class FaultPlan:
    """Which requests fail, and how.

    ``at``: {request number (1-based, counting requests matching ``paths``): fault}.
    ``rate`` with ``kinds``: each matching request fails with that probability, the fault
    drawn from ``kinds`` (seeded by ``seed``); with ``spread=True`` instead, exactly one
    request in ``1/rate`` fails (a fault falls due each time ``count * rate`` passes an
    integer) and the kinds take turns in order. ``paths`` is a regular expression on the
    request path; ``max_faults`` caps the total."""

    at: dict[int, str] = field(default_factory=dict)
    rate: float = 0.0
    kinds: Sequence[str] = ()
    paths: str = r"^/v2/.+"
    seed: int = 0
    spread: bool = False
    max_faults: int | None = None
    stall_seconds: float = 5.0
    latency: float = 0.0  # seconds added to every request (slow links, crash tests)

    def __post_init__(self) -> None:
        for kind in [*self.at.values(), *self.kinds]:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        self._random = random.Random(self.seed)
        self._count = 0
        self._faults = 0
        self._turn = 0
        self._due: list[str] = []  # spread faults waiting for a request that can take them
        self._lock = threading.Lock()

    def next(self, method: str, path: str) -> str | None:
        if not re.search(self.paths, path):
            return None
        with self._lock:
            self._count += 1
            if self.max_faults is not None and self._faults >= self.max_faults:
                return None
            fault = self.at.get(self._count)
            if fault is None and self.rate and self.spread:
                if int(self._count * self.rate) > int((self._count - 1) * self.rate):
                    self._due.append(self.kinds[self._turn % len(self.kinds)])
                    self._turn += 1
                fault = self._take_due(method)
            elif fault is None and self.rate and self._random.random() < self.rate:
                kinds = [k for k in self.kinds if method != "HEAD" or k not in BODY_FAULTS]
                fault = self._random.choice(kinds) if kinds else None
            if fault in BODY_FAULTS and method == "HEAD":
                fault = None
            if fault:
                self._faults += 1
            return fault

    def _take_due(self, method: str) -> str | None:
        for i, kind in enumerate(self._due):
            if method != "HEAD" or kind not in BODY_FAULTS:
                return self._due.pop(i)
        return None

    def defer(self, fault: str) -> None:
        """A body fault met a response without a body: it did not happen. A spread plan
        hands it to the next request instead, so the count of faults stays as planned."""
        with self._lock:
            self._faults -= 1
            if self.spread:
                self._due.insert(0, fault)


@dataclass(frozen=True)
class Seen:
    """One request the proxy answered: ``status`` as the client saw it, ``fault`` the kind
    injected (None when forwarded untouched), ``authorization`` whether it carried an
    ``Authorization`` header."""

    method: str
    path: str
    status: int
    fault: str | None
    authorization: bool

    @property
    def kind(self) -> str:
        """``blob``, ``manifest``, ``upload``, ``tags``, ``ping`` (``/v2/``) or ``other``."""
        if self.path.rstrip("/") == "/v2":
            return "ping"
        for marker, kind in (
            ("/blobs/uploads", "upload"),
            ("/blobs/", "blob"),
            ("/manifests/", "manifest"),
            ("/tags/", "tags"),
        ):
            if marker in self.path:
                return kind
        return "other"


class FaultProxy:
    """A scripted HTTP proxy in front of a registry, for fault tests and for counting.

    ``FaultProxy(upstream_host, plan).start()`` (or ``with FaultProxy(...) as proxy``);
    point clients at ``proxy.host``. Without a plan it only forwards and records.

    Counting (stable API, used by tests and the benchmark): ``seen`` lists every request
    in arrival order (:class:`Seen`); :meth:`count` counts them by method and kind;
    ``faults`` and :meth:`fault_counts` list and count the injected faults.

    ``strip_prefix`` makes it a mirror with a path, as a Harbor proxy-cache project is:
    ``/v2/<prefix>/<repository>/…`` is forwarded as ``/v2/<repository>/…``, any other
    repository path is answered 404 (``/v2/`` itself passes); ``seen`` keeps the paths as
    the client sent them.
    """

    def __init__(
        self, upstream: str, plan: FaultPlan | None = None, *, strip_prefix: str = ""
    ) -> None:
        self.upstream = upstream
        self.plan = plan or FaultPlan()
        self.strip_prefix = strip_prefix.strip("/")
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self._challenge = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def faults(self) -> list[Seen]:
        return [s for s in self.seen if s.fault]

    def count(self, method: str | None = None, kind: str | None = None) -> int:
        """Requests seen so far, of ``method`` (``GET``, ``HEAD``…) and :attr:`Seen.kind`
        (``blob``, ``manifest``…) when given: ``proxy.count("GET", "blob")``."""
        with self._lock:
            seen = list(self.seen)
        return sum(
            1
            for s in seen
            if (method is None or s.method == method) and (kind is None or s.kind == kind)
        )

    def fault_counts(self) -> Counter[str]:
        """How many faults of each kind were injected."""
        return Counter(s.fault for s in self.faults if s.fault)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def upstream_path(self, path: str) -> str | None:
        """The path to forward ``path`` to (``None``: outside ``strip_prefix``, a 404)."""
        if not self.strip_prefix or path.split("?", 1)[0].rstrip("/") == "/v2":
            return path
        lead = f"/v2/{self.strip_prefix}/"
        return "/v2/" + path[len(lead) :] if path.startswith(lead) else None

    def start(self) -> FaultProxy:
        """Start serving (on a free port of 127.0.0.1) and return self. Starting a proxy
        that is already running is an error: it would leave the first server running,
        unreachable and never stopped."""
        if self._server is not None:
            raise RuntimeError(f"FaultProxy already serving on {self.host}")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

            def _forward(self) -> None:
                if proxy.plan.latency:
                    time.sleep(proxy.plan.latency)
                fault = proxy.plan.next(self.command, self.path)
                auth = "Authorization" in self.headers
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = proxy.upstream_path(self.path)
                if path is None:
                    proxy.record(Seen(self.command, self.path, 404, None, auth))
                    return self._not_found()
                if fault in ("500", "502", "503", "429", "429-bare", "401", "reset"):
                    proxy.record(Seen(self.command, self.path, 0, fault, auth))
                    return self._status_fault(fault)
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                # Headers may repeat (skopeo sends one Accept per media type): keep them all.
                upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                upstream.putheader("Host", proxy.upstream)
                for key, value in self.headers.items():
                    if key.lower() not in _HOP_HEADERS | {"host", "content-length"}:
                        upstream.putheader(key, value)
                if body is not None:
                    upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body)
                response = upstream.getresponse()
                if response.status == 401:
                    proxy._challenge = response.getheader("WWW-Authenticate", "")
                streamed = fault not in BODY_FAULTS  # only a fault needs the whole body in hand
                data = b"" if streamed else response.read()
                if not streamed and (
                    self.command == "HEAD" or response.status not in (200, 206) or not data
                ):
                    assert fault is not None  # a body fault (streamed is False)
                    proxy.plan.defer(fault)  # nothing to damage: the fault did not happen
                    fault = None
                proxy.record(Seen(self.command, self.path, response.status, fault, auth))
                sent_length = response.getheader("Content-Length") if streamed else str(len(data))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_HEADERS | {"content-length", "location"}:
                        self.send_header(key, value)
                location = response.getheader("Location")
                if location:
                    parts = urlsplit(location)
                    if parts.netloc == proxy.upstream:  # keep the client on the proxy
                        location = location.replace(proxy.upstream, proxy.host, 1)
                    self.send_header("Location", location)
                if fault == "endless":  # a body that ends when the connection does
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", sent_length or "0")
                self.end_headers()
                if streamed:
                    if self.command != "HEAD":
                        while chunk := response.read(1 << 20):
                            self.wfile.write(chunk)
                    upstream.close()
                    return None
                upstream.close()
                if self.command == "HEAD" or not data:
                    return None
                half = max(1, len(data) // 2)
                if fault is None:
                    self.wfile.write(data)
                elif fault == "corrupt":
                    self.wfile.write(bytes(b ^ 0x5A for b in data))
                elif fault == "truncate":
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_WR)
                elif fault == "reset-mid":
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    self._reset()
                elif fault == "endless":
                    self._endless(data)
                elif fault == "stall":
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    time.sleep(proxy.plan.stall_seconds)
                    self._reset()
                return None

            def _endless(self, data: bytes) -> None:
                filler = bytes(1 << 20)
                try:
                    self.wfile.write(data)
                    while True:
                        self.wfile.write(filler)
                except OSError:  # the client hung up: what a bounded client does
                    pass

            def _reset(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _not_found(self) -> None:
                body = json.dumps(
                    {"errors": [{"code": "NAME_UNKNOWN", "message": "not under the prefix"}]}
                ).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _status_fault(self, fault: str) -> None:
                if fault == "reset":
                    return self._reset()
                status = 429 if fault.startswith("429") else int(fault)
                body = json.dumps(
                    {"errors": [{"code": "INJECTED", "message": f"injected {fault}"}]}
                ).encode()
                self.send_response(status)
                if fault == "429":
                    self.send_header("Retry-After", "1")
                if fault == "401":
                    self.send_header("WWW-Authenticate", proxy._challenge or 'Basic realm="fault"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return None

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedirectingProxy(FaultProxy):
    """Redirects every blob GET to a second server on another address (like a registry
    sending downloads to object storage) and records whether the redirected request
    carried an Authorization header."""

    def __init__(self, upstream: str, storage_credential=None) -> None:
        super().__init__(upstream)
        # The storage's own access to the blobs (a presigned URL, in real life).
        self.storage_credential = storage_credential
        self.storage_saw_authorization: list[bool] = []
        self._storage: ThreadingHTTPServer | None = None
        self.storage_port = 0

    def start(self) -> RedirectingProxy:
        outer = self

        class Storage(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.storage_saw_authorization.append("Authorization" in self.headers)
                upstream = http.client.HTTPConnection(outer.upstream, timeout=60)
                headers = {"Host": outer.upstream}
                if outer.storage_credential is not None:
                    import base64

                    pair = (
                        f"{outer.storage_credential.username}:{outer.storage_credential.password}"
                    )
                    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
                upstream.request("GET", self.path, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        # "localhost" is another host name than 127.0.0.1 for the client: a cross-host redirect.
        self._storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
        self.storage_port = self._storage.server_address[1]
        threading.Thread(target=self._storage.serve_forever, daemon=True).start()
        super().start()
        original = self._server.RequestHandlerClass  # type: ignore[union-attr]

        class Redirect(original):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                if "/blobs/sha256:" in self.path:
                    self.send_response(307)
                    self.send_header(
                        "Location", f"http://localhost:{outer.storage_port}{self.path}"
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

        self._server.RequestHandlerClass = Redirect  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        super().stop()
        if self._storage is not None:
            self._storage.shutdown()
            self._storage.server_close()
            self._storage = None
