"""The proxy strategy beyond the conformance suite: lying sources, conflicts, platforms,
resuming, mirrors, and running without any binary on PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.errors import CacheError
from sealpy.core.image.media import digest_hex, sha256_digest
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.registries import RegistriesConfig
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.testing.registry import skopeo_pull
from sealpy.core.transport.distribution import PARTIAL_PREFIX, DistributionLayout


def proxy(images: ImageSet, out: Path, **options) -> object:
    options.setdefault("platforms", (AMD64,))
    return pipeline.cache(images, out, strategy="proxy", options=CacheOptions(**options))


def blob_file(root: Path, digest: str) -> Path:
    hex_ = digest_hex(digest)
    return root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def assert_every_blob_verified(root: Path) -> None:
    layout = DistributionLayout(root)
    for digest in layout.blob_digests():
        assert sha256_digest(layout.read_blob(digest)) == digest, f"corrupt blob at {digest}"


def test_a_lying_source_fails_and_writes_nothing_corrupt(image_factory, tmp_path, start_registry):
    image = image_factory.image("proxy/liar", [3000, 4000])
    source = start_registry(tmp_path / "liar-root")
    image_factory.push(image, source.host, "library/liar", "1")
    # The source registry now serves other bytes under the layer's digest.
    layer = image.layers[1].digest
    stored = blob_file(source.root, layer)
    stored.write_bytes(bytes(b ^ 0xFF for b in stored.read_bytes()))

    out = tmp_path / "registry"
    ref = f"{source.host}/library/liar:1"
    with pytest.raises(CacheError) as failure:
        proxy(ImageSet.of([ref]), out, retry=_fast_retry())
    message = str(failure.value)
    assert ref in message and layer in message and "digest" in message
    assert not blob_file(out, layer).exists()
    assert DistributionLayout(out).tags("library/liar") == []  # no tag for an incomplete image
    assert_every_blob_verified(out)


def _fast_retry():
    from sealpy.core.model import RetryPolicy

    return RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05, max_seconds=20)


def test_two_sources_for_one_tag_with_different_content_conflict(
    image_factory, tmp_path, start_registry
):
    a = image_factory.image("proxy/conflict-a", [100])
    b = image_factory.image("proxy/conflict-b", [100])
    first = start_registry(tmp_path / "first")
    second = start_registry(tmp_path / "second")
    image_factory.push(a, first.host, "team/app", "1")
    image_factory.push(b, second.host, "team/app", "1")
    out = tmp_path / "registry"
    with pytest.raises(CacheError) as failure:
        proxy(ImageSet.of([f"{first.host}/team/app:1", f"{second.host}/team/app:1"]), out)
    assert "team/app:1" in str(failure.value) and "different content" in str(failure.value)
    assert DistributionLayout(out).tags("team/app") == []


def test_two_sources_with_the_same_content_share_the_tag(image_factory, tmp_path, start_registry):
    a = image_factory.image("proxy/same", [100])
    first = start_registry(tmp_path / "first")
    second = start_registry(tmp_path / "second")
    image_factory.push(a, first.host, "team/app", "1")
    image_factory.push(a, second.host, "team/app", "1")
    out = tmp_path / "registry"
    report = proxy(ImageSet.of([f"{first.host}/team/app:1", f"{second.host}/team/app:1"]), out)
    assert {i.digest for i in report.images} == {a.digest}
    assert DistributionLayout(out).resolve("team/app", "1") == a.digest


def test_no_matching_platform_lists_what_the_image_has(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    ref = c.ref(c.plain, "library/multi")
    with pytest.raises(CacheError) as failure:
        proxy(ImageSet.of([ref]), tmp_path / "registry", platforms=(Platform.parse("linux/s390x"),))
    message = str(failure.value)
    assert str(ref) in message
    assert "linux/s390x" in message and "linux/amd64" in message and "linux/arm/v7" in message


def test_arm64_without_variant_matches_an_index_entry_declaring_v8(
    image_factory, tmp_path, start_registry
):
    index = image_factory.multi_platform("proxy/v8", ["linux/amd64", "linux/arm64/v8"], [64])
    source = start_registry(tmp_path / "src")
    image_factory.push(index, source.host, "library/v8", "1")
    out = tmp_path / "registry"
    report = proxy(
        ImageSet.of([f"{source.host}/library/v8:1"]),
        out,
        platforms=(Platform.parse("linux/arm64"),),
    )
    assert report.images[0].platforms == ("linux/arm64/v8",)
    arm = index.for_platform("linux/arm64/v8")
    assert DistributionLayout(out).stored_manifest("library/v8", arm.digest) is not None


def test_missing_tag_is_an_error_naming_the_image(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    ref = c.ref(c.plain, "library/single", "no-such-tag")
    with pytest.raises(CacheError) as failure:
        proxy(ImageSet.of([ref]), tmp_path / "registry")
    assert str(ref) in str(failure.value) and "not found" in str(failure.value)


def test_one_failing_image_does_not_stop_the_others(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    good = c.ref(c.plain, "library/single")
    bad = c.ref(c.plain, "library/absent")
    out = tmp_path / "registry"
    with pytest.raises(CacheError) as failure:
        proxy(ImageSet.of([good, bad]), out)
    assert "1 of 2" not in str(failure.value)  # a single failure is reported on its own
    assert str(bad) in str(failure.value)
    assert failure.value.report.images[0].digest == c.single.digest
    assert DistributionLayout(out).resolve("library/single", "1") == c.single.digest


def test_a_partial_blob_from_an_interrupted_run_is_resumed(image_factory, tmp_path, start_registry):
    image = image_factory.image("proxy/resume", [200_000])
    source = start_registry(tmp_path / "src")
    image_factory.push(image, source.host, "library/resume", "1")
    layer = image.layers[0].descriptor
    content = image_factory.layout.read_blob(layer.digest)
    out = tmp_path / "registry"
    partial = (
        out
        / "docker/registry/v2/repositories/library/resume/_uploads"
        / f"{PARTIAL_PREFIX}{digest_hex(layer.digest)}"
        / "data"
    )
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content[: len(content) // 2])

    report = proxy(ImageSet.of([f"{source.host}/library/resume:1"]), out)
    fetched = report.images[0].bytes_fetched
    assert fetched == len(content) - len(content) // 2 + image.config.size
    assert blob_file(out, layer.digest).read_bytes() == content
    assert not partial.parent.exists()


def test_a_corrupt_partial_blob_is_fetched_again(image_factory, tmp_path, start_registry):
    image = image_factory.image("proxy/corrupt-partial", [50_000])
    source = start_registry(tmp_path / "src")
    image_factory.push(image, source.host, "library/cp", "1")
    layer = image.layers[0].descriptor
    out = tmp_path / "registry"
    partial = (
        out
        / "docker/registry/v2/repositories/library/cp/_uploads"
        / f"{PARTIAL_PREFIX}{digest_hex(layer.digest)}"
        / "data"
    )
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)  # not the blob's first bytes
    proxy(ImageSet.of([f"{source.host}/library/cp:1"]), out)
    assert sha256_digest(blob_file(out, layer.digest).read_bytes()) == layer.digest


def test_mirror_flag_fetches_from_the_mirror_and_keeps_the_name(
    conformance_catalog: Catalog, tmp_path, start_registry
):
    c = conformance_catalog
    out = tmp_path / "registry"
    registries = RegistriesConfig.load(mirrors=[f"docker.io=http://{c.plain.host}"], paths=[])
    report = proxy(
        ImageSet.of(["docker.io/library/single:1", "single:1"]), out, registries=registries
    )
    assert {(i.repository, i.tag, i.digest) for i in report.images} == {
        ("library/single", "1", c.single.digest)
    }
    server = start_registry(out)
    assert (
        skopeo_pull(f"docker://{server.host}/library/single:1", tmp_path / "pull")
        == c.single.digest
    )


def test_registries_conf_mirror_and_location(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "example.invalid/mirrored"\nlocation = "{c.plain.host}/library"\n'
        f'[[registry]]\nprefix = "quay.io"\n[[registry.mirror]]\nlocation = "{c.plain.host}"\ninsecure = true\n'
    )
    registries = RegistriesConfig.load(environ={"CONTAINERS_REGISTRIES_CONF": str(conf)})
    out = tmp_path / "registry"
    report = proxy(
        ImageSet.of(["example.invalid/mirrored/single:1", "quay.io/library/shared:1"]),
        out,
        registries=registries,
    )
    stored = {(i.repository, i.digest) for i in report.images}
    assert stored == {("mirrored/single", c.single.digest), ("library/shared", c.shared.digest)}


def test_proxy_needs_no_binaries(conformance_catalog: Catalog, tmp_path):
    """`sealpy registry save` with the proxy strategy on a PATH without skopeo or docker-registry."""
    c = conformance_catalog
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": str(bindir)}
    result = subprocess.run(
        [
            str(bindir / "sealpy"),
            "registry",
            "save",
            "--strategy",
            "proxy",
            "--platform",
            "linux/amd64",
            "--images",
            str(c.ref(c.plain, "library/single")),
            str(context),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        DistributionLayout(context / "registry").resolve("library/single", "1") == c.single.digest
    )


def test_image_reference_with_tag_and_digest_is_fetched_by_digest(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    # The tag points elsewhere at the source: the digest wins and the tag is set to it.
    ref = ImageReference(c.plain.host, "library/shared", "1", c.single.digest)
    with pytest.raises(CacheError):
        proxy(ImageSet.of([ref]), tmp_path / "registry")  # that digest is not in library/shared
    ref = ImageReference(c.plain.host, "library/single", "latest-pinned", c.single.digest)
    report = proxy(ImageSet.of([ref]), tmp_path / "registry")
    assert (report.images[0].tag, report.images[0].digest) == ("latest-pinned", c.single.digest)


def test_a_warm_rerun_sends_no_blob_request(conformance_catalog: Catalog, tmp_path):
    """Counted on the wire: the second run asks for manifests only."""
    from sealpy.core.testing.faultproxy import FaultProxy

    c = conformance_catalog
    out = tmp_path / "registry"
    with FaultProxy(c.plain.host) as wire:
        refs = [
            ImageReference(wire.host, "library/single", "1"),
            ImageReference(wire.host, "library/multi", "1"),
        ]
        proxy(ImageSet.of(refs), out)
        assert any("/blobs/" in s.path for s in wire.seen)
        wire.seen.clear()
        proxy(ImageSet.of(refs), out)
        assert wire.seen, "the source is still asked what the tags point to"
        assert [s.path for s in wire.seen if "/blobs/" in s.path] == []
        # Besides manifests: what is attached is asked again (a tag list, referrers).
        discovery = ("/tags/list", "/referrers/")
        assert all(
            "/manifests/" in s.path or s.path == "/v2/" or any(d in s.path for d in discovery)
            for s in wire.seen
        )


def test_build_with_the_proxy_strategy_needs_no_binaries(conformance_catalog: Catalog, tmp_path):
    c = conformance_catalog
    context = tmp_path / "ctx"
    (context / "images" / "shim").mkdir(parents=True)
    (context / "images" / "shim" / "list.txt").write_text(f"{c.ref(c.plain, 'library/single')}\n")
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    bindir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bindir / "sealpy"),
            "build",
            "--strategy",
            "proxy",
            "--platform",
            "linux/amd64",
            "-t",
            "nobin",
            "--root",
            str(tmp_path / "store"),
            str(context),
        ],
        env={**os.environ, "PATH": str(bindir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Successfully tagged localhost/nobin:latest" in result.stdout


def _links(root: Path) -> dict[str, bytes]:
    repositories = root / "docker/registry/v2/repositories"
    return {str(p.relative_to(repositories)): p.read_bytes() for p in repositories.rglob("link")}


def test_link_files_are_exactly_what_a_stock_registry_writes(
    conformance_catalog: Catalog, tmp_path, start_registry
):
    """The same images pushed to a stock docker-registry (by skopeo) and cached by the proxy
    strategy: the same link files, at the same paths, with the same bytes (no newline)."""
    from sealpy.core.testing.registry import skopeo

    c = conformance_catalog
    stock = start_registry(tmp_path / "stock")
    for repository in ("library/single", "library/multi"):
        skopeo(
            "copy",
            "--all",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{c.plain.host}/{repository}:1",
            f"docker://{stock.host}/{repository}:1",
        )
    out = tmp_path / "registry"
    refs = [c.ref(c.plain, "library/single"), c.ref(c.plain, "library/multi")]
    proxy(ImageSet.of(refs), out, all_platforms=True)

    written, expected = _links(out), _links(stock.root)
    assert written == expected
    for index in (c.single.digest, c.multi.digest):
        repository = "single" if index == c.single.digest else "multi"
        tag_index = f"library/{repository}/_manifests/tags/1/index/sha256/{digest_hex(index)}/link"
        assert written[tag_index] == index.encode()
    assert all(re.fullmatch(rb"sha256:[0-9a-f]{64}", data) for data in written.values())
