"""The local image store and its commands: images, inspect, tag, rmi (with garbage
collection), pull, push, save, load; concurrent commands; the default location."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _build_support import build, cli, manifest_of, store_snapshot

from sealpy.core.errors import ManifestError
from sealpy.core.image import media
from sealpy.core.image.media import Manifest
from sealpy.core.store.layout import Store, default_root, store_name, to_oci
from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER
from sealpy.core.testing.registry import skopeo, skopeo_manifest_digest

CREDS = f"{TEST_USER}:{TEST_PASSWORD}"


def small_image(tmp_path: Path, store: Path, name: str = "test", text: str = "hello") -> str:
    context = tmp_path / f"ctx-{name}"
    context.mkdir(exist_ok=True)
    (context / "hello.txt").write_text(text)
    (context / "Kubefile").write_text(
        f"FROM scratch\nLABEL name={name}\nCOPY hello.txt /hello.txt\n"
    )
    return build(context, store, tags=[name]).result.digest


def blob_count(store: Path) -> int:
    return len(list((store / "blobs" / "sha256").iterdir()))


def test_names_are_normalised_as_buildah_does():
    assert store_name("test") == "localhost/test:latest"
    assert store_name("team/app:1") == "localhost/team/app:1"
    assert store_name("quay.io/x/y") == "quay.io/x/y:latest"
    assert store_name("127.0.0.1:5000/app:2") == "127.0.0.1:5000/app:2"
    assert store_name("docker.io/library/nginx:1.25") == "docker.io/library/nginx:1.25"


def test_default_store_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    assert default_root({"HOME": "/home/u"}).as_posix().endswith("/.local/share/sealpy/store")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_root() == tmp_path / "data" / "sealpy" / "store"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nLABEL a=b\n")
    code, out, _ = cli(capsys, "build", "--no-save-image", "-t", "xdg", str(context))
    assert code == 0
    assert (
        skopeo_manifest_digest(f"oci:{tmp_path / 'data/sealpy/store'}:localhost/xdg:latest")
        == out.split()[-1]
    )


def test_tag_images_inspect_and_rmi_with_garbage_collection(tmp_path: Path, capsys):
    store = tmp_path / "store"
    digest = small_image(tmp_path, store)
    root = ["--root", str(store)]
    assert cli(capsys, "tag", "test", "other", "quay.io/team/other:2", *root)[0] == 0
    code, out, _ = cli(capsys, "images", *root)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert sorted(r[:2] for r in rows[1:]) == [
        ["localhost/other", "latest"],
        ["localhost/test", "latest"],
        ["quay.io/team/other", "2"],
    ]
    assert len({r[2] for r in rows[1:]}) == 1  # one image ID
    code, out, _ = cli(capsys, "inspect", "quay.io/team/other:2", *root)
    doc = json.loads(out)
    assert doc["Digest"] == digest and doc["Labels"] == {"name": "test"}
    manifest_size = (store / "blobs" / "sha256" / digest.split(":")[1]).stat().st_size
    config_size = (store / "blobs" / "sha256" / doc["Id"].split(":")[1]).stat().st_size
    assert doc["Size"] == manifest_size + config_size + sum(
        layer["Size"] for layer in doc["Layers"]
    )
    assert doc["Config"]["Env"][0].startswith("PATH=") and len(doc["History"]) == 2
    blobs = blob_count(store)
    code, out, _ = cli(capsys, "rmi", "other", *root)
    assert out.splitlines() == ["Untagged: localhost/other:latest", "Deleted 0 unused blobs"]
    assert blob_count(store) == blobs
    code, out, err = cli(capsys, "rmi", "test", "nonexistent", *root)
    assert code == 1 and err == f"error: image nonexistent is not in the store {store}\n"
    assert cli(capsys, "images", "--json", *root)[1].count('"name"') == 2  # nothing removed
    image_id = json.loads(cli(capsys, "images", "--json", *root)[1])[0]["id"]
    code, out, _ = cli(
        capsys, "rmi", image_id.removeprefix("sha256:")[:12], *root
    )  # by ID: every name
    assert sorted(out.splitlines()[:2]) == [
        "Untagged: localhost/test:latest",
        "Untagged: quay.io/team/other:2",
    ]
    assert out.splitlines()[2] == "Deleted 3 unused blobs"
    assert blob_count(store) == 0


def test_gc_keeps_blobs_while_another_command_writes(tmp_path: Path, capsys):
    store = tmp_path / "store"
    small_image(tmp_path, store)
    with Store(store).writing():
        code, _, err = cli(capsys, "rmi", "test", "--root", str(store))
    assert code == 0 and "in use by another command" in err
    assert blob_count(store) == 3
    assert Store(store).gc() == 3


def test_untagged_build_is_listed_and_can_be_named_by_id(tmp_path: Path, capsys):
    store = tmp_path / "store"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nLABEL untagged=yes\n")
    digest = build(context, store, tags=[]).result.digest
    _, out, _ = cli(capsys, "images", "--root", str(store))
    assert out.splitlines()[1].split()[:2] == ["<none>", "<none>"]
    image_id = out.splitlines()[1].split()[2]
    assert cli(capsys, "tag", image_id, "named", "--root", str(store))[0] == 0
    assert skopeo_manifest_digest(f"oci:{store}:localhost/named:latest") == digest


def test_concurrent_commands_never_lose_a_tag(tmp_path: Path):
    store = tmp_path / "store"
    small_image(tmp_path, store)
    sealpy = str(Path(sys.executable).parent / "sealpy")

    def tag(i: int) -> int:
        return subprocess.run(
            [sealpy, "tag", "test", f"copy-{i}", "--root", str(store)], check=False
        ).returncode

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(tag, range(8))) == [0] * 8
    names = {i.name for i in Store(store).images()}
    assert names == {"localhost/test:latest", *(f"localhost/copy-{i}:latest" for i in range(8))}


def test_pull_needs_credentials_where_the_registry_asks(
    tmp_path: Path, capsys, image_factory, htpasswd_registry
):
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.remote import RegistryClient

    image = image_factory.image("pull-me", [1200])
    with RegistryClient(
        credentials=ConfiguredCredentials(creds=htpasswd_registry.credential)
    ) as client:
        ref = image_factory.push(image, htpasswd_registry.host, "team/pullme", "3", client=client)
    store = tmp_path / "store"
    code, _, err = cli(capsys, "pull", str(ref), "--root", str(store))
    assert (
        code == 1 and err.splitlines()[-1].startswith("error: ") and "authentication failed" in err
    )
    assert "Traceback" not in err
    assert TEST_PASSWORD not in err
    code, out, err = cli(capsys, "pull", f"docker://{ref}", "--creds", CREDS, "--root", str(store))
    assert code == 0, err
    assert out.strip() == image.digest
    assert skopeo_manifest_digest(f"oci:{store}:{ref}") == image.digest


def _skopeo_layers(store: Path, name: str) -> list[str]:
    """The layer digests skopeo reads for ``oci:<store>:<name>`` (fails if it cannot)."""
    return json.loads(skopeo("inspect", f"oci:{store}:{name}").stdout)["Layers"]


def test_docker_images_enter_the_store_with_oci_media_types(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    # skopeo's oci: transport finds only OCI-typed entries of index.json, so Docker-typed
    # images (pulled, or loaded from a docker-archive) are converted; blobs stay the same.
    store = tmp_path / "store"
    image = image_factory.image("pull-docker", [900, 300], docker=True)
    ref = image_factory.push(image, plain_registry.host, "team/pulldocker", "1")
    code, out, err = cli(capsys, "pull", str(ref), "--root", str(store))
    assert code == 0, err
    manifest = manifest_of(store, str(ref))
    assert out.strip() != image.digest  # a new manifest: the one the store names
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    layer_digests = [layer.digest for layer in image.layers]
    assert _skopeo_layers(store, str(ref)) == layer_digests
    doc = json.loads(cli(capsys, "inspect", str(ref), "--root", str(store))[1])
    assert doc["Digest"] == out.strip() and doc["Id"] == image.config.digest
    # a Docker manifest list becomes an OCI index over the converted child
    multi = image_factory.multi_platform(
        "pull-docker-multi", ["linux/amd64", "linux/arm64"], [400], docker=True
    )
    list_ref = image_factory.push(multi, plain_registry.host, "team/pulldockerlist", "1")
    code, _, err = cli(
        capsys, "pull", str(list_ref), "--platform", "linux/amd64", "--root", str(store)
    )
    assert code == 0, err
    index = manifest_of(store, str(list_ref))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    amd64 = multi.for_platform("linux/amd64")
    assert _skopeo_layers(store, str(list_ref)) == [amd64.layers[0].digest]
    # a docker-archive (Docker types, as `docker save` writes) too
    archive = image_factory.docker_archive(image, tmp_path / "docker.tar", "team/loaded:2")
    code, _, err = cli(capsys, "load", "-i", str(archive), "--root", str(store))
    assert code == 0, err
    loaded = f"oci:{store}:docker.io/team/loaded:2"
    assert len(_skopeo_layers(store, "docker.io/team/loaded:2")) == 2  # recompressed layers
    config = json.loads(skopeo("inspect", "--config", loaded).stdout)
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]


def test_pulling_a_second_platform_of_a_docker_list_keeps_the_first(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    store = tmp_path / "store"
    multi = image_factory.multi_platform(
        "pull-docker-two", ["linux/amd64", "linux/arm64"], [500], docker=True
    )
    ref = str(image_factory.push(multi, plain_registry.host, "team/twoplatforms", "1"))
    for platform in ("linux/amd64", "linux/arm64"):
        code, _, err = cli(capsys, "pull", ref, "--platform", platform, "--root", str(store))
        assert code == 0, err
    index = manifest_of(store, ref)
    assert {e["mediaType"] for e in index["manifests"]} == {
        "application/vnd.oci.image.manifest.v1+json"
    }, "both children converted and present"
    for platform in ("linux/amd64", "linux/arm64"):
        child = next(
            e
            for e in index["manifests"]
            if f"{e['platform']['os']}/{e['platform']['architecture']}" == platform
        )
        assert (store / "blobs" / "sha256" / child["digest"].split(":")[1]).is_file()
    code, _, err = cli(
        capsys, "push", ref, f"{plain_registry.host}/team/copied:1", "--root", str(store)
    )
    assert code == 0, err  # a complete index: push accepts it


def test_an_oci_manifest_without_its_optional_media_type_field_is_kept_byte_for_byte():
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": media.OCI_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [{"mediaType": media.OCI_LAYER_GZIP, "digest": "sha256:" + "2" * 64, "size": 3}],
    }
    manifest = Manifest.parse(json.dumps(doc, indent=1).encode(), media.OCI_MANIFEST)
    assert to_oci(manifest, {}).digest == manifest.digest
    index_doc = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": media.OCI_MANIFEST, "digest": manifest.digest, "size": manifest.size}
        ],
    }
    index = Manifest.parse(json.dumps(index_doc).encode(), media.OCI_INDEX)
    assert to_oci(index, {manifest.digest: manifest}).digest == index.digest


def test_foreign_layers_are_refused_clearly():
    doc = {
        "schemaVersion": 2,
        "mediaType": media.DOCKER_MANIFEST,
        "config": {"mediaType": media.DOCKER_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": "sha256:" + "2" * 64,
                "size": 3,
                "urls": ["https://example.invalid/layer"],
            }
        ],
    }
    manifest = Manifest.parse(json.dumps(doc).encode())
    with pytest.raises(ManifestError, match=r"foreign .* layers are not supported"):
        to_oci(manifest, {})


def test_pull_of_an_index_keeps_it_and_the_chosen_platforms(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    multi = image_factory.multi_platform(
        "pull-multi", ["linux/amd64", "linux/arm64", "linux/s390x"], [600]
    )
    ref = image_factory.push(multi, plain_registry.host, "library/pullmulti", "1")
    store = tmp_path / "store"
    assert cli(capsys, "pull", str(ref), "--platform", "linux/arm64", "--root", str(store))[0] == 0
    index = manifest_of(store, str(ref))
    assert (
        index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        and len(index["manifests"]) == 3
    )
    blobs = {p.name for p in (store / "blobs" / "sha256").iterdir()}
    arm = multi.for_platform("linux/arm64")
    assert {d.split(":")[1] for d in arm.blob_digests} <= blobs
    assert not {d.split(":")[1] for d in multi.for_platform("linux/s390x").blob_digests} & blobs
    code, _, err = cli(
        capsys, "push", str(ref), f"{plain_registry.host}/copy/multi:1", "--root", str(store)
    )
    assert code == 1 and "not complete in the store" in err
    assert cli(capsys, "pull", str(ref), "--all", "--root", str(store))[0] == 0
    code, out, err = cli(
        capsys, "push", str(ref), f"{plain_registry.host}/copy/multi:1", "--root", str(store)
    )
    assert code == 0, err
    assert out.strip() == multi.digest
    assert skopeo_manifest_digest(f"docker://{plain_registry.host}/copy/multi:1") == multi.digest


def test_save_and_load_an_oci_archive(tmp_path: Path, capsys):
    store = tmp_path / "store"
    first = small_image(tmp_path, store, "first", "1")
    second = small_image(tmp_path, store, "second", "2")
    archive = tmp_path / "images.tar"
    code, _, err = cli(capsys, "save", "-o", str(archive), "first", "second", "--root", str(store))
    assert code == 0, err
    assert skopeo_manifest_digest(f"oci-archive:{archive}:localhost/second:latest") == second
    copy = tmp_path / "copy"
    skopeo("copy", f"oci-archive:{archive}:localhost/first:latest", f"oci:{copy}:x")
    assert skopeo_manifest_digest(f"oci:{copy}:x") == first
    saved_again = tmp_path / "again.tar"
    assert (
        cli(capsys, "save", "-o", str(saved_again), "first", "second", "--root", str(store))[0] == 0
    )
    assert saved_again.read_bytes() == archive.read_bytes()  # deterministic
    other = tmp_path / "other-store"
    code, out, _ = cli(capsys, "load", "-i", str(archive), "--root", str(other))
    assert code == 0
    assert out.splitlines() == [
        "Loaded image: localhost/first:latest",
        "Loaded image: localhost/second:latest",
    ]
    assert manifest_of(other, "localhost/first:latest") == manifest_of(
        store, "localhost/first:latest"
    )
    assert skopeo_manifest_digest(f"oci:{other}:localhost/second:latest") == second
    # an archive skopeo wrote with only a tag as its name is named after the file
    tagged = tmp_path / "My App.tar"
    skopeo("copy", f"oci:{store}:localhost/first:latest", f"oci-archive:{tagged}:1.0")
    code, out, err = cli(capsys, "load", "-i", str(tagged), "--root", str(other))
    assert code == 0, err
    assert out.strip() == "Loaded image: localhost/my-app:1.0"


def test_save_and_load_a_docker_archive(tmp_path: Path, capsys, image_factory):
    store = tmp_path / "store"
    small_image(tmp_path, store, "dock", "d")
    archive = tmp_path / "docker.tar"
    code, _, err = cli(
        capsys,
        "save",
        "--format",
        "docker-archive",
        "-o",
        str(archive),
        "dock",
        "--root",
        str(store),
    )
    assert code == 0, err
    inspected = json.loads(skopeo("inspect", f"docker-archive:{archive}").stdout)
    assert inspected["Labels"] == {"name": "dock"}
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{archive}").stdout)
    stored_config = json.loads(cli(capsys, "inspect", "dock", "--root", str(store))[1])
    assert config["rootfs"]["diff_ids"] == stored_config["DiffIds"]
    # a factory docker archive (as `docker save` writes) loads with Docker's naming
    image = image_factory.image("docker-archive-load", [800])
    factory_archive = image_factory.docker_archive(image, tmp_path / "factory.tar", "nginx:1.25")
    code, out, err = cli(capsys, "load", "-i", str(factory_archive), "--root", str(store))
    assert code == 0, err
    assert out.strip() == "Loaded image: docker.io/library/nginx:1.25"
    loaded = json.loads(
        cli(capsys, "inspect", "docker.io/library/nginx:1.25", "--root", str(store))[1]
    )
    assert loaded["Id"] == image.config.digest
    code, out, err = cli(capsys, "load", "-i", str(archive), "--root", str(tmp_path / "s2"))
    assert code == 0 and out.strip() == "Loaded image: localhost/dock:latest"
    # two names of one image: one entry with both names (skopeo wants exactly one)
    assert cli(capsys, "tag", "dock", "dock:2", "--root", str(store))[0] == 0
    both = tmp_path / "both.tar"
    code, _, err = cli(capsys, "save", "--format", "docker-archive", "-o", str(both),
                       "dock", "dock:2", "--root", str(store))  # fmt: skip
    assert code == 0, err
    assert json.loads(skopeo("inspect", f"docker-archive:{both}").stdout)["Labels"] == {
        "name": "dock"
    }
    code, out, _ = cli(capsys, "load", "-i", str(both), "--root", str(tmp_path / "s3"))
    assert code == 0 and out.splitlines() == [
        "Loaded image: localhost/dock:latest",
        "Loaded image: localhost/dock:2",
    ]


def test_store_errors_are_one_line(tmp_path: Path, capsys):
    store = tmp_path / "store"
    small_image(tmp_path, store)
    before = store_snapshot(store)
    for args in (
        ["inspect", "missing"],
        ["tag", "missing", "x"],
        ["save", "-o", str(tmp_path / "x.tar"), "--format", "zip", "test"],
        ["load", "-i", str(tmp_path / "nothing.tar")],
        ["push", "test", "oci-archive:/tmp/x.tar"],
        ["merge", "-t", "m", "test"],
    ):
        code, _, err = cli(capsys, *args, "--root", str(store))
        assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
    assert store_snapshot(store) == before
    assert not (tmp_path / "x.tar").exists()
