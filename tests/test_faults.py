"""Client-level fault handling: retries bounded in attempts and in time, Retry-After
honoured, jittered backoff, no Authorization header after a cross-host redirect, and the
fault proxy's own scheduling.

The per-strategy fault cases (15 % of requests failing, the retry budget, tokens failing
and expiring) are in the conformance kit, sealpy.core.testing.conformance, which
tests/test_conformance.py runs for every strategy."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.errors import NotFoundError
from sealpy.core.model import CacheOptions, ImageSet, RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.testing.conformance import AMD64
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy, RedirectingProxy
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient


def cache_with_proxy_strategy(images: ImageSet, out: Path, *, credential) -> None:
    options = CacheOptions(
        platforms=(AMD64,),
        max_parallel=4,
        credentials=ConfiguredCredentials(creds=credential, environ={}),
    )
    pipeline.cache(images, out, strategy="proxy", options=options)


def test_spread_plan_fails_one_request_in_seven_taking_turns():
    plan = FaultPlan(rate=0.15, kinds=["500", "429"], spread=True)
    faults = [plan.next("GET", "/v2/a/blobs/sha256:0") for _ in range(100)]
    assert [i + 1 for i, f in enumerate(faults) if f] == [
        7,
        14,
        20,
        27,
        34,
        40,
        47,
        54,
        60,
        67,
        74,
        80,
        87,
        94,
        100,
    ]
    assert [f for f in faults if f] == ["500", "429"] * 7 + ["500"]
    assert plan.next("GET", "/v2/") is None, "paths outside the plan are never counted"


def test_spread_body_faults_wait_for_a_request_with_a_body():
    plan = FaultPlan(rate=0.5, kinds=["truncate"], spread=True)
    assert [plan.next("HEAD", "/v2/a/manifests/1") for _ in range(4)] == [None] * 4
    # Two faults fell due on HEADs (no body to damage): the next GETs take them.
    assert [plan.next("GET", "/v2/a/blobs/x") for _ in range(3)] == ["truncate"] * 3
    plan.defer("truncate")  # the proxy found no body (a 404, say): handed on again
    assert plan.next("GET", "/v2/a/blobs/x") == "truncate"


def test_proxy_counts_only_faults_that_happened(conformance_catalog):
    """A corrupt fault planned for a 404 (no blob body) is not counted; the next blob is."""
    c = conformance_catalog
    plan = FaultPlan(rate=1.0, kinds=["corrupt"], spread=True, max_faults=1)
    with FaultProxy(c.plain.host, plan) as proxy, RegistryClient() as client:
        repo = client.repository(ImageReference(proxy.host, "library/single", "1"))
        with pytest.raises(NotFoundError):
            repo.get_manifest("no-such-tag")
        assert proxy.fault_counts() == {}
        repo.get_manifest(c.single.digest)  # corrupt once, then fetched again
        assert proxy.fault_counts() == {"corrupt": 1}
        assert [s.fault for s in proxy.seen if "/manifests/sha256:" in s.path] == ["corrupt", None]


def test_retries_are_bounded_in_attempts(conformance_catalog):
    plan = FaultPlan(rate=1.0, kinds=["502"], paths=r"/manifests/")
    retry = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.02)
    with (
        FaultProxy(conformance_catalog.plain.host, plan) as proxy,
        RegistryClient(retry=retry) as client,
    ):
        with pytest.raises(Exception, match="gave up after 4 attempts"):
            client.repository(ImageReference(proxy.host, "library/single", "1")).get_manifest("1")
        assert len([s for s in proxy.seen if "/manifests/" in s.path]) == 4


def test_retries_are_bounded_in_time(conformance_catalog):
    plan = FaultPlan(rate=1.0, kinds=["429"], paths=r"/manifests/")  # Retry-After: 1 each time
    retry = RetryPolicy(attempts=100, max_seconds=1.5)
    with (
        FaultProxy(conformance_catalog.plain.host, plan) as proxy,
        RegistryClient(retry=retry) as client,
    ):
        with pytest.raises(Exception, match="429"):
            client.repository(ImageReference(proxy.host, "library/single", "1")).get_manifest("1")
        attempts = len([s for s in proxy.seen if "/manifests/" in s.path])
    assert 2 <= attempts <= 3  # the time budget, not the 100 attempts, ended it


def test_wait_honours_retry_after_and_jitters_otherwise():
    from sealpy.core.transport.http.retry import TransientError

    client = RegistryClient(retry=RetryPolicy(initial_backoff=0.5, max_backoff=8, max_seconds=60))

    def wait(exc: Exception, attempt: int) -> float:
        return client.retrier.delay(exc, attempt)

    assert wait(TransientError("429", retry_after=7), 1) == 7
    assert wait(TransientError("429", retry_after=3600), 1) == 60  # never past the time budget
    waits = {wait(TransientError("503"), 3) for _ in range(50)}
    assert len(waits) > 10, "backoff is jittered"
    assert all(0 <= w <= 8 for w in waits)
    assert max(wait(TransientError("503"), 10) for _ in range(50)) <= 8


def test_the_retry_policy_retries_transient_failures_and_names_the_operation_when_it_gives_up():
    """The policy object other code reuses (the sync strategy's skopeo runs): only a
    TransientError is tried again, up to ``attempts``; then a RegistryError names what."""
    from sealpy.core.errors import RegistryError
    from sealpy.core.transport.http.retry import Retrier, TransientError

    retrier = Retrier(RetryPolicy(attempts=3, initial_backoff=0, max_backoff=0))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503 Service Unavailable")
        return "done"

    assert retrier.call("manifest 1", flaky) == "done" and len(calls) == 3

    def down() -> None:
        calls.append(1)
        raise TransientError("503 Service Unavailable")

    calls.clear()
    with pytest.raises(RegistryError, match=r"^blob x: 503 .*gave up after 3 attempts\)$"):
        retrier.call("blob x", down)
    assert len(calls) == 3
    calls.clear()

    def missing() -> None:
        calls.append(1)
        raise NotFoundError("not found")

    with pytest.raises(NotFoundError):
        retrier.call("blob y", missing)
    assert len(calls) == 1, "a permanent error is not retried"


def test_authorization_is_not_sent_to_another_host_after_a_redirect(conformance_catalog, tmp_path):
    c = conformance_catalog
    with RedirectingProxy(c.htpasswd.host, storage_credential=c.htpasswd.credential) as proxy:
        root = tmp_path / "registry"
        cache_with_proxy_strategy(
            ImageSet.of([ImageReference(proxy.host, "private/app", "1")]),
            root,
            credential=c.htpasswd.credential,
        )
        assert any(s.authorization for s in proxy.seen), "the registry itself got credentials"
    assert proxy.storage_saw_authorization and not any(proxy.storage_saw_authorization)
    assert DistributionLayout(root).resolve("private/app", "1") == c.private.digest
