"""Network profiles for the benchmark: ``lan`` (loopback as it is) and ``wan`` (a
delaying, throttling TCP proxy on 127.0.0.1 in front of a registry).

The ``wan`` proxy changes nothing on the machine: clients are pointed at its address
instead of the registry's. What it adds, per the issue's model of a real network:

* latency: every chunk read from one side is written to the other 25 ms later, in each
  direction, so a request/response round trip costs 50 ms; chunks are queued, not
  serialised, so later chunks are not held up behind earlier ones' delay;
* connection set-up: one more round trip (50 ms) before a NEW connection is connected
  upstream, so keeping connections alive pays, as TCP's handshake makes it pay;
* bandwidth: a pacing token bucket shared by every connection and both directions caps
  the total throughput at 100 Mbit/s.

It also counts what crossed it: connections, and round trips (a connection's set-up, plus
each time the client speaks after the server has, i.e. each request or pipelined burst),
which is how the benchmark reports round trips per image.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

ONE_WAY_SECONDS = 0.025
BANDWIDTH_BITS = 100_000_000
CHUNK = 65536
# Chunks in flight per direction and connection (4 MiB): far above the bandwidth-delay
# product (100 Mbit/s x 25 ms = 312 KB), so it bounds memory without limiting speed.
QUEUE_CHUNKS = 64


@dataclass(frozen=True)
class Profile:
    """A network profile: ``None`` for the wan fields means loopback as it is."""

    name: str
    one_way_seconds: float = 0.0
    bandwidth_bits: float | None = None

    @property
    def delayed(self) -> bool:
        return self.one_way_seconds > 0 or self.bandwidth_bits is not None


PROFILES = {
    "lan": Profile("lan"),
    "wan": Profile("wan", ONE_WAY_SECONDS, BANDWIDTH_BITS),
}


class TokenBucket:
    """Paces bytes to ``rate`` bytes/s across every caller (a virtual clock: each take
    books its share of the link; the caller waits until the booking, less a 5 ms burst)."""

    BURST_SECONDS = 0.005

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._booked = 0.0

    async def take(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._booked = max(self._booked, now) + size / self.rate
        wait = self._booked - now - self.BURST_SECONDS
        if wait > 0:
            await asyncio.sleep(wait)


class WanProxy:
    """A TCP proxy to ``upstream`` (``host:port``) on 127.0.0.1 with latency, a connection
    set-up cost and a shared bandwidth cap; runs its own event loop in a thread."""

    def __init__(
        self,
        upstream: str,
        *,
        one_way_seconds: float = ONE_WAY_SECONDS,
        bandwidth_bits: float | None = BANDWIDTH_BITS,
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.one_way = one_way_seconds
        self.bucket = TokenBucket(bandwidth_bits / 8) if bandwidth_bits else None
        self.connections = 0
        self.round_trips = 0
        self.bytes = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="wan-proxy")
        self._server: asyncio.Server | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_counts(self) -> None:
        self.connections = self.round_trips = self.bytes = 0

    def counts(self) -> dict[str, int]:
        return {"connections": self.connections, "round_trips": self.round_trips}

    def __enter__(self) -> WanProxy:
        self._thread.start()
        self._ready.wait(10)
        if not self.port:
            raise RuntimeError("the wan proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop listening and end every connection still open (keep-alive ones)."""
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.connections += 1
        self.round_trips += 1  # the set-up round trip
        await asyncio.sleep(2 * self.one_way)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        # Who spoke last on this connection: the client speaking after the server (or
        # first) starts a round trip.
        last = ["down"]
        try:
            await asyncio.gather(
                self._pipe(client_r, up_w, "up", last), self._pipe(up_r, client_w, "down", last)
            )
        finally:
            for w in (client_w, up_w):
                w.close()

    async def _pipe(self, src, dst, direction: str, last: list[str]) -> None:
        """Copy ``src`` to ``dst``, each chunk ``one_way`` seconds after it was read."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            try:
                while True:
                    data = await src.read(CHUNK)
                    if data and direction == "up" and last[0] != "up":
                        self.round_trips += 1
                    if data:
                        last[0] = direction
                    await queue.put((loop.time() + self.one_way, data))
                    if not data:
                        return
            except (OSError, asyncio.IncompleteReadError):
                await queue.put((loop.time(), b""))

        async def write() -> None:
            broken = False  # the far side is gone: drain the queue so read() never blocks
            while True:
                due, data = await queue.get()
                if broken:
                    if not data:
                        return
                    continue
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                if self.bucket is not None:
                    await self.bucket.take(len(data))
                self.bytes += len(data)
                try:
                    dst.write(data)
                    await dst.drain()
                except OSError:
                    dst.transport.abort()
                    broken = True

        await asyncio.gather(read(), write())


@contextlib.contextmanager
def profile_hosts(profile: Profile, upstreams: list[str]):
    """``{upstream host: host clients should use}`` under ``profile`` (wan: one proxy per
    upstream, alive for the block), and the proxies (to read their counts)."""
    if not profile.delayed:
        yield {u: u for u in upstreams}, {}
        return
    with contextlib.ExitStack() as stack:
        proxies = {
            u: stack.enter_context(
                WanProxy(
                    u,
                    one_way_seconds=profile.one_way_seconds,
                    bandwidth_bits=profile.bandwidth_bits,
                )
            )
            for u in upstreams
        }
        yield {u: p.host for u, p in proxies.items()}, proxies
