"""The ``fleet`` workload (issue 18): builders sharing one pull-through registry.

Three ``sealpy registry save`` processes at once, then a fourth, each with its own empty
``HOME`` and ``XDG_CACHE_HOME`` (separate machines), all reading ``images`` images through
a stock ``docker-registry`` in pull-through mode (their mirror, from a registries.conf) in
front of an upstream registry behind a counting proxy (``sealpy.core.testing.fleet``).

Reported: wall times (the three together, the fourth alone, each builder), and what the
upstream moved against what the builds needed: blob GETs and bytes across all four builds
vs the blobs and bytes each build needed times four, blob HEADs, every request, and the
fourth builder's upstream blob requests (0 when the pull-through registry served it all).
How often distribution fetches a blob for builders that ask for it at the same time is
its own behaviour (v2.8: it may fetch a blob once per concurrent asker, or more): the
numbers show it as it is.

    python benchmarks/fleet.py [--images 10] [--layer-kib 256] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sealpy.core.testing.fleet import run_fleet as _run_fleet
from sealpy.core.testing.images import ImageFactory


def run_fleet(scratch: Path, images: int = 10, *, layer_kib: int = 256) -> dict:
    """Run the four builds under ``scratch`` and return timings and upstream counts (see
    the module doc); every build must succeed and verify, and all must hold the same
    digests, or this raises."""
    scratch = Path(scratch)
    factory = ImageFactory(scratch / "images")
    fleet = _run_fleet(scratch / "run", factory, images=images, layer_size=layer_kib << 10)
    expected = {ref: image.digest for ref, image in fleet.images.items()}
    for build in fleet.builds:
        if build.code != 0 or not build.verified or build.digests != expected:
            raise RuntimeError(
                f"{build.name} failed (exit {build.code}, verified {build.verified}): "
                f"{build.stderr.strip()[-500:]}"
            )
    summary = fleet.summary()
    summary["layer_kib"] = layer_kib
    summary["served_by"] = sorted({s or "" for b in fleet.builds for s in b.served_by})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--layer-kib", type=int, default=256)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    if args.scratch is not None:
        result = run_fleet(args.scratch, args.images, layer_kib=args.layer_kib)
    else:
        with tempfile.TemporaryDirectory(prefix="sealpy-fleet-") as scratch:
            result = run_fleet(Path(scratch), args.images, layer_kib=args.layer_kib)
    print(json.dumps(result, indent=2))
    print(
        f"fleet: {result['builders']} builds of {result['images']} images; upstream sent "
        f"{result['upstream_blob_gets']} blobs ({result['upstream_blob_bytes'] / 2**20:.1f} MiB)"
        f" for builds needing {result['blobs_needed_all_builds']} "
        f"({result['bytes_needed_all_builds'] / 2**20:.1f} MiB); the fourth build: "
        f"{result['after_upstream_blob_requests']} upstream blob requests"
    )


if __name__ == "__main__":
    main()
