"""The strategy conformance suite: one set of cases every caching strategy must pass.

Subclass :class:`StrategyConformance` in a test module of yours::

    pytest_plugins = ["sealpy.core.testing.pytest_plugin"]
    from sealpy.core.testing.conformance import StrategyConformance

    class TestMyStrategy(StrategyConformance):
        strategy = "mine"
        plugins = (my_plugin_module,)   # only if the plugin is not installed

Each case caches images from real registries (no auth, htpasswd, token auth) into a
fresh directory, then checks the result with the oracle: a stock ``docker-registry``
serves the directory and skopeo pulls every image, which must have the source's digests.

Fault cases put a scripted :class:`~sealpy.core.testing.faultproxy.FaultProxy` between
the strategy and the registry: 15 % of requests fail (each fault kind in turn, then all
mixed) and the result must equal a fault-free run; past the retry budget the error names
the image and the last cause; tokens fail, expire early or really expire (``ttl=1``). No
case may leave a blob with wrong content at a final path (checked with
:func:`sealpy.core.cache.verify.verify_registry`). Error-parity cases hold every strategy to the
same errors: two sources for one ``repository:tag`` with different content, a platform
the image lacks, a missing tag or image, a source sending wrong bytes.

Multi-platform images without ``--all`` may be stored two ways, and both pass: the
index unchanged with only the selected child (``proxy``, Sealos's old proxy), or the
selected child's manifest under the tag (``sync``, skopeo's behaviour). Blobs of other
platforms must not be stored either way.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import AnonymousCredentials, ConfiguredCredentials, Credential
from sealpy.core.cache.verify import verify_registry
from sealpy.core.errors import CacheError, SealpyError
from sealpy.core.image.media import Manifest
from sealpy.core.model import (
    ArchiveEntry,
    CacheOptions,
    CacheReport,
    ImageSet,
    Location,
    RequiredImage,
    RetryPolicy,
)
from sealpy.core.plugins import new_plugin_manager, strategy_registry
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.testing.faultproxy import BODY_FAULTS, FAULTS, FaultPlan, FaultProxy
from sealpy.core.testing.images import ImageFactory, TestImage, TestIndex
from sealpy.core.testing.registry import (
    RegistryServer,
    TokenServer,
    skopeo_manifest_digest,
    skopeo_pull,
)
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
S390X = Platform("linux", "s390x")

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
# Fleet images cached per run: one kind needs only MIN_FAULTS_PER_KIND faults (~50
# requests); mixed needs every kind to take a turn, ten faults at least (~100 requests).
FLEET_SIZE = 20
FLEET_ONE_KIND = 8


@dataclass
class Catalog:
    """Images pushed once per test session, for every strategy's cases."""

    plain: RegistryServer
    htpasswd: RegistryServer
    token: RegistryServer
    single: TestImage
    shared: TestImage
    docker: TestImage
    multi: TestIndex
    docker_list: TestIndex
    private: TestImage
    docker_archive: Path
    oci_archive: Path
    archive_image: TestImage
    # Small images for fault runs (enough requests that 15 % is many faults): repo -> image.
    fleet: dict[str, TestImage] = field(default_factory=dict)
    # library/single:1 on the htpasswd registry: other content than the plain one's.
    impostor: TestImage | None = None

    def ref(
        self,
        registry: RegistryServer,
        repository: str,
        tag: str | None = "1",
        digest: str | None = None,
    ) -> ImageReference:
        return ImageReference(registry.host, repository, tag, digest)


def build_catalog(
    factory: ImageFactory,
    plain: RegistryServer,
    htpasswd: RegistryServer,
    token: RegistryServer,
    workdir: Path,
) -> Catalog:
    base = factory.layer(8192, "conformance/base")
    single = factory.image("conformance/single", [base, 4096, 2048])
    shared = factory.image("conformance/shared", [base, 1024])
    docker = factory.image("conformance/docker", [3000, 1500], docker=True)
    multi = factory.multi_platform(
        "conformance/multi", ["linux/amd64", "linux/arm64", "linux/arm/v7"], [base, 2500]
    )
    docker_list = factory.multi_platform(
        "conformance/dockerlist", ["linux/amd64", "linux/arm64"], [1200], docker=True
    )
    private = factory.image("conformance/private", [2222])
    archive_image = factory.image("conformance/archive", [5000, 700])
    fleet_base = factory.layer(1500, "conformance/fleet-base")
    fleet = {
        f"fleet/app{i}": factory.image(f"conformance/fleet{i}", [fleet_base, 900, 600])
        for i in range(FLEET_SIZE)
    }
    impostor = factory.image("conformance/impostor", [4096])
    factory.push(single, plain.host, "library/single", "1")
    factory.push(shared, plain.host, "library/shared", "1")
    factory.push(docker, plain.host, "library/docker", "1")
    factory.push(multi, plain.host, "library/multi", "1")
    factory.push(docker_list, plain.host, "library/dockerlist", "1")
    for repository, image in fleet.items():
        factory.push(image, plain.host, repository, "1")
    for server in (htpasswd, token):
        with RegistryClient(credentials=ConfiguredCredentials(creds=server.credential)) as client:
            factory.push(private, server.host, "private/app", "1", client=client)
            if server is htpasswd:
                factory.push(impostor, server.host, "library/single", "1", client=client)
    workdir.mkdir(parents=True, exist_ok=True)
    docker_archive = factory.docker_archive(
        archive_image, workdir / "app-docker.tar", "archive/app:1"
    )
    oci_archive = factory.oci_archive(archive_image, workdir / "app-oci.tar")
    return Catalog(
        plain,
        htpasswd,
        token,
        single,
        shared,
        docker,
        multi,
        docker_list,
        private,
        docker_archive,
        oci_archive,
        archive_image,
        fleet,
        impostor,
    )


def image_set(refs: Sequence[ImageReference], archives: Sequence[ArchiveEntry] = ()) -> ImageSet:
    where = (Location("<conformance>"),)
    return ImageSet(
        images=tuple(RequiredImage(r, where) for r in sorted(set(refs), key=str)),
        archives=tuple(archives),
    )


def fault_workload(c: Catalog, host: str, fleet: int = FLEET_SIZE) -> ImageSet:
    """What the fault cases cache from ``host`` (a proxy in front of ``c.plain``): a
    multi-platform image, docker media types and ``fleet`` small images."""
    repositories = ["library/single", "library/multi", "library/docker", *list(c.fleet)[:fleet]]
    return image_set([ImageReference(host, repo, "1") for repo in repositories])


def registry_snapshot(root: Path) -> dict:
    """What a registry tree holds, independent of how and when it was written."""
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


def assert_nothing_corrupt(root: Path) -> None:
    """No blob with wrong content at a final path (the verify command's check)."""
    if not DistributionLayout(root).exists():
        return  # nothing written at all
    problems = verify_registry(root).problems
    corrupt = [str(p) for p in problems if "content has digest" in p.message]
    assert corrupt == [], corrupt


class StrategyConformance:
    """Cases every strategy must pass. Set ``strategy``; ``plugins`` registers plugin
    modules that are not installed through entry points."""

    strategy: ClassVar[str] = ""
    plugins: ClassVar[tuple[object, ...]] = ()

    # --- per-test state: override these for a strategy that keeps state of its own ------

    def prepare(self, state_dir: Path) -> Mapping[str, str]:
        """Called before each case with a fresh, empty ``state_dir``; returns environment
        variables to set for that case (restored afterwards). A strategy with a cache of
        its own points it there, so every case starts cold and none sees another's state::

            def prepare(self, state_dir):
                return {"MY_STRATEGY_CACHE": str(state_dir / "cache")}

        Default: the strategy's own
        :meth:`~sealpy.core.cache.strategy.CacheStrategy.state_environment`, which the
        benchmark uses too. The fault cases' fault-free reference run (one per class) is
        prepared once."""
        manager = new_plugin_manager(self.plugins) if self.plugins else None
        return strategy_registry(manager).get(self.strategy).state_environment(state_dir)

    def finish(self, state_dir: Path) -> None:
        """Called after each case (also a failed one): stop what :meth:`prepare` started.
        ``state_dir`` is removed by pytest later."""

    @pytest.fixture(autouse=True)
    def _strategy_state(self, tmp_path_factory, monkeypatch) -> Iterator[Path]:
        state_dir = tmp_path_factory.mktemp("strategy-state")
        for name, value in self.prepare(state_dir).items():
            monkeypatch.setenv(name, value)
        try:
            yield state_dir
        finally:
            self.finish(state_dir)

    # --- helpers -----------------------------------------------------------------------

    def cache(
        self,
        images: ImageSet,
        registry_dir: Path,
        *,
        platforms: Sequence[Platform] = (AMD64,),
        all_platforms: bool = False,
        credential: Credential | None = None,
        retry: RetryPolicy | None = None,
    ) -> CacheReport:
        manager = new_plugin_manager(self.plugins) if self.plugins else None
        options = CacheOptions(
            platforms=tuple(platforms),
            all_platforms=all_platforms,
            max_parallel=4,
            credentials=ConfiguredCredentials(creds=credential, environ={})
            if credential
            else AnonymousCredentials(),
            retry=retry or RetryPolicy(),
        )
        return pipeline.cache(
            images, registry_dir, strategy=self.strategy, options=options, manager=manager
        )

    @staticmethod
    def serve(registry_dir: Path, start_registry) -> RegistryServer:
        return start_registry(registry_dir)

    @staticmethod
    def pulled(
        server: RegistryServer, reference: str, tmp_path: Path, *, arch: str | None = None
    ) -> str:
        """Pull with skopeo (which verifies every blob) and return the manifest digest."""
        target = tmp_path / f"pull-{abs(hash((reference, arch)))}"
        if target.exists():
            shutil.rmtree(target)
        return skopeo_pull(f"docker://{server.host}/{reference}", target, override_arch=arch)

    @staticmethod
    def stored_blobs(registry_dir: Path) -> set[str]:
        return set(DistributionLayout(registry_dir).blob_digests())

    @staticmethod
    def no_leftovers(registry_dir: Path) -> None:
        """Nothing but the registry tree (no partial uploads, no config or log files)."""
        assert sorted(p.name for p in registry_dir.iterdir()) == ["docker"]
        uploads = [p for p in registry_dir.rglob("_uploads") if any(p.iterdir())]
        assert uploads == [], f"unfinished uploads left behind: {uploads}"

    # --- cases -------------------------------------------------------------------------

    def test_single_platform_image(self, conformance_catalog: Catalog, tmp_path, start_registry):
        c = conformance_catalog
        out = tmp_path / "registry"
        report = self.cache(image_set([c.ref(c.plain, "library/single")]), out)
        assert [(i.repository, i.tag, i.digest) for i in report.images] == [
            ("library/single", "1", c.single.digest)
        ]
        server = self.serve(out, start_registry)
        assert self.pulled(server, "library/single:1", tmp_path) == c.single.digest
        assert c.single.blob_digests <= self.stored_blobs(out)
        self.no_leftovers(out)

    def test_docker_media_types(self, conformance_catalog: Catalog, tmp_path, start_registry):
        c = conformance_catalog
        out = tmp_path / "registry"
        self.cache(image_set([c.ref(c.plain, "library/docker")]), out)
        server = self.serve(out, start_registry)
        assert self.pulled(server, "library/docker:1", tmp_path) == c.docker.digest

    def test_multi_platform_selected_platform_only(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        self.cache(image_set([c.ref(c.plain, "library/multi")]), out, platforms=[ARM64])
        server = self.serve(out, start_registry)
        arm = c.multi.for_platform("linux/arm64")
        tag_digest = skopeo_manifest_digest(f"docker://{server.host}/library/multi:1")
        # proxy keeps the (sparse) index, sync stores the platform's manifest: both valid.
        assert tag_digest in (c.multi.digest, arm.digest)
        assert self.pulled(server, "library/multi:1", tmp_path, arch="arm64") == arm.digest
        stored = self.stored_blobs(out)
        assert arm.blob_digests <= stored
        others = (
            c.multi.for_platform("linux/amd64").blob_digests
            | c.multi.for_platform("linux/arm/v7").blob_digests
        )
        assert not (others - arm.blob_digests) & stored, "blobs of unselected platforms were stored"

    def test_multi_platform_docker_list(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        self.cache(image_set([c.ref(c.plain, "library/dockerlist")]), out, platforms=[AMD64])
        server = self.serve(out, start_registry)
        amd = c.docker_list.for_platform("linux/amd64")
        assert self.pulled(server, "library/dockerlist:1", tmp_path, arch="amd64") == amd.digest

    def test_all_platforms_keep_the_index(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        report = self.cache(image_set([c.ref(c.plain, "library/multi")]), out, all_platforms=True)
        assert [i.digest for i in report.images] == [c.multi.digest]
        server = self.serve(out, start_registry)
        assert skopeo_manifest_digest(f"docker://{server.host}/library/multi:1") == c.multi.digest
        for image in c.multi.images:
            assert self.pulled(server, f"library/multi@{image.digest}", tmp_path) == image.digest
        assert c.multi.blob_digests <= self.stored_blobs(out)

    def test_several_platforms(self, conformance_catalog: Catalog, tmp_path, start_registry):
        c = conformance_catalog
        out = tmp_path / "registry"
        self.cache(image_set([c.ref(c.plain, "library/multi")]), out, platforms=[AMD64, ARM64])
        server = self.serve(out, start_registry)
        for platform in ("linux/amd64", "linux/arm64"):
            image = c.multi.for_platform(platform)
            assert self.pulled(server, f"library/multi@{image.digest}", tmp_path) == image.digest

    def test_digest_pinned_reference(self, conformance_catalog: Catalog, tmp_path, start_registry):
        c = conformance_catalog
        out = tmp_path / "registry"
        pinned = c.ref(c.plain, "library/multi", None, c.multi.digest)
        report = self.cache(image_set([pinned]), out)
        assert [(i.tag, i.digest) for i in report.images] == [(None, c.multi.digest)]
        server = self.serve(out, start_registry)
        assert (
            skopeo_manifest_digest(f"docker://{server.host}/library/multi@{c.multi.digest}")
            == c.multi.digest
        )
        amd = c.multi.for_platform("linux/amd64")
        assert (
            self.pulled(server, f"library/multi@{c.multi.digest}", tmp_path, arch="amd64")
            == amd.digest
        )
        assert DistributionLayout(out).tags("library/multi") == []

    def test_tag_and_digest_stores_both(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        ref = c.ref(c.plain, "library/single", "pinned", c.single.digest)
        self.cache(image_set([ref]), out)
        server = self.serve(out, start_registry)
        assert self.pulled(server, "library/single:pinned", tmp_path) == c.single.digest
        assert self.pulled(server, f"library/single@{c.single.digest}", tmp_path) == c.single.digest

    def test_shared_layers_are_stored_once(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        report = self.cache(
            image_set([c.ref(c.plain, "library/single"), c.ref(c.plain, "library/shared")]), out
        )
        assert sorted(i.repository for i in report.images) == ["library/shared", "library/single"]
        assert report.blobs_fetched == len(c.single.blob_digests | c.shared.blob_digests)
        server = self.serve(out, start_registry)
        assert self.pulled(server, "library/single:1", tmp_path) == c.single.digest
        assert self.pulled(server, "library/shared:1", tmp_path) == c.shared.digest

    @pytest.mark.parametrize("auth", ["htpasswd", "token"])
    def test_authenticated_source(
        self, conformance_catalog: Catalog, tmp_path, start_registry, auth
    ):
        c = conformance_catalog
        source = c.htpasswd if auth == "htpasswd" else c.token
        out = tmp_path / "registry"
        self.cache(image_set([c.ref(source, "private/app")]), out, credential=source.credential)
        server = self.serve(out, start_registry)
        assert self.pulled(server, "private/app:1", tmp_path) == c.private.digest

    @pytest.mark.parametrize("auth", ["htpasswd", "token"])
    def test_wrong_credentials_fail_naming_the_image(
        self, conformance_catalog: Catalog, tmp_path, auth
    ):
        c = conformance_catalog
        source = c.htpasswd if auth == "htpasswd" else c.token
        out = tmp_path / "registry"
        ref = c.ref(source, "private/app")
        with pytest.raises(CacheError) as failure:
            self.cache(image_set([ref]), out, credential=Credential("alice", "wrong-password"))
        assert str(ref) in str(failure.value)
        assert "wrong-password" not in str(failure.value)
        assert not out.exists() or c.private.blob_digests.isdisjoint(self.stored_blobs(out))

    def test_missing_image_fails_naming_the_image(self, conformance_catalog: Catalog, tmp_path):
        c = conformance_catalog
        ref = c.ref(c.plain, "library/does-not-exist")
        with pytest.raises(CacheError) as failure:
            self.cache(image_set([ref]), tmp_path / "registry")
        assert str(ref) in str(failure.value)

    def test_archives_from_tar_txt(self, conformance_catalog: Catalog, tmp_path, start_registry):
        c = conformance_catalog
        out = tmp_path / "registry"
        where = Location("images/skopeo/tar.txt", 1)
        archives = [
            ArchiveEntry(
                "docker-archive",
                c.docker_archive,
                ImageReference.parse("archive/from-docker:1"),
                where,
            ),
            ArchiveEntry(
                "oci-archive", c.oci_archive, ImageReference.parse("archive/from-oci:1"), where
            ),
        ]
        report = self.cache(image_set([], archives), out)
        # The docker-archive's layers are compressed into new blobs: work done, not reuse.
        docker = next(i for i in report.images if i.repository == "archive/from-docker")
        assert docker.blobs_fetched >= len(c.archive_image.layers)
        server = self.serve(out, start_registry)
        # The OCI archive's blobs are copied as they are: same digest.
        assert self.pulled(server, "archive/from-oci:1", tmp_path) == c.archive_image.digest
        # A docker-archive's layers are compressed on the way (digests differ between
        # tools): compare the uncompressed layer digests (diff_ids) of the config.
        pulled = tmp_path / "docker-archive-pull"
        skopeo_pull(f"docker://{server.host}/archive/from-docker:1", pulled)
        manifest = Manifest.parse((pulled / "manifest.json").read_bytes())
        config = json.loads((pulled / manifest.config.digest.split(":")[1]).read_bytes())
        assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in c.archive_image.layers]

    def test_warm_rerun_fetches_nothing(
        self, conformance_catalog: Catalog, tmp_path, start_registry
    ):
        c = conformance_catalog
        out = tmp_path / "registry"
        images = image_set([c.ref(c.plain, "library/single"), c.ref(c.plain, "library/multi")])
        first = self.cache(images, out)
        before = {p: p.stat().st_mtime_ns for p in (out / "docker/registry/v2/blobs").rglob("data")}
        second = self.cache(images, out)
        assert second.blobs_fetched == 0
        assert sorted((i.repository, i.digest) for i in second.images) == sorted(
            (i.repository, i.digest) for i in first.images
        )
        after = {p: p.stat().st_mtime_ns for p in (out / "docker/registry/v2/blobs").rglob("data")}
        assert after == before, "a warm re-run rewrote blobs"
        server = self.serve(out, start_registry)
        assert self.pulled(server, "library/single:1", tmp_path) == c.single.digest

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

    # --- error parity: every strategy fails the same way on the same bad input ----------

    def test_two_sources_for_one_tag_with_different_content(
        self, conformance_catalog: Catalog, tmp_path
    ):
        c = conformance_catalog
        refs = [c.ref(c.plain, "library/single"), c.ref(c.htpasswd, "library/single")]
        root = tmp_path / "registry"
        with pytest.raises(SealpyError) as failure:
            self.cache(image_set(refs), root, credential=c.htpasswd.credential)
        assert "library/single:1" in str(failure.value), str(failure.value)
        assert_nothing_corrupt(root)

    @pytest.mark.parametrize(
        "platforms", [(S390X,), (AMD64, S390X)], ids=["one-platform", "several-platforms"]
    )
    def test_no_matching_platform_lists_the_available_ones(
        self, conformance_catalog: Catalog, tmp_path, platforms
    ):
        c = conformance_catalog
        ref = c.ref(c.plain, "library/multi")
        with pytest.raises(SealpyError) as failure:
            self.cache(image_set([ref]), tmp_path / "registry", platforms=platforms)
        message = str(failure.value)
        assert str(ref) in message, message
        assert all(p in message for p in ("linux/amd64", "linux/arm64", "linux/arm/v7")), message
        root = tmp_path / "registry"
        assert not root.exists() or DistributionLayout(root).resolve("library/multi", "1") is None

    def test_missing_tag_fails_naming_the_image(self, conformance_catalog: Catalog, tmp_path):
        c = conformance_catalog
        ref = c.ref(c.plain, "library/single", "no-such-tag")
        with pytest.raises(CacheError) as failure:
            self.cache(image_set([ref]), tmp_path / "registry")
        assert str(ref) in str(failure.value)

    @pytest.mark.parametrize("paths", [r"/blobs/", r"/manifests/sha256:"], ids=["blob", "manifest"])
    def test_a_lying_source_fails_and_stores_nothing_corrupt(
        self, conformance_catalog: Catalog, tmp_path, paths
    ):
        """Every answer for a digest carries wrong bytes: an error naming the image and a
        digest mismatch, and nothing with wrong content at a final path."""
        c = conformance_catalog
        plan = FaultPlan(rate=1.0, kinds=["corrupt"], paths=paths)
        root = tmp_path / "registry"
        retry = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02, max_seconds=20)
        with FaultProxy(c.plain.host, plan) as proxy:
            ref = ImageReference(proxy.host, "library/multi", "1")
            with pytest.raises(CacheError) as failure:
                self.cache(image_set([ref]), root, retry=retry)
            assert proxy.fault_counts()["corrupt"] >= 1
        message = str(failure.value)
        assert str(ref) in message, message
        assert re.search(r"digest|does not match|mismatch", message, re.IGNORECASE), message
        assert not root.exists() or DistributionLayout(root).resolve("library/multi", "1") is None
        assert_nothing_corrupt(root)
