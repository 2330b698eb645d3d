"""Faults between sealpy and a real registry (a scripted proxy in front of it): every
strategy completes through 15 % of failing requests with the same result as a clean run,
fails clearly past its retry budget, and never leaves wrong content at a final path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.errors import CacheError
from sealpy.core.model import CacheOptions, ImageSet, RetryPolicy
from sealpy.core.plugins import new_plugin_manager
from sealpy.core.reference import ImageReference
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.testing.faultproxy import FAULTS, FaultPlan, FaultProxy, RedirectingProxy
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient
from sealpy.core.verify import verify_registry

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "sealpy-example-strategy"))
import sealpy_example_strategy

STRATEGIES = ["proxy", "sync", "serial"]
FAST = RetryPolicy(
    attempts=8, initial_backoff=0.01, max_backoff=0.2, max_seconds=60, read_timeout=1.0
)


def snapshot(root: Path) -> dict:
    layout = DistributionLayout(root)
    return {
        "repositories": {
            repo: (
                {tag: layout.resolve(repo, tag) for tag in layout.tags(repo)},
                set(layout.revisions(repo)),
                set(layout.layer_links(repo)),
            )
            for repo in layout.repositories()
        },
        "blobs": set(layout.blob_digests()),
    }


def cache(
    strategy: str, images: ImageSet, out: Path, *, retry: RetryPolicy = FAST, credential=None
):
    options = CacheOptions(
        platforms=(AMD64,),
        max_parallel=4,
        retry=retry,
        credentials=ConfiguredCredentials(creds=credential)
        if credential
        else ConfiguredCredentials(environ={}),
    )
    return pipeline.cache(
        images,
        out,
        strategy=strategy,
        options=options,
        manager=new_plugin_manager([sealpy_example_strategy]),
    )


def images_behind(proxy: FaultProxy) -> ImageSet:
    return ImageSet.of(
        [
            ImageReference(proxy.host, "library/single", "1"),
            ImageReference(proxy.host, "library/multi", "1"),
            ImageReference(proxy.host, "library/docker", "1"),
        ]
    )


@pytest.fixture(scope="module")
def clean_results(conformance_catalog: Catalog, tmp_path_factory) -> dict[str, dict]:
    """Each strategy's result without faults, through a fault-free proxy."""
    out = {}
    with FaultProxy(conformance_catalog.plain.host) as proxy:
        for strategy in STRATEGIES:
            root = tmp_path_factory.mktemp(f"clean-{strategy}")
            cache(strategy, images_behind(proxy), root)
            out[strategy] = snapshot(root)
    return out


def assert_nothing_corrupt(root: Path) -> None:
    if not DistributionLayout(root).exists():
        return  # nothing written at all
    result = verify_registry(root)
    corrupt = [p for p in result.problems if "content has digest" in p.message]
    assert corrupt == []


KINDS = [k for k in FAULTS if k != "401"]  # 401 needs an auth registry: see the token test


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kinds", [[k] for k in KINDS] + [KINDS], ids=[*KINDS, "mixed"])
def test_fifteen_percent_failing_requests(
    conformance_catalog, clean_results, tmp_path, strategy, kinds
):
    plan = FaultPlan(
        rate=0.15, kinds=kinds, seed=hash((strategy, tuple(kinds))) & 0xFFFF, stall_seconds=1.5
    )
    root = tmp_path / "registry"
    with FaultProxy(conformance_catalog.plain.host, plan) as proxy:
        cache(strategy, images_behind(proxy), root)
    assert snapshot(root) == clean_results[strategy]
    assert_nothing_corrupt(root)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_token_expiring_mid_run(conformance_catalog, tmp_path, strategy):
    """401s after successes: the client fetches a new token and goes on."""
    c = conformance_catalog
    plan = FaultPlan(at={3: "401"}, paths=r"^/v2/.+/(manifests|blobs)/")
    root = tmp_path / "registry"
    with FaultProxy(c.token.host, plan) as proxy:
        cache(
            strategy,
            ImageSet.of([ImageReference(proxy.host, "private/app", "1")]),
            root,
            credential=c.token.credential,
        )
        assert len(proxy.faults) == 1
    assert DistributionLayout(root).resolve("private/app", "1") == c.private.digest


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_past_the_retry_budget_the_error_names_image_and_cause(
    conformance_catalog, tmp_path, strategy
):
    plan = FaultPlan(rate=1.0, kinds=["503"], paths=r"/blobs/")
    root = tmp_path / "registry"
    retry = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02, max_seconds=20)
    with FaultProxy(conformance_catalog.plain.host, plan) as proxy:
        ref = ImageReference(proxy.host, "library/single", "1")
        with pytest.raises(CacheError) as failure:
            cache(strategy, ImageSet.of([ref]), root, retry=retry)
    message = str(failure.value)
    assert str(ref) in message and "503" in message
    assert DistributionLayout(root).resolve("library/single", "1") is None
    assert_nothing_corrupt(root)


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
    import tenacity

    from sealpy.core.transport.remote import TransientError

    client = RegistryClient(retry=RetryPolicy(initial_backoff=0.5, max_backoff=8, max_seconds=60))

    def wait(exc: Exception, attempt: int) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, exc, True)
        return client._wait(state)

    assert wait(TransientError("429", retry_after=7), 1) == 7
    assert wait(TransientError("429", retry_after=3600), 1) == 60  # never past the time budget
    waits = {wait(TransientError("503"), 3) for _ in range(50)}
    assert len(waits) > 10, "backoff is jittered"
    assert all(0 <= w <= 8 for w in waits)
    assert max(wait(TransientError("503"), 10) for _ in range(50)) <= 8


def test_authorization_is_not_sent_to_another_host_after_a_redirect(conformance_catalog, tmp_path):
    c = conformance_catalog
    with RedirectingProxy(c.htpasswd.host, storage_credential=c.htpasswd.credential) as proxy:
        root = tmp_path / "registry"
        cache(
            "proxy",
            ImageSet.of([ImageReference(proxy.host, "private/app", "1")]),
            root,
            credential=c.htpasswd.credential,
        )
        assert any(s.authorization for s in proxy.seen), "the registry itself got credentials"
    assert proxy.storage_saw_authorization and not any(proxy.storage_saw_authorization)
    assert DistributionLayout(root).resolve("private/app", "1") == c.private.digest
