"""Signatures, attestations, SBOMs and OCI referrers are carried into the registry
directory with their images (issue 19), by both built-in strategies, digests kept byte
for byte: what a stock registry serves from the directory is what the source had."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from _attach_support import (
    ReferrersFront,
    cosign_manifest,
    push_manifest,
    referrer_entry,
    referrer_manifest,
    referrers_index,
    referrers_tag,
    sign_all,
)

from sealpy.core import pipeline
from sealpy.core.cache.verify import verify_registry
from sealpy.core.errors import CacheError
from sealpy.core.image.media import Manifest
from sealpy.core.model import CacheOptions, ImageSet
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.testing.faultproxy import FaultProxy
from sealpy.core.testing.images import ImageFactory, TestImage, TestIndex
from sealpy.core.testing.registry import RegistryServer, skopeo
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

AMD64 = Platform.parse("linux/amd64")


@dataclass
class Source:
    """A registry holding images with attachments, and what each should carry."""

    registry: RegistryServer
    app: TestImage
    multi: TestIndex
    plain: TestImage
    expected: dict[str, dict[str, Manifest]]  # repository -> {tag or digest: manifest}
    not_carried: dict[str, list[str]]  # repository -> tags that must stay behind

    def for_strategy(self, strategy: str) -> Source:
        """What ``strategy`` carries: ``sync`` stores no index for one platform (skopeo
        copies the platform's manifest alone), so nothing attached to the index comes."""
        if strategy == "proxy":
            return self
        index_sig = f"{referrers_tag(self.multi.digest)}.sig"
        multi = dict(self.expected["att/multi"])
        del multi[index_sig]
        not_carried = {"att/multi": [*self.not_carried["att/multi"], index_sig]}
        return replace(
            self, expected={**self.expected, "att/multi": multi}, not_carried=not_carried
        )

    def ref(self, repository: str) -> str:
        return f"{self.registry.host}/{repository}:1"

    @property
    def refs(self) -> list[str]:
        return [self.ref("att/app"), self.ref("att/multi"), self.ref("att/plain")]


@pytest.fixture(scope="module")
def source(image_factory: ImageFactory, tmp_path_factory) -> Source:
    root = tmp_path_factory.mktemp("attach-source")
    with RegistryServer(root / "data", workdir=root / "work") as registry:
        host = registry.host
        app = image_factory.image("attach/app", [2048])
        image_factory.push(app, host, "att/app", "1")
        image_factory.push(app, host, "att/app", "2")  # two images of one repository
        app_attached = sign_all(image_factory, app.digest, host, "att/app")
        # A referrer with its referrers tag (the registry has no referrers API).
        sbom = referrer_manifest(image_factory, app.manifest, "app-sbom")
        push_manifest(image_factory, sbom, host, "att/app", None)
        listing = referrers_index(image_factory, [sbom])
        push_manifest(image_factory, listing, host, "att/app", referrers_tag(app.digest))
        app_attached[referrers_tag(app.digest)] = listing
        app_attached[sbom.digest] = sbom

        multi = image_factory.multi_platform("attach/multi", ["linux/amd64", "linux/arm64"], [512])
        image_factory.push(multi, host, "att/multi", "1")
        multi_attached = sign_all(image_factory, multi.digest, host, "att/multi", ("sig",))
        amd = multi.for_platform("linux/amd64").digest
        arm = multi.for_platform("linux/arm64").digest
        multi_attached |= sign_all(image_factory, amd, host, "att/multi", ("sig",))
        sign_all(image_factory, arm, host, "att/multi", ("sig",))  # arm64 is not cached

        plain = image_factory.image("attach/plain", [256])
        image_factory.push(plain, host, "att/plain", "1")
        yield Source(
            registry,
            app,
            multi,
            plain,
            {"att/app": app_attached, "att/multi": multi_attached},
            {"att/multi": [f"{referrers_tag(arm)}.sig"]},
        )


def cache(strategy: str, refs: list[str], out: Path, **options):
    options.setdefault("platforms", (AMD64,))
    return pipeline.cache(
        ImageSet.of(refs), out, strategy=strategy, options=CacheOptions(**options)
    )


def assert_served_byte_for_byte(out: Path, source: Source, start_registry) -> None:
    """A stock registry serving ``out`` returns every attachment with the source's bytes,
    blobs included, and nothing that was attached to a manifest not cached."""
    served = start_registry(out)
    with RegistryClient() as client:
        for repository, attached in source.expected.items():
            remote = client.repository(ImageReference(served.host, repository, "1"))
            for reference, manifest in attached.items():
                got = remote.get_manifest(reference)
                assert got.digest == manifest.digest and got.data == manifest.data, reference
                for blob in manifest.blobs:
                    url = f"http://{served.host}/v2/{repository}/blobs/{blob.digest}"
                    body = requests.get(url, timeout=10).content
                    assert "sha256:" + hashlib.sha256(body).hexdigest() == blob.digest
        for repository, tags in source.not_carried.items():
            remote = client.repository(ImageReference(served.host, repository, "1"))
            for tag in tags:
                assert remote.head_manifest(tag) is None, tag
    # skopeo, the reference client, reads the signature under the same digest.
    tag = f"{referrers_tag(source.app.digest)}.sig"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{served.host}/att/app:{tag}")
    assert raw.stdout == source.expected["att/app"][tag].data
    assert verify_registry(out).problems == ()


def expected_counts(strategy: str) -> dict[str, int]:
    """app: .sig .att .sbom and one referrer; multi: amd64's .sig, and the index's where
    the index is stored."""
    return {"att/app": 4, "att/multi": 2 if strategy == "proxy" else 1, "att/plain": 0}


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_signatures_attestations_sboms_and_referrers_are_carried_byte_for_byte(
    strategy, source: Source, tmp_path, start_registry
):
    out = tmp_path / "registry"
    report = cache(strategy, source.refs, out)
    assert_served_byte_for_byte(out, source.for_strategy(strategy), start_registry)
    counts = expected_counts(strategy)
    assert {image.repository: image.attachments for image in report.images} == counts
    assert f"{sum(counts.values())} attached" in report.summary()


def sealpy(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "sealpy.core", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=180,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def save_json(source: Source, out: Path, strategy: str, *extra: str) -> dict:
    context = out.parent / f"{out.name}-ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\n")
    done = sealpy(
        "registry",
        "save",
        "--json",
        "--strategy",
        strategy,
        "--platform",
        "linux/amd64",
        "--registry-dir",
        str(out),
        "--images",
        ",".join(source.refs),
        *extra,
        str(context),
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_the_json_report_counts_attachments_and_copy_signatures_false_copies_none(
    strategy, source: Source, tmp_path
):
    report = save_json(source, tmp_path / "on", strategy)
    counts = {i["stored_as"].split(":")[0]: i["attachments"] for i in report["images"]}
    assert counts == expected_counts(strategy)
    assert report["totals"]["attachments"] == sum(counts.values())

    off = save_json(source, tmp_path / "off", strategy, "--copy-signatures=false")
    assert [i["attachments"] for i in off["images"]] == [0, 0, 0]
    assert off["totals"]["attachments"] == 0
    layout = DistributionLayout(tmp_path / "off")
    assert layout.tags("att/app") == ["1"] and layout.tags("att/multi") == ["1"]
    sbom = source.expected["att/app"]
    assert not any(layout.has_blob(m.digest) for m in sbom.values())


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_referrers_the_api_lists_land_with_a_referrers_tag_written_for_them(
    strategy, image_factory: ImageFactory, tmp_path, start_registry
):
    """A source answering the referrers API (pages linked by Link): each referrer is
    copied by digest, and the directory — whose registry has no referrers API — gets the
    spec's referrers tag listing them, as a client pushing there must write it."""
    upstream = start_registry(tmp_path / "api-source")
    image = image_factory.image("attach/api", [300])
    image_factory.push(image, upstream.host, "api/app", "1")
    referrers = [referrer_manifest(image_factory, image.manifest, f"api-{n}") for n in range(3)]
    for referrer in referrers:
        push_manifest(image_factory, referrer, upstream.host, "api/app", None)
    entries = [referrer_entry(r) for r in referrers]
    with ReferrersFront(upstream.host, {image.digest: entries}, page_size=2) as front:
        out = tmp_path / "registry"
        report = cache(strategy, [f"{front.host}/api/app:1"], out)
    asked = [p for p in front.paths if "/referrers/" in p]
    assert asked == [f"/v2/api/app/referrers/{image.digest}", asked[1]] and "page=2" in asked[1]
    layout = DistributionLayout(out)
    for referrer in referrers:
        assert layout.stored_manifest("api/app", referrer.digest) == referrer
    tag = referrers_tag(image.digest)
    listing = layout.get_manifest("api/app", tag)
    assert listing.media_type == "application/vnd.oci.image.index.v1+json"
    # The entries as the API listed them (artifactType, annotations), in digest order.
    assert listing.json["manifests"] == sorted(entries, key=lambda e: e["digest"])
    assert sorted(e["digest"] for e in listing.json["manifests"]) == sorted(
        r.digest for r in referrers
    )
    assert {e["artifactType"] for e in listing.json["manifests"]} == {
        "application/vnd.example.sbom.v1"
    }
    served = start_registry(out)
    with RegistryClient() as client:
        got = client.repository(ImageReference(served.host, "api/app", tag)).get_manifest(tag)
    assert got.data == listing.data
    assert verify_registry(out).problems == ()
    assert report.images[0].attachments == 3


def test_a_registry_without_the_referrers_api_is_asked_once_and_tags_listed_once_per_repository(
    source: Source, tmp_path
):
    with FaultProxy(source.registry.host) as proxy:
        refs = [f"{proxy.host}/att/{name}" for name in ("app:1", "app:2", "multi:1", "plain:1")]
        report = cache("proxy", refs, tmp_path / "registry")
    paths = [s.path for s in proxy.seen]
    assert len([p for p in paths if "/referrers/" in p]) == 1  # a 404: no API, remembered
    listed = sorted(p for p in paths if p.endswith("/tags/list"))
    assert listed == ["/v2/att/app/tags/list", "/v2/att/multi/tags/list", "/v2/att/plain/tags/list"]
    assert [i.attachments for i in report.images] == [4, 4, 2, 0]


def test_without_a_tag_listing_each_candidate_tag_is_asked_with_a_head(
    source: Source, tmp_path, start_registry
):
    with ReferrersFront(source.registry.host, None, list_tags=False) as front:
        out = tmp_path / "registry"
        cache("proxy", [f"{front.host}/att/app:1"], out)
    stem = referrers_tag(source.app.digest)
    heads = {path for method, path in front.requests if method == "HEAD"}
    for tag in (f"{stem}.sig", f"{stem}.att", f"{stem}.sbom", stem):
        assert f"/v2/att/app/manifests/{tag}" in heads
    only_app = replace(source, expected={"att/app": source.expected["att/app"]}, not_carried={})
    assert_served_byte_for_byte(out, only_app, start_registry)


def test_an_attachment_that_cannot_be_copied_fails_its_image(
    image_factory: ImageFactory, tmp_path, start_registry
):
    upstream = start_registry(tmp_path / "broken-source")
    image = image_factory.image("attach/broken", [100])
    image_factory.push(image, upstream.host, "bad/app", "1")
    signature = cosign_manifest(image_factory, "sig", "bad/app", image.digest, "broken")
    tag = f"{referrers_tag(image.digest)}.sig"
    push_manifest(image_factory, signature, upstream.host, "bad/app", tag)
    payload = signature.layers[0].digest
    hex_ = payload.split(":")[1]
    (upstream.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data").unlink()

    ref = f"{upstream.host}/bad/app:1"
    with pytest.raises(CacheError) as failure:
        cache("proxy", [ref], tmp_path / "registry", retry=_fast_retry())
    message = str(failure.value)
    assert message.startswith(ref) and "attachment not copied" in message and tag in message
    # Without signatures, the image alone is cached.
    report = cache("proxy", [ref], tmp_path / "registry", copy_signatures=False)
    assert report.images[0].digest == image.digest and report.images[0].attachments == 0


def _fast_retry():
    from sealpy.core.model import RetryPolicy

    return RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.05, max_seconds=10)


def test_a_warm_sync_run_carries_attachments_an_earlier_run_left_out(source: Source, tmp_path):
    """Nothing for skopeo to copy (no local registry runs): the attachments are written
    into the directory with the engine, as proxy writes them."""
    out = tmp_path / "registry"
    cache("sync", source.refs, out, copy_signatures=False)
    app_sig = f"{referrers_tag(source.app.digest)}.sig"
    assert DistributionLayout(out).resolve("att/app", app_sig) is None

    warm = cache("sync", source.refs, out)
    assert DistributionLayout(out).resolve("att/app", app_sig) == (
        source.expected["att/app"][app_sig].digest
    )
    assert verify_registry(out).problems == ()
    assert {i.repository: i.attachments for i in warm.images} == expected_counts("sync")


def test_the_referrers_tag_follows_the_spec_truncation_rules():
    from sealpy.core.transport.attachments import referrers_tag as tag_of

    assert tag_of("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert tag_of("sha512:" + "b" * 128) == "sha512-" + "b" * 64
    odd = "test+algorithm+using+algorithm+separators+and+lots:alsoSome=InTheEncoded"
    assert tag_of(odd) == "test-algorithm-using-algorithm-s-alsoSome-InTheEncoded"
