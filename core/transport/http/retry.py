"""The retry policy of registry operations, as one object other code can reuse.

:class:`Retrier` is built from a :class:`~sealpy.core.model.RetryPolicy` value and answers
the questions every retry loop asks: how long to wait after a failed attempt
(:meth:`Retrier.delay`: ``Retry-After`` honoured, else jittered exponential backoff), how
long an operation may go on failing (:class:`RetryBudget`: ``max_seconds`` since the last
progress, so a long download that breaks once is still resumed), and the loop itself
(:meth:`Retrier.attempts` for a ``with attempt:`` block, :meth:`Retrier.call` for a
function). Only :class:`TransientError` is retried; once attempts or budget run out it
becomes a :class:`~sealpy.core.errors.RegistryError` naming the operation.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import requests
import tenacity
import tenacity.stop

from sealpy.core.errors import RegistryError, SealpyError
from sealpy.core.model import RetryPolicy

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying: carries the cause for the final message, what it is about
    when the cause says (``subject``: "blob sha256:…"), and a Retry-After.

    ``unreachable``: no connection could be made (refused, the name does not resolve, no
    route, the connect timed out); ``timed_out``: a connection was made but the answer did
    not come in time. A registry's own endpoint is retried for both; a mirror is not (see
    :mod:`sealpy.core.mirrors`)."""

    def __init__(
        self,
        cause: str,
        retry_after: float | None = None,
        *,
        subject: str | None = None,
        unreachable: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after
        self.subject = subject
        self.unreachable = unreachable
        self.timed_out = timed_out

    @property
    def hopeless_on_mirror(self) -> bool:
        """Not worth a second try on a mirror: the next endpoint is tried at once."""
        return self.unreachable or self.timed_out

    @classmethod
    def of(cls, error: SealpyError) -> TransientError:
        """``error`` (wrong content, say) as worth retrying, keeping what it is about."""
        return cls(error.message, subject=error.subject)


class RetriesExhausted(RegistryError):
    """A transient failure that did not go away within the retry policy: the source is
    unwell (down, overloaded), not the request. ``unreachable`` and ``timed_out`` are the
    last failure's (:class:`TransientError`)."""

    unreachable = False
    timed_out = False


def retry_after(response: requests.Response) -> float | None:
    """Seconds the server asks us to wait (``Retry-After``: seconds or an HTTP date)."""
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


class RetryBudget:
    """The time one operation may spend failing: ``seconds`` since it started or since it
    last made progress, whichever is later. Thread-confined (one operation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since = time.monotonic()
        self.exhausted = False

    def progress(self, at: float | None = None) -> None:
        """Bytes arrived (now, or at monotonic time ``at``): the time spent until then
        was not spent failing."""
        self._since = time.monotonic() if at is None else at

    def spent(self) -> float:
        """Seconds spent failing so far (since the start or the last progress)."""
        return time.monotonic() - self._since

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self._since)

    def cap(self, wait: float) -> float:
        return max(0.0, min(wait, self.remaining()))

    def stop(self, state: tenacity.RetryCallState) -> bool:
        # The wait was computed (and capped) before this check: stop when it would use up
        # what is left, so no sleep ends past the budget and no attempt starts after it.
        self.exhausted = (state.upcoming_sleep or 0.0) >= self.remaining()
        return self.exhausted


class _StopWhen(tenacity.stop.stop_base):
    """A predicate as a tenacity stop condition (typed: tenacity's ``|`` is untyped)."""

    def __init__(self, predicate: Callable[[tenacity.RetryCallState], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.predicate(retry_state)


class Retrier:
    """A :class:`RetryPolicy` in action; thread-safe (each loop keeps its own state).

    Public interface: :attr:`policy`, :meth:`delay`, :meth:`budget`, :meth:`attempts` and
    :meth:`call`."""

    def __init__(self, policy: RetryPolicy | None = None, *, for_mirror: bool = False) -> None:
        self.policy = policy or RetryPolicy()
        # A mirror's retrier does not retry what a second try cannot mend there (an
        # unreachable host, a timeout): the next endpoint is the better next try.
        self.for_mirror = for_mirror

    def _worth_retrying(self, error: BaseException) -> bool:
        if not isinstance(error, TransientError):
            return False
        return not (self.for_mirror and error.hopeless_on_mirror)

    def delay(self, error: BaseException | None, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based): the server's
        ``Retry-After`` if ``error`` carries one (at most ``max_seconds``), else a random
        pause up to ``initial_backoff · 2^(attempt-1)``, at most ``max_backoff`` ("full
        jitter", so clients that failed together do not retry together)."""
        policy = self.policy
        if isinstance(error, TransientError) and error.retry_after is not None:
            return min(error.retry_after, policy.max_seconds)  # the budget caps it further
        try:
            ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (attempt - 1))
        except OverflowError:
            ceiling = policy.max_backoff
        return random.uniform(0, max(0.0, ceiling))

    def budget(self) -> RetryBudget:
        """A fresh failing-time budget of ``max_seconds`` for one operation."""
        return RetryBudget(self.policy.max_seconds)

    def attempts(
        self, what: str, budget: RetryBudget | None = None
    ) -> Iterator[tenacity.AttemptManager]:
        """Attempts of one operation (``for attempt in ...: with attempt: ...``); raises
        :class:`RegistryError` naming ``what`` once exhausted.

        Bounded in attempts and by ``max_seconds`` of time spent failing — measured from
        the last progress (``budget.progress()``: bytes received), so a long download that
        breaks once resumes however long it ran. A wait never reaches past the budget: a
        backoff or Retry-After that does not fit ends the operation now (tenacity's
        stop_before_delay), instead of sleeping beyond it."""
        budget = budget or self.budget()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(
                tenacity.stop_after_attempt(self.policy.attempts), _StopWhen(budget.stop)
            ),
            wait=lambda state: budget.cap(self._wait(state)),
            retry=tenacity.retry_if_exception(self._worth_retrying),
            reraise=True,
        )
        try:
            yield from retrying
        except TransientError as exc:
            attempts = retrying.statistics.get("attempt_number", self.policy.attempts)
            # A cause about the operation itself ("manifest 1": content does not match) is
            # not named twice; one about something else is named after it.
            cause = f"{exc.subject}: {exc.cause}" if exc.subject else exc.cause
            cause = cause if exc.subject == what else f"{what}: {cause}"
            spent = " and the time budget" if budget.exhausted else ""
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            error = RetriesExhausted(f"{cause} (gave up after {tries}{spent})")
            error.unreachable, error.timed_out = exc.unreachable, exc.timed_out
            raise error from None

    def call(self, what: str, operation: Callable[[], T], budget: RetryBudget | None = None) -> T:
        """``operation()`` until it returns, retried as :meth:`attempts` does."""
        for attempt in self.attempts(what, budget):
            with attempt:
                return operation()
        raise AssertionError("unreachable")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self.delay(error, state.attempt_number)
