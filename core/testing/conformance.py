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

The suite is three modules by what they hold: the test data and end checks
(:mod:`.catalog`), the per-test state and helpers (:mod:`.conformance_base`), the fault
cases (:mod:`.conformance_faults`); this one holds the remaining cases and is the one to
import from.
"""

from __future__ import annotations

import json
import re

import pytest

from sealpy.core.auth import Credential
from sealpy.core.errors import CacheError, SealpyError
from sealpy.core.image.media import Manifest
from sealpy.core.model import (
    ArchiveEntry,
    Location,
    RetryPolicy,
)
from sealpy.core.reference import ImageReference
from sealpy.core.testing.catalog import (
    AMD64,
    ARM64,
    FLEET_ONE_KIND,
    FLEET_SIZE,
    S390X,
    Catalog,
    assert_nothing_corrupt,
    build_catalog,
    fault_workload,
    image_set,
    registry_snapshot,
)
from sealpy.core.testing.conformance_faults import FaultCases
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.registry import (
    skopeo_manifest_digest,
    skopeo_pull,
)
from sealpy.core.transport.distribution import DistributionLayout

# The suite, and the test data it shares (defined in catalog.py, importable from here).
__all__ = [
    "AMD64",
    "ARM64",
    "FLEET_ONE_KIND",
    "FLEET_SIZE",
    "S390X",
    "Catalog",
    "StrategyConformance",
    "assert_nothing_corrupt",
    "build_catalog",
    "fault_workload",
    "image_set",
    "registry_snapshot",
]


class StrategyConformance(FaultCases):
    """Cases every strategy must pass. Set ``strategy``; ``plugins`` registers plugin
    modules that are not installed through entry points."""

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
