"""Which endpoint served each image, and which mirrors failed: one record per run.

An image is fetched from its mirrors in order (``--registry-mirror`` flags, then
registries.conf), then from its own registry, as containers/image does. The rule for a
mirror (a registry's own endpoint keeps the full retry policy):

- It cannot be reached (connection refused, the name does not resolve, no route, the
  connect timed out) or does not answer in time: no second try. The next endpoint is
  tried at once, and the mirror is skipped for every later image of the run.
- It answers 5xx or 429, resets the connection, cuts a body short or sends wrong bytes:
  one more try after a short pause (at most :data:`MIRROR_MAX_BACKOFF`; a ``Retry-After``
  beyond :data:`MIRROR_BUDGET` is not waited for); if that fails too, as above.
- It answers 404 (it does not have the image), 401/403 or another error about the
  request: only that image moves on to the next endpoint; the mirror stays in use.
- Once a mirror served an image's manifest, that image's blobs come from it too, with
  the full retry policy (a source, once chosen, is kept).

Images fetched in parallel do not all find out for themselves that a mirror is down: the
first request to a mirror goes alone (:meth:`EndpointLog.first_contact`), the others wait
for its verdict, so a dead mirror costs one failed request per run.

A failed mirror is remembered for :data:`FORGET_AFTER` seconds, so a long-lived
:class:`~sealpy.core.hosts.TransportOptions` (a Python caller running many builds) tries
it again later. An unreachable host is remembered for all its locations (path prefixes).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sealpy.core.model import RetryPolicy

if TYPE_CHECKING:
    from sealpy.core.model import CacheReport
    from sealpy.core.registries import Endpoint

MIRROR_MAX_BACKOFF = 0.25
MIRROR_BUDGET = 2.0
FORGET_AFTER = 300.0


def mirror_policy(policy: RetryPolicy) -> RetryPolicy:
    """The retry policy for a mirror's manifest requests: two attempts at most, a short
    pause, a small failing-time budget (see the module doc)."""
    return replace(
        policy,
        attempts=min(2, policy.attempts),
        initial_backoff=min(policy.initial_backoff, MIRROR_MAX_BACKOFF),
        max_backoff=min(policy.max_backoff, MIRROR_MAX_BACKOFF),
        max_seconds=min(policy.max_seconds, MIRROR_BUDGET),
    )


@dataclass(frozen=True)
class MirrorFailure:
    """A mirror left out of the run: its label (host and path prefix) and why."""

    label: str
    reason: str


class EndpointLog:
    """What a run learned about its endpoints; thread-safe, shared by every registry
    client made from one :class:`~sealpy.core.hosts.TransportOptions`.

    :meth:`served` / :meth:`served_by`: which endpoint (host and path prefix) served each
    image, by reference. :meth:`mirror_failed` / :meth:`failure`: mirrors left out."""

    def __init__(self, *, forget_after: float = FORGET_AFTER) -> None:
        self.forget_after = forget_after
        self._lock = threading.Lock()
        self._served: dict[str, str] = {}
        self._failed: dict[str, tuple[float, MirrorFailure]] = {}
        self._answered: set[str] = set()  # mirrors that answered once: no more waiting
        self._first: dict[str, threading.Lock] = {}

    def served(self, reference: str, endpoint: Endpoint) -> None:
        with self._lock:
            self._served[reference] = endpoint.label

    @contextlib.contextmanager
    def first_contact(self, endpoint: Endpoint) -> Iterator[None]:
        """Held around a request to a mirror: until the mirror has answered once, one
        image at a time talks to it and the others wait for the verdict (then skip it if
        it failed). Once it answered, nobody waits."""
        with self._lock:
            if endpoint.label in self._answered:
                lock = None
            else:
                lock = self._first.setdefault(endpoint.label, threading.Lock())
        if lock is None:
            yield
            return
        with lock:
            yield

    def answered(self, endpoint: Endpoint) -> None:
        """``endpoint``'s mirror answered (whatever it said): it is up."""
        with self._lock:
            self._answered.add(endpoint.label)

    def served_by(self, reference: str) -> str | None:
        """The label of the endpoint that served ``reference`` last, or ``None``."""
        with self._lock:
            return self._served.get(reference)

    def mirror_failed(self, endpoint: Endpoint, reason: str, *, whole_host: bool) -> bool:
        """Leave ``endpoint``'s mirror out of the run (``whole_host``: every location on
        its host). ``True`` if it was not left out already (say so once)."""
        failure = MirrorFailure(endpoint.label, reason)
        keys = {endpoint.label, *([f"host:{endpoint.host}"] if whole_host else [])}
        now = time.monotonic()
        with self._lock:
            fresh = self._current(endpoint, now) is None
            for key in keys:
                self._failed[key] = (now, failure)
            self._answered.discard(endpoint.label)
        return fresh

    def failure(self, endpoint: Endpoint) -> MirrorFailure | None:
        """Why ``endpoint``'s mirror is left out of the run, or ``None`` if it is not."""
        with self._lock:
            return self._current(endpoint, time.monotonic())

    def failures(self) -> list[MirrorFailure]:
        """Every mirror left out now, once each."""
        now = time.monotonic()
        with self._lock:
            found = {f.label: f for at, f in self._failed.values() if now - at < self.forget_after}
        return list(found.values())

    def _current(self, endpoint: Endpoint, now: float) -> MirrorFailure | None:
        for key in (endpoint.label, f"host:{endpoint.host}"):
            entry = self._failed.get(key)
            if entry is not None and now - entry[0] < self.forget_after:
                return entry[1]
        return None

    def fill(self, report: CacheReport) -> CacheReport:
        """``report`` with ``served_by`` set for each image this log knows and the
        strategy did not say itself."""
        from sealpy.core.model import CacheReport

        images = tuple(
            replace(i, served_by=self.served_by(i.source)) if i.served_by is None else i
            for i in report.images
        )
        return CacheReport(report.strategy, images, report.seconds, report.requests)
