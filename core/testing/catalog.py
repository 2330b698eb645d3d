"""The conformance suite's test data and checks, for its cases and for any test that
wants the same images: the :class:`Catalog` (single- and multi-platform images, Docker
media types, shared layers, a fleet for the fault cases, ``tar.txt`` archives) pushed
once per session to real registries, how an :class:`ImageSet` is made of references, and
the checks every case ends with (:func:`registry_snapshot`,
:func:`assert_nothing_corrupt`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.cache.verify import verify_registry
from sealpy.core.model import ArchiveEntry, ImageSet, Location, RequiredImage
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.testing.images import ImageFactory, TestImage, TestIndex
from sealpy.core.testing.registry import RegistryServer
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
S390X = Platform("linux", "s390x")

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
