"""``sealpy inspect --images``: the inventory of a built cluster image, read from the
registry tree in its layers — repositories, tags, digests, platforms, signatures."""

from __future__ import annotations

import json

from test_lockfile import PLATFORM, cli, context_with

from sealpy.core.image.compose import new_manifest
from sealpy.core.image.media import OCI_CONFIG, Descriptor, digest_hex
from sealpy.core.reference import ImageReference
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination


def push_signature(image_factory, registry: str, repository: str, signed: str) -> tuple[str, str]:
    """A plain manifest tagged ``sha256-<hex>.sig`` next to ``signed`` (cosign's scheme;
    the content need not be a real signature to be listed)."""
    payload_bytes = b'{"critical":{"image":{"docker-manifest-digest":"' + signed.encode() + b'"}}}'
    payload = image_factory.layout.put_blob_bytes(payload_bytes)
    config = image_factory.layout.put_blob_bytes(b"{}")
    manifest = new_manifest(
        Descriptor(OCI_CONFIG, config, 2),
        [
            Descriptor(
                "application/vnd.dev.cosign.simplesigning.v1+json", payload, len(payload_bytes)
            )
        ],
    )
    image_factory.layout.put_manifest(manifest)
    tag = f"sha256-{digest_hex(signed)}.sig"
    ref = ImageReference(registry, repository, tag)
    with RegistryClient() as client:
        job = CopyJob(
            label=str(ref),
            source=image_factory.layout.image(""),
            reference=manifest.digest,
            destination=RemotePushDestination(client.repository(ref)),
            tag=tag,
        )
        outcome = copy_images([job], platforms=(), all_platforms=True)
    assert not outcome.failures, outcome.failures
    return tag, manifest.digest


def test_inspect_images_lists_repositories_tags_digests_platforms_and_signatures(
    capsys, tmp_path, image_factory, start_registry
):
    source = start_registry(tmp_path / "source-root")
    single = image_factory.image("inventory/single", [1500])
    multi = image_factory.multi_platform("inventory/multi", ("linux/amd64", "linux/arm64"))
    a = image_factory.push(single, source.host, "library/a", "1")
    b = image_factory.push(multi, source.host, "team/b", "2")
    sig_tag, sig_digest = push_signature(image_factory, source.host, "library/a", single.digest)
    # The signature tag is cached like any image here (attachment copying is not this test's).
    context = context_with(tmp_path, a, b, f"{source.host}/library/a:{sig_tag}")
    store = tmp_path / "store"
    code, _, err = cli(capsys, "build", PLATFORM, "--root", store, "-t", "cluster:1", context)
    assert code == 0, err

    code, out, err = cli(capsys, "inspect", "--images", "--json", "--root", store, "cluster:1")
    assert code == 0, err
    document = json.loads(out)
    assert document["image"] == "localhost/cluster:1"
    images = {(i["repository"], i["tag"]): i for i in document["images"]}
    assert sorted(images) == [("library/a", "1"), ("team/b", "2")]  # the .sig is no image
    first = images[("library/a", "1")]
    assert first["digest"] == single.digest
    assert first["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert first["platforms"] == []
    assert first["signatures"] == [sig_digest]
    assert first["attachments"] == [
        {"kind": "sig", "tag": sig_tag, "digest": sig_digest, "of": single.digest}
    ]
    second = images[("team/b", "2")]
    assert second["digest"] == multi.digest
    assert second["signatures"] == []
    platforms = {p["platform"]: p for p in second["platforms"]}
    assert platforms["linux/amd64"] == {
        "platform": "linux/amd64",
        "digest": multi.for_platform("linux/amd64").digest,
        "present": True,
    }
    assert platforms["linux/arm64/v8"]["present"] is False  # a sparse index: amd64 only

    code, out, err = cli(capsys, "inspect", "--images", "--root", store, "cluster:1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "PLATFORMS", "SIGNATURES"]
    assert lines[1].split() == ["library/a", "1", single.digest, "-", "1"]
    assert lines[2].split() == [
        "team/b",
        "2",
        multi.digest,
        "linux/amd64,linux/arm64/v8(absent)",
        "0",
    ]


def test_inspect_images_of_an_image_without_a_registry(capsys, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY Kubefile .\n")
    store = tmp_path / "store"
    code, _, err = cli(capsys, "build", "--root", store, "-t", "empty", context)
    assert code == 0, err
    code, out, _ = cli(capsys, "inspect", "--images", "--json", "--root", store, "empty")
    assert code == 0 and json.loads(out)["images"] == []
    code, _, err = cli(capsys, "inspect", "--images", "--root", store, "nope")
    assert code != 0 and err.startswith("error: ") and "nope" in err


def _layer(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_later_layer_whiteout_removes_a_repository_from_the_inventory():
    import io
    from types import SimpleNamespace

    from sealpy.core.store.inventory import cluster_images

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    repos = "./registry/docker/registry/v2/repositories"
    layers = {
        "one": _layer(
            {
                f"{repos}/library/a/_manifests/tags/1/current/link": a.encode(),
                f"{repos}/library/b/_manifests/tags/1/current/link": b.encode(),
            }
        ),
        "two": _layer({f"{repos}/library/.wh.b": b""}),
    }
    store = SimpleNamespace(layout=SimpleNamespace(open_blob=lambda d: io.BytesIO(layers[d])))
    entries = cluster_images(store, ["one"])  # type: ignore[arg-type]
    assert [(e.repository, e.tag, e.digest, e.media_type) for e in entries] == [
        ("library/a", "1", a, None),
        ("library/b", "1", b, None),
    ]
    entries = cluster_images(store, ["one", "two"])  # type: ignore[arg-type]
    assert [(e.repository, e.tag) for e in entries] == [("library/a", "1")]
