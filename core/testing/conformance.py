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

Multi-platform images without ``--all`` may be stored two ways, and both pass: the
index unchanged with only the selected child (``proxy``, Sealos's old proxy), or the
selected child's manifest under the tag (``sync``, skopeo's behaviour). Blobs of other
platforms must not be stored either way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import AnonymousCredentials, ConfiguredCredentials, Credential
from sealpy.core.errors import CacheError
from sealpy.core.model import (
    ArchiveEntry,
    CacheOptions,
    CacheReport,
    ImageSet,
    Location,
    RequiredImage,
)
from sealpy.core.plugins import new_plugin_manager
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.testing.images import ImageFactory, TestImage, TestIndex
from sealpy.core.testing.registry import RegistryServer, skopeo_manifest_digest, skopeo_pull
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.media import Manifest
from sealpy.core.transport.remote import RegistryClient

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


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
    factory.push(single, plain.host, "library/single", "1")
    factory.push(shared, plain.host, "library/shared", "1")
    factory.push(docker, plain.host, "library/docker", "1")
    factory.push(multi, plain.host, "library/multi", "1")
    factory.push(docker_list, plain.host, "library/dockerlist", "1")
    for server in (htpasswd, token):
        with RegistryClient(credentials=ConfiguredCredentials(creds=server.credential)) as client:
            factory.push(private, server.host, "private/app", "1", client=client)
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
    )


def image_set(refs: Sequence[ImageReference], archives: Sequence[ArchiveEntry] = ()) -> ImageSet:
    where = (Location("<conformance>"),)
    return ImageSet(
        images=tuple(RequiredImage(r, where) for r in sorted(set(refs), key=str)),
        archives=tuple(archives),
    )


class StrategyConformance:
    """Cases every strategy must pass. Set ``strategy``; ``plugins`` registers plugin
    modules that are not installed through entry points."""

    strategy: ClassVar[str] = ""
    plugins: ClassVar[tuple[object, ...]] = ()

    # --- helpers -----------------------------------------------------------------------

    def cache(
        self,
        images: ImageSet,
        registry_dir: Path,
        *,
        platforms: Sequence[Platform] = (AMD64,),
        all_platforms: bool = False,
        credential: Credential | None = None,
    ) -> CacheReport:
        manager = new_plugin_manager(self.plugins) if self.plugins else None
        options = CacheOptions(
            platforms=tuple(platforms),
            all_platforms=all_platforms,
            max_parallel=4,
            credentials=ConfiguredCredentials(creds=credential)
            if credential
            else AnonymousCredentials(),
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
