"""Mirrors first, then the registry itself: one operation tried over an image's endpoints.

The rule (:mod:`sealpy.core.mirrors`): a mirror gets the quick
:attr:`~sealpy.core.transport.remote.RegistryClient.mirror_retrier`; one whose failure did
not go away with it (:class:`RetriesExhausted`: unreachable, timed out, 5xx twice) is left
out of the rest of the run; any other error (a 404, a refusal, a bad manifest) moves only
this image on. The first request to a mirror goes alone while others wait for its verdict
(:meth:`EndpointLog.first_contact`). The registry's own endpoint keeps the full retry
policy, as does an endpoint that served the image already (a source, once chosen, is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sealpy.core.errors import RegistryError, SealpyError
from sealpy.core.mirrors import EndpointLog
from sealpy.core.registries import Endpoint
from sealpy.core.transport.http.retry import Retrier, RetriesExhausted

T = TypeVar("T")


def try_endpoints(
    endpoints: Sequence[Endpoint],
    operation: Callable[[Endpoint, Retrier], T],
    *,
    chosen: Endpoint | None,
    log: EndpointLog,
    retrier: Retrier,
    mirror_retrier: Retrier,
) -> tuple[Endpoint, T]:
    """The endpoint that answered ``operation`` and its result; ``chosen`` (the endpoint
    that served the image already) is the only one tried when set. An error of the last
    endpoint tried says which mirrors were tried before it."""
    failed: list[str] = []
    for endpoint in [chosen] if chosen else endpoints:
        if not (endpoint.mirror and chosen is None):
            try:
                return endpoint, operation(endpoint, retrier)
            except SealpyError as exc:
                if failed:
                    raise exc.amended(f" (also tried {'; '.join(failed)})") from exc.cause
                raise
        with log.first_contact(endpoint):
            failure = log.failure(endpoint)
            if failure is not None:
                failed.append(f"mirror {failure.label}: skipped ({failure.reason})")
                continue
            try:
                result = operation(endpoint, mirror_retrier)
            except SealpyError as exc:
                failed.append(f"mirror {endpoint.label}: {exc}")
                if isinstance(exc, RetriesExhausted):
                    log.mirror_failed(endpoint, str(exc), whole_host=exc.unreachable)
                else:
                    log.answered(endpoint)  # a 404 or a refusal: the mirror is up
                continue
            log.answered(endpoint)
            return endpoint, result
    raise RegistryError("; ".join(failed))
