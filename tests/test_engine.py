"""The copy engine with in-memory ends: its promises checked directly, without a registry.

Dedup (each blob fetched once across all jobs), conflicts found before anything lands,
commit order (blobs, then children, then the index, then the tag), per-image counts that
add up to the run's, failures confined to the jobs they concern.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpy.core.errors import ConflictError, PlatformNotFoundError
from sealpy.core.progress import SilentProgress
from sealpy.core.reference import Platform
from sealpy.core.testing.memory import MemoryRepository
from sealpy.core.transport.copy import CopyJob, Received, copy_images

AMD64 = [Platform.parse("linux/amd64")]


@pytest.fixture
def source() -> MemoryRepository:
    return MemoryRepository("src")


@pytest.fixture
def destination(tmp_path: Path) -> MemoryRepository:
    return MemoryRepository("dst", scratch=tmp_path)


def job(label: str, source, reference: str, destination, tag: str | None = None, target=None):
    return CopyJob(label, source, reference, destination, tag=tag, target=target)


def test_a_blob_shared_by_several_images_is_fetched_once(source, destination):
    base = b"shared base layer"
    images = [source.add_image([base, f"app {i}".encode()]) for i in range(4)]
    jobs = [
        job(f"app{i}", source, m.digest, destination, tag=f"v{i}") for i, m in enumerate(images)
    ]
    outcome = copy_images(jobs, platforms=AMD64, max_parallel=4)
    assert not outcome.failures
    shared = images[0].layers[0].digest
    assert source.blob_fetches[shared] == 1
    assert max(source.blob_fetches.values()) == 1
    # The base layer and the config (the same for all four) are fetched for one image and
    # reused by the other three.
    fetched = sum(r.blobs_fetched for r in outcome.results)
    reused = sum(r.blobs_reused for r in outcome.results)
    assert fetched == len(source.blob_fetches)
    assert reused == 3 * 2
    assert {destination.tags[f"v{i}"] for i in range(4)} == {m.digest for m in images}


def test_blobs_the_destination_has_are_reused_not_fetched(source, destination):
    image = source.add_image([b"one", b"two"])
    destination.blobs[image.layers[0].digest] = b"one"
    outcome = copy_images([job("a", source, image.digest, destination)], platforms=AMD64)
    (result,) = outcome.results
    assert (result.blobs_fetched, result.blobs_reused) == (2, 1)  # config and "two"; "one"
    assert image.layers[0].digest not in source.blob_fetches
    assert result.bytes_fetched == len(b"two") + image.config.size


class CachingDestination(MemoryRepository):
    """A destination with a blob cache of its own: what the cache holds is copied from
    there (no read of the source) and reported as reused."""

    def __init__(self, name: str, *, scratch: Path, cache: dict[str, bytes]) -> None:
        super().__init__(name, scratch=scratch)
        self.cache = cache

    def receive_blob(self, descriptor, source, on_bytes=None):
        if descriptor.digest in self.cache:
            self.blobs[descriptor.digest] = self.cache[descriptor.digest]
            return Received.REUSED
        super().receive_blob(descriptor, source, on_bytes)
        return Received.FETCHED


def test_blobs_a_destination_takes_from_its_cache_count_as_reused(source, tmp_path):
    shared = b"cached base layer"
    first = source.add_image([shared, b"first app"])
    second = source.add_image([shared, b"second app"])
    cached = first.layers[0]
    destination = CachingDestination(
        "dst", scratch=tmp_path, cache={cached.digest: source.blobs[cached.digest]}
    )
    jobs = [
        job("first", source, first.digest, destination),
        job("second", source, second.digest, destination),
    ]
    outcome = copy_images(jobs, platforms=AMD64, max_parallel=2)
    assert not outcome.failures
    assert cached.digest not in source.blob_fetches
    # The shared layer comes from the cache once and is reused by the other image; the
    # config (the same for both) is fetched once; each image's own layer is fetched.
    fetched = sum(r.blobs_fetched for r in outcome.results)
    reused = sum(r.blobs_reused for r in outcome.results)
    assert (fetched, reused) == (3, 3)
    assert fetched == len(source.blob_fetches)
    fetched_bytes = first.config.size + first.layers[1].size + second.layers[1].size
    assert sum(r.bytes_fetched for r in outcome.results) == fetched_bytes
    assert destination.blobs[cached.digest] == shared


def test_blobs_then_children_then_index_then_tag(source, destination):
    amd = source.add_image([b"amd layer"], platform="linux/amd64")
    arm = source.add_image([b"arm layer"], platform="linux/arm64")
    index = source.add_index({"linux/amd64": amd, "linux/arm64": arm})
    source.tag("1", index)
    outcome = copy_images(
        [job("multi", source, "1", destination, tag="1")], platforms=AMD64, all_platforms=True
    )
    assert not outcome.failures
    events = destination.events
    last_blob = max(i for i, e in enumerate(events) if e.startswith("blob "))
    children = [events.index(f"manifest {m.digest}") for m in (amd, arm)]
    assert last_blob < min(children)
    assert max(children) < events.index(f"manifest {index.digest}")
    assert events[-1] == f"tag 1 {index.digest}"
    assert outcome.results[0].platforms == ("linux/amd64", "linux/arm64/v8")


def test_a_platform_is_chosen_from_an_index(source, destination):
    amd = source.add_image([b"amd layer"], platform="linux/amd64")
    arm = source.add_image([b"arm layer"], platform="linux/arm64")
    index = source.add_index({"linux/amd64": amd, "linux/arm64": arm})
    outcome = copy_images(
        [job("multi", source, index.digest, destination)], platforms=[Platform.parse("linux/arm64")]
    )
    assert not outcome.failures
    assert arm.digest in destination.manifests and amd.digest not in destination.manifests
    assert amd.layers[0].digest not in source.blob_fetches


def test_no_matching_platform_fails_the_job_naming_what_there_is(source, destination):
    index = source.add_index({"linux/arm64": source.add_image([b"x"], platform="linux/arm64")})
    outcome = copy_images([job("only-arm", source, index.digest, destination)], platforms=AMD64)
    (failure,) = outcome.failures
    assert isinstance(failure.error, PlatformNotFoundError)
    assert str(failure.error).startswith("only-arm: ")
    assert "linux/arm64" in str(failure.error)
    assert destination.events == []


def test_two_sources_for_one_target_conflict_before_anything_lands(source, destination):
    one = source.add_image([b"one"])
    two = source.add_image([b"two"])
    jobs = [
        job("a", source, one.digest, destination, tag="v1", target="app:v1"),
        job("b", source, two.digest, destination, tag="v1", target="app:v1"),
    ]
    outcome = copy_images(jobs, platforms=AMD64)
    assert not outcome.results
    assert {f.label for f in outcome.failures} == {"a", "b"}
    assert all(isinstance(f.error, ConflictError) for f in outcome.failures)
    assert not any(e.startswith(("manifest", "tag")) for e in destination.events)


def test_the_same_content_for_one_target_is_no_conflict(source, destination):
    image = source.add_image([b"same"])
    source.tag("v1", image)
    jobs = [
        job("by-tag", source, "v1", destination, tag="v1", target="app:v1"),
        job("by-digest", source, image.digest, destination, tag="v1", target="app:v1"),
    ]
    outcome = copy_images(jobs, platforms=AMD64)
    assert not outcome.failures and len(outcome.results) == 2


def test_a_failing_blob_fails_only_the_jobs_that_need_it(source, destination):
    bad = source.add_image([b"shared", b"broken"])
    good = source.add_image([b"fine"])
    also_bad = source.add_image([b"broken", b"other"])
    source.failing_blobs.add(bad.layers[1].digest)
    jobs = [
        job("bad", source, bad.digest, destination, tag="bad"),
        job("good", source, good.digest, destination, tag="good"),
        job("also-bad", source, also_bad.digest, destination, tag="also-bad"),
    ]
    outcome = copy_images(jobs, platforms=AMD64, max_parallel=2)
    assert [r.label for r in outcome.results] == ["good"]
    assert {f.label for f in outcome.failures} == {"bad", "also-bad"}
    assert all(bad.layers[1].digest in str(f.error) for f in outcome.failures)
    assert set(destination.tags) == {"good"}
    assert source.blob_fetches[bad.layers[1].digest] == 1


def test_a_lying_source_stores_nothing_under_the_digest(source, destination):
    image = source.add_image([b"honest", b"forged"])
    source.lying_blobs.add(image.layers[1].digest)
    outcome = copy_images([job("liar", source, image.digest, destination)], platforms=AMD64)
    (failure,) = outcome.failures
    assert image.layers[1].digest in str(failure.error)
    assert image.layers[1].digest not in destination.blobs
    assert image.digest not in destination.manifests


def test_a_missing_reference_fails_naming_the_image(source, destination):
    outcome = copy_images([job("ghost:1", source, "1", destination)], platforms=AMD64)
    (failure,) = outcome.failures
    assert str(failure.error).startswith("ghost:1: ")
    assert destination.events == []


def test_a_second_run_fetches_nothing(source, destination):
    images = [source.add_image([b"base", f"top {i}".encode()]) for i in range(3)]
    jobs = [job(f"i{i}", source, m.digest, destination, tag=f"t{i}") for i, m in enumerate(images)]
    copy_images(jobs, platforms=AMD64)
    fetches = sum(source.blob_fetches.values())
    outcome = copy_images(jobs, platforms=AMD64)
    assert sum(source.blob_fetches.values()) == fetches
    assert all(r.blobs_fetched == 0 and r.bytes_fetched == 0 for r in outcome.results)
    assert sum(r.blobs_reused for r in outcome.results) == sum(len(m.blobs) for m in images)


class _ConvertingSource(MemoryRepository):
    """Writes its blobs into the destination while it resolves, as a docker-archive source
    compresses its layers into the registry directory, and lists them in ``converted``."""

    def __init__(self, destination: MemoryRepository) -> None:
        super().__init__("archive")
        self.destination = destination
        self.converted: list = []

    def get_manifest(self, reference: str):
        manifest = super().get_manifest(reference)
        for blob in manifest.blobs:
            self.destination.blobs[blob.digest] = self.blobs[blob.digest]
            self.converted.append(blob)
        return manifest


class _RecordingProgress(SilentProgress):
    def __init__(self) -> None:
        self.done: dict[str, str] = {}

    def image_done(self, image: str, detail: str = "") -> None:
        self.done[image] = detail


def test_the_progress_line_and_the_result_count_a_converted_image_alike(destination):
    source = _ConvertingSource(destination)
    image = source.add_image([b"compressed while resolving"])
    progress = _RecordingProgress()
    outcome = copy_images(
        [job("docker-archive:app.tar", source, image.digest, destination)],
        platforms=AMD64,
        progress=progress,
    )
    (result,) = outcome.results
    assert (result.blobs_fetched, result.blobs_reused) == (2, 0)
    assert progress.done["docker-archive:app.tar"].startswith("2 blobs fetched, 0 reused")
    assert source.blob_fetches.total() == 0  # present already: nothing transferred


def test_destinations_that_do_not_share_a_blob_store_each_receive_the_blob(source, tmp_path):
    """Two remote repositories (or any two destinations without a common blob_scope) each
    need the blob: a transfer for one does not put it in the other."""
    base = b"shared base layer"
    first, second = (source.add_image([base, f"app {i}".encode()]) for i in range(2))
    one = MemoryRepository("one", scratch=tmp_path)
    two = MemoryRepository("two", scratch=tmp_path)
    jobs = [
        job("a", source, first.digest, one, tag="1"),
        job("b", source, second.digest, two, tag="1"),
    ]
    outcome = copy_images(jobs, platforms=AMD64, max_parallel=2)
    assert not outcome.failures
    shared = first.layers[0].digest
    assert shared in one.blobs and shared in two.blobs
    assert source.blob_fetches[shared] == 2
    assert all(r.blobs_reused == 0 for r in outcome.results)
