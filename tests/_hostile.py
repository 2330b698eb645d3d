"""A hostile HTTP server for the tests of what sealpy bounds (not a test module).

Every request is answered by a script: a status, headers and a body that may be bytes or
any iterable of pieces — ``endless()`` never ends, ``sized(n)`` sends ``n`` bytes without
holding them. An iterable body goes out chunked, as it comes, so nothing announces its
size. The server counts the body bytes it managed to send: a client that stops reading
leaves that count near its cap plus what the sockets buffer."""

from __future__ import annotations

import gzip
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = b"x" * 65536
MiB = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


Script = Callable[[Request], Reply]


def endless() -> Iterator[bytes]:
    return itertools.repeat(PIECE)


def sized(n: int, piece: bytes = PIECE) -> Iterator[bytes]:
    """``n`` bytes (rounded up to whole pieces), made as they are sent."""
    return itertools.repeat(piece, -(-n // len(piece)))


def gzip_bomb(n: int) -> bytes:
    """Gzip of ``n`` zero bytes: about a thousandth of ``n`` on the wire."""
    return gzip.compress(bytes(n), compresslevel=9)


def nested(depth: int) -> bytes:
    """A JSON array nested ``depth`` deep."""
    return b"[" * depth + b"]" * depth


REGISTRY_HEADERS = {"Docker-Distribution-Api-Version": "registry/2.0"}


def registry_ping(request: Request) -> Reply | None:
    """The /v2/ answer of a distribution registry (None for other paths)."""
    if request.path == "/v2/":
        return Reply(200, dict(REGISTRY_HEADERS))
    return None


def json_reply(status: int, document: object) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(document).encode())


class HostileServer:
    """A plain-HTTP server on 127.0.0.1 answering every request with ``script(request)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.sent = 0  # body bytes written
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def __enter__(self) -> HostileServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                request = Request(self.command, self.path, dict(self.headers.items()))
                outer.requests.append(request)
                reply = outer.script(request)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                body = reply.body
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    if isinstance(body, bytes):
                        self.wfile.write(body)
                        outer._count(len(body))
                        return
                    for piece in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        outer._count(len(piece))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client hung up: what it wanted to happen
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
