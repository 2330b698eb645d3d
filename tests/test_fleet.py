"""A CI fleet for real: three ``sealpy registry save`` processes at once through a stock
``docker-registry`` in pull-through mode (their mirror, from registries.conf), then a
fourth; each with its own empty HOME and XDG_CACHE_HOME, as on separate machines. The
upstream sits behind a counting proxy (the kit: ``sealpy.core.testing.fleet``)."""

from __future__ import annotations

from pathlib import Path

from sealpy.core.testing.fleet import run_fleet


def test_a_fleet_pulls_through_one_registry_and_a_later_builder_costs_the_upstream_no_blob(
    image_factory, tmp_path: Path
):
    fleet = run_fleet(tmp_path / "fleet", image_factory, images=6, concurrent=3)
    for build in fleet.builds:
        assert build.code == 0, build.stderr
        assert build.verified, f"{build.name}: registry verify failed"
        assert set(build.digests) == set(fleet.images)
        assert build.digests == {ref: image.digest for ref, image in fleet.images.items()}
        assert build.served_by == {fleet.pull_through}, build.served_by
    assert fleet.after.upstream_blob_requests == 0
    summary = fleet.summary()
    print(
        f"\nupstream blob GETs, all {summary['builders']} builds: {summary['upstream_blob_gets']} "
        f"({summary['upstream_blob_bytes']} bytes), blob HEADs {summary['upstream_blob_heads']}; "
        f"each build needed {summary['blobs_needed_per_build']} blobs "
        f"({summary['bytes_needed_per_build']} bytes), {summary['blobs_needed_all_builds']} in "
        f"all; upstream requests of any kind: {summary['upstream_requests']}"
    )
    # Every blob came from the upstream (the pull-through registry started empty). How
    # often distribution fetched each for the builders that ran together is its own
    # affair: reported above, not assumed.
    assert fleet.upstream_blob_gets >= summary["blobs_needed_per_build"]
