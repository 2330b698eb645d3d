"""The conformance suite's fault cases: a scripted FaultProxy between the strategy and the
registry — 15 % of requests failing (each kind in turn, then mixed) must give the result
of a fault-free run; past the retry budget the error names the image and the cause;
tokens fail, expire early, or really expire. See :mod:`sealpy.core.testing.conformance`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.errors import CacheError
from sealpy.core.model import (
    RetryPolicy,
)
from sealpy.core.reference import ImageReference
from sealpy.core.testing.catalog import (
    FLEET_ONE_KIND,
    FLEET_SIZE,
    Catalog,
    assert_nothing_corrupt,
    fault_workload,
    image_set,
    registry_snapshot,
)
from sealpy.core.testing.conformance_base import ConformanceBase
from sealpy.core.testing.faultproxy import BODY_FAULTS, FAULTS, FaultPlan, FaultProxy
from sealpy.core.testing.images import ImageFactory, TestImage
from sealpy.core.testing.registry import (
    RegistryServer,
    TokenServer,
)
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

# --- fault cases' settings ---------------------------------------------------------------
FAULT_RATE = 0.15
# 401 needs an auth registry: the token cases inject it. An endless body is no transient
# fault but a hostile source, an error of its own (tests/test_bounded_sync.py).
FAULT_KINDS = tuple(k for k in FAULTS if k not in ("401", "endless"))
# Mixed: the kinds take turns; body faults first, so each has GETs left to land on.
MIXED_KINDS = tuple(sorted(FAULT_KINDS, key=lambda k: k not in BODY_FAULTS))
MIN_FAULTS_PER_KIND = 4
STALL_SECONDS = 1.0
# Quick retries and a read timeout well under the stall, so faults cost little time.
FAULT_RETRY = RetryPolicy(
    attempts=8, initial_backoff=0.01, max_backoff=0.2, max_seconds=60, read_timeout=0.5
)


class FaultCases(ConformanceBase):
    """The fault cases (mixed into :class:`~sealpy.core.testing.conformance.StrategyConformance`)."""

    # --- faults (a FaultProxy between the strategy and the registry) --------------------

    @pytest.fixture(scope="class")
    @classmethod
    def fault_free_snapshots(cls, conformance_catalog: Catalog, tmp_path_factory) -> dict:
        """{fleet size: the fault workload cached through a proxy that injects nothing}."""
        snapshots = {}
        case = cls()
        state_dir = tmp_path_factory.mktemp("strategy-state")
        with pytest.MonkeyPatch.context() as env:
            for name, value in case.prepare(state_dir).items():
                env.setenv(name, value)
            try:
                for fleet in (FLEET_ONE_KIND, FLEET_SIZE):
                    root = tmp_path_factory.mktemp(f"fault-free-{cls.strategy}") / "registry"
                    with FaultProxy(conformance_catalog.plain.host) as proxy:
                        workload = fault_workload(conformance_catalog, proxy.host, fleet)
                        case.cache(workload, root, retry=FAULT_RETRY)
                    snapshots[fleet] = registry_snapshot(root)
            finally:
                case.finish(state_dir)
        return snapshots

    @pytest.mark.parametrize(
        "kinds", [(k,) for k in FAULT_KINDS] + [MIXED_KINDS], ids=[*FAULT_KINDS, "mixed"]
    )
    def test_fifteen_percent_of_requests_failing(
        self, conformance_catalog: Catalog, fault_free_snapshots, tmp_path, kinds
    ):
        c = conformance_catalog
        fleet = FLEET_ONE_KIND if len(kinds) == 1 else FLEET_SIZE
        plan = FaultPlan(rate=FAULT_RATE, kinds=kinds, spread=True, stall_seconds=STALL_SECONDS)
        root = tmp_path / "registry"
        with FaultProxy(c.plain.host, plan) as proxy:
            self.cache(fault_workload(c, proxy.host, fleet), root, retry=FAULT_RETRY)
        counts = proxy.fault_counts()
        if len(kinds) == 1:
            assert counts[kinds[0]] >= MIN_FAULTS_PER_KIND, counts
        else:
            assert set(counts) == set(kinds), f"kinds never injected: {set(kinds) - set(counts)}"
        assert registry_snapshot(root) == fault_free_snapshots[fleet]
        assert_nothing_corrupt(root)
        self.no_leftovers(root)

    @pytest.mark.parametrize("kind", ["503", "reset"])
    def test_past_the_retry_budget_the_error_names_image_and_cause(
        self, conformance_catalog: Catalog, tmp_path, kind
    ):
        """Every blob request fails: the run fails, naming the image and the last cause,
        and leaves no tag for the image and nothing corrupt."""
        plan = FaultPlan(rate=1.0, kinds=[kind], paths=r"/blobs/")
        root = tmp_path / "registry"
        retry = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02, max_seconds=20)
        with FaultProxy(conformance_catalog.plain.host, plan) as proxy:
            ref = ImageReference(proxy.host, "library/single", "1")
            with pytest.raises(CacheError) as failure:
                self.cache(image_set([ref]), root, retry=retry)
        message = str(failure.value)
        assert str(ref) in message, message
        cause = "503" if kind == "503" else "reset"
        assert cause in message.lower(), message
        assert not root.exists() or DistributionLayout(root).resolve("library/single", "1") is None
        assert_nothing_corrupt(root)

    def test_token_endpoint_failing_once(self, conformance_catalog: Catalog, tmp_path):
        c = conformance_catalog
        tokens: TokenServer = c.token.token_server  # type: ignore[attr-defined]
        asked = len(tokens.requests)
        tokens.fail_next.append(503)
        root = tmp_path / "registry"
        try:
            self.cache(
                image_set([c.ref(c.token, "private/app")]),
                root,
                credential=c.token.credential,
                retry=FAULT_RETRY,
            )
        finally:
            leftover, tokens.fail_next[:] = list(tokens.fail_next), []
        assert leftover == [], "the token server was never asked"
        assert len(tokens.requests) - asked >= 2, "the failed token request was not retried"
        assert DistributionLayout(root).resolve("private/app", "1") == c.private.digest
        assert_nothing_corrupt(root)

    def test_token_expiring_mid_run(self, conformance_catalog: Catalog, tmp_path):
        """A 401 after successes (the token expired early): a new token, and on."""
        c = conformance_catalog
        plan = FaultPlan(at={3: "401"}, paths=r"^/v2/.+/(manifests|blobs)/")
        root = tmp_path / "registry"
        with FaultProxy(c.token.host, plan) as proxy:
            self.cache(
                image_set([ImageReference(proxy.host, "private/app", "1")]),
                root,
                credential=c.token.credential,
                retry=FAULT_RETRY,
            )
        assert proxy.fault_counts() == Counter({"401": 1})
        assert DistributionLayout(root).resolve("private/app", "1") == c.private.digest
        assert_nothing_corrupt(root)

    @pytest.fixture(scope="class")
    @classmethod
    def short_lived_tokens(
        cls, image_factory: ImageFactory, conformance_catalog: Catalog, tmp_path_factory
    ) -> Iterator[tuple[RegistryServer, TokenServer, dict[str, TestImage]]]:
        """A token registry whose tokens live one second, holding a few fleet images
        under one repository (so one scope's token must be renewed)."""
        base = tmp_path_factory.mktemp(f"short-tokens-{cls.strategy}")
        user = conformance_catalog.token.credential
        assert user is not None  # the token registry always has one
        with TokenServer(base / "token", {user.username: user.password}, ttl=1) as tokens:
            server = RegistryServer(
                base / "root", workdir=base / "work", auth=tokens.auth_config(), credential=user
            )
            with server:
                images = dict(list(conformance_catalog.fleet.items())[:6])
                credentials = ConfiguredCredentials(creds=user, environ={})
                with RegistryClient(credentials=credentials) as client:
                    for i, image in enumerate(images.values()):
                        image_factory.push(
                            image, server.host, "private/fleet", str(i), client=client
                        )
                yield server, tokens, {str(i): image for i, image in enumerate(images.values())}

    def test_tokens_really_expire_and_are_renewed(self, short_lived_tokens, tmp_path):
        """Tokens live a second, every request takes 0.25 s: the registry refuses stale
        tokens, so the run completes only if the strategy gets new ones."""
        server, tokens, images = short_lived_tokens
        root = tmp_path / "registry"
        asked = len(tokens.requests)
        with FaultProxy(server.host, FaultPlan(latency=0.25)) as proxy:
            refs = [ImageReference(proxy.host, "private/fleet", tag) for tag in images]
            self.cache(image_set(refs), root, credential=server.credential, retry=FAULT_RETRY)
        layout = DistributionLayout(root)
        assert {tag: layout.resolve("private/fleet", tag) for tag in images} == {
            tag: image.digest for tag, image in images.items()
        }
        scopes = Counter(r.query.get("scope", "") for r in tokens.requests[asked:])
        assert scopes["repository:private/fleet:pull"] >= 2, f"no token renewed: {scopes}"
        assert_nothing_corrupt(root)
