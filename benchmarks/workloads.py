"""The benchmark's workloads: what each one is, its size in each mode, and how it is
seeded into local registries with sealpy's test-image factory.

Sizes (one table, also in the README's "Benchmarks" section):

=============  ===================================  =================  ===============
workload       what                                  --quick            --full
=============  ===================================  =================  ===============
small          N images x 3 layers of 16 KiB         50                 50
large          N images x one layer of M MiB          3 x 100 MiB        4 x 250 MiB
shared         20 images on one 8 MiB base            same               same
multi          10 indexes x 3 platforms, --all        same               same
warm           small again, already cached            same               same
token          20 small images, token auth            same               same
small-N        the scale series (lan only)            200, 400           200, 800
wan: small, large (2 x 64 MiB) and token, through the wan proxy (network.py)
=============  ===================================  =================  ===============
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

MODES = {
    # The quick scale series stops at 400 images: the 800-image point alone took 3.6 of
    # the quick run's 17.8 minutes (quiet, 2026-12-03); the full run has it.
    "quick": {"large_images": 3, "large_mib": 100, "scale": (200, 400)},
    "full": {"large_images": 4, "large_mib": 250, "scale": (200, 800)},
}
WAN_LARGE = (2, 64)  # images, MiB: 100 Mbit/s makes anything larger slow to repeat
WAN_WORKLOADS = ("small", "large", "token")


@dataclass
class Workload:
    name: str
    description: str
    registry: str
    images: list[str]
    transfers: list[dict]
    all: bool = False
    warm: bool = False
    authfile: str | None = None
    bytes: int = 0
    profile: str = "lan"
    scale: bool = False  # one point of the scale series (no request count: as small's)

    @property
    def key(self) -> str:
        return self.name if self.profile == "lan" else f"{self.name}@{self.profile}"


def transfers_for(item, repository: str, all_platforms: bool) -> list[dict]:
    """The manifests and blobs a cache of ``item`` moves (for the limit and floor)."""
    from sealpy.core.testing.images import TestIndex

    def manifest(of) -> dict:
        return {
            "repository": repository,
            "digest": of.digest,
            "size": of.manifest.size,
            "manifest": True,
            "media_type": of.manifest.media_type,
        }

    out = [manifest(item)]
    images = item.images if isinstance(item, TestIndex) else [item]
    if isinstance(item, TestIndex) and not all_platforms:
        images = [item.for_platform("linux/amd64")]
    for image in images:
        if isinstance(item, TestIndex):
            out.append(manifest(image))
        out.append(
            {"repository": repository, "digest": image.config.digest, "size": image.config.size}
        )
        out += [
            {"repository": repository, "digest": layer.digest, "size": layer.descriptor.size}
            for layer in image.layers
        ]
    return out


def unique(transfers: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for t in transfers:
        seen.setdefault(t["digest"], t)
    return list(seen.values())


def through(workload: Workload, host: str, profile: str, authfile: str | None) -> Workload:
    """The same workload reached through ``host`` (a wan proxy) under ``profile``."""
    from sealpy.core.reference import ImageReference

    images = [
        str(ImageReference(host, ImageReference.parse(r).repository, "1")) for r in workload.images
    ]
    return replace(
        workload, registry=host, images=images, profile=profile, authfile=authfile or None
    )


def push_many(factory, items: dict, registry: str, client=None) -> None:
    """Push every item as ``<registry>/<repo>:1`` in one parallel copy (the factory's
    ``push`` does one image at a time: minutes for the 800-image scale point)."""
    from sealpy.core.errors import SealpyError
    from sealpy.core.reference import ImageReference
    from sealpy.core.transport.copy import CopyJob, copy_images
    from sealpy.core.transport.remote import RegistryClient, RemotePushDestination

    own = client is None
    client = client or RegistryClient()
    try:
        jobs = [
            CopyJob(
                label=f"{registry}/{repo}:1",
                source=factory.layout.image(""),
                reference=item.digest,
                destination=RemotePushDestination(
                    client.repository(ImageReference(registry, repo, "1"))
                ),
                tag="1",
            )
            for repo, item in items.items()
        ]
        outcome = copy_images(jobs, platforms=(), all_platforms=True, max_parallel=8)
    finally:
        if own:
            client.close()
    if outcome.failures:
        raise SealpyError(str(outcome.failures[0].error))


def seed_workloads(args, factory, plain, token, authfile: Path) -> list[Workload]:
    """Push every selected workload's images; the wan workloads are the lan ones (large:
    its own smaller images) reached later through a proxy (see :func:`through`)."""
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.remote import RegistryClient

    workloads: list[Workload] = []
    sizes = MODES[args.mode]

    def small_items(prefix: str, count: int) -> dict:
        return {
            f"{prefix}/app{i}": factory.image(f"bench/{prefix}/{i}", [16384, 16384, 16384])
            for i in range(count)
        }

    def large_items(prefix: str, count: int, mib: int) -> dict:
        return {
            f"{prefix}/app{i}": factory.image(
                f"bench/{prefix}/{i}",
                [factory.layer(mib << 20, f"bench/{prefix}/{i}", compression="none")],
            )
            for i in range(count)
        }

    def add(
        name, description, server, items, *, all_platforms=False, client=None, pushed=False, **extra
    ):
        if not pushed:
            print(f"seeding {name} ...", file=sys.stderr, flush=True)
            push_many(factory, items, server.host, client)
        refs = [f"{server.host}/{repo}:1" for repo in items]
        transfers = unique(
            [t for repo, item in items.items() for t in transfers_for(item, repo, all_platforms)]
        )
        workloads.append(
            Workload(
                name,
                description,
                server.host,
                refs,
                transfers,
                all_platforms,
                bytes=sum(t["size"] for t in transfers),
                **extra,
            )
        )

    wanted = set(args.workloads)
    small = small_items("small", args.small_images)
    if wanted & {"small", "warm"}:
        add("small", f"{args.small_images} images × 3 layers of 16 KiB", plain, small)
    if "large" in wanted:
        count, mib = sizes["large_images"], sizes["large_mib"]
        add(
            "large",
            f"{count} images × one {mib} MiB layer",
            plain,
            large_items("large", count, mib),
        )
    if "large" in wanted and "wan" in args.profiles:
        count, mib = WAN_LARGE
        add(
            "large",
            f"{count} images × one {mib} MiB layer",
            plain,
            large_items("wanlarge", count, mib),
            profile="wan",
        )
    if "shared" in wanted:
        base = factory.layer(8 << 20, "bench/shared-base")
        shared = {
            f"shared/app{i}": factory.image(f"bench/shared/{i}", [base, 65536]) for i in range(20)
        }
        add("shared", "20 images sharing an 8 MiB base layer, 64 KiB each on top", plain, shared)
    if "multi" in wanted:
        multi = {
            f"multi/app{i}": factory.multi_platform(
                f"bench/multi/{i}", ["linux/amd64", "linux/arm64", "linux/arm/v7"], [32768, 32768]
            )
            for i in range(10)
        }
        description = "10 indexes × 3 platforms × 2 layers of 32 KiB, --all"
        add("multi", description, plain, multi, all_platforms=True)
    if "warm" in wanted:
        smallest = next(w for w in workloads if w.name == "small")
        workloads.append(
            replace(
                smallest,
                name="warm",
                description=f"the small workload again, all {args.small_images} already cached",
                warm=True,
            )
        )
    if "token" in wanted:
        with RegistryClient(credentials=ConfiguredCredentials(authfile=authfile)) as client:
            add(
                "token",
                "20 images × 3 layers of 16 KiB from a token-auth registry",
                token,
                small_items("token", 20),
                client=client,
                authfile=str(authfile),
            )
    if "scale" in wanted and args.scale:
        # One push of the largest point; each smaller point is its first images (seeding
        # 200 more images cost more than the 200-image point's runs).
        items = small_items("scale", max(args.scale))
        print(f"seeding scale ({max(args.scale)} images) ...", file=sys.stderr, flush=True)
        push_many(factory, items, plain.host, None)
        for count in args.scale:
            add(
                f"small-{count}",
                f"{count} images × 3 layers of 16 KiB",
                plain,
                dict(list(items.items())[:count]),
                scale=True,
                pushed=True,
            )
    if "small" not in wanted:
        workloads = [w for w in workloads if w.name != "small"]
    return [w for w in workloads if w.profile == "lan" or w.name in wanted]
