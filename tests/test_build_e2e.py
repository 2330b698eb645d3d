"""End to end against real registries: scan → cache → build → store → skopeo, push,
unpacking the registry layer and serving it with a stock docker-registry; FROM and
COPY --from images in a registry; several platforms; bad input through the CLI."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from _build_support import (
    blob,
    build,
    cached_context,
    cli,
    config_of,
    manifest_of,
    member_names,
    members,
    store_snapshot,
)

from sealpy.core.errors import BuildError
from sealpy.core.testing.registry import skopeo, skopeo_manifest_digest, skopeo_pull


def registry_layer(store: Path, manifest: dict) -> str:
    """The layer whose members are under registry/."""
    for layer in manifest["layers"]:
        if any(n.startswith("registry") for n in member_names(store, layer["digest"])):
            return layer["digest"]
    raise AssertionError("no layer holds registry/")


def test_build_caches_builds_and_the_registry_layer_serves_the_cached_image(
    tmp_path: Path, capsys, image_factory, plain_registry, start_registry
):
    image = image_factory.image("e2e", [4096, 2048])
    ref = image_factory.push(image, plain_registry.host, "library/e2e", "1.0")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    store = tmp_path / "store"

    # scan (with --images, as discovery sources are separate plugins) → cache → build
    code, out, err = cli(
        capsys,
        "build",
        "--images",
        str(ref),
        "--strategy",
        "proxy",
        "-t",
        "test",
        str(context),
        "--root",
        str(store),
    )
    assert code == 0, err
    assert f"info saving images {ref}" in err
    lines = out.splitlines()
    assert lines[:2] == ["STEP 1/2: FROM scratch", "STEP 2/2: COPY registry ./registry"]
    assert lines[2].startswith("--> ") and len(lines[2]) == 4 + 11
    assert lines[3] == "Successfully tagged localhost/test:latest"
    digest = lines[4]

    # skopeo reads the store
    inspected = json.loads(skopeo("inspect", f"oci:{store}:localhost/test:latest").stdout)
    assert inspected["Digest"] == digest
    assert skopeo_manifest_digest(f"oci:{store}:localhost/test:latest") == digest

    # the registry layer unpacks with GNU tar and with tarfile; a stock registry serves it
    layer = blob(store, registry_layer(store, manifest_of(store, "localhost/test:latest")))
    gnu, python = tmp_path / "gnu", tmp_path / "python"
    gnu.mkdir()
    subprocess.run(["tar", "-xzf", str(layer), "-C", str(gnu)], check=True)
    with tarfile.open(layer, "r:gz") as tar:
        tar.extractall(python, filter="tar")
    for root in (gnu, python):
        server = start_registry(root / "registry")
        pulled = skopeo_pull(
            f"docker://{server.host}/library/e2e:1.0", tmp_path / f"pull-{root.name}"
        )
        assert pulled == image.digest

    # building again gives the same digest
    code, out, _ = cli(
        capsys,
        "build",
        "--no-save-image",
        "-t",
        "test",
        str(context),
        "--root",
        str(tmp_path / "store2"),
    )
    assert code == 0 and out.splitlines()[-1] == digest


def test_pipeline_build_is_the_cli_build_in_one_call(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    """`pipeline.build(BuildJob(...))` does what `sealpy build` does (scan, check, cache,
    build, --iidfile) and tells it through events: the same image, the same lines."""
    from sealpy.core import pipeline
    from sealpy.core.events import Event, EventKind
    from sealpy.core.model import CacheOptions
    from sealpy.core.transport.distribution import DistributionLayout

    image = image_factory.image("one-call", [4096, 2048])
    ref = image_factory.push(image, plain_registry.host, "library/one-call", "1.0")
    contexts = []
    for name in ("cli", "python"):
        context = tmp_path / name / "ctx"
        context.mkdir(parents=True)
        (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
        contexts.append(context)

    code, out, err = cli(
        capsys,
        "build",
        "--images",
        str(ref),
        "--strategy",
        "proxy",
        "-t",
        "test",
        "--iidfile",
        str(tmp_path / "cli" / "iid"),
        str(contexts[0]),
        "--root",
        str(tmp_path / "cli" / "store"),
    )
    assert code == 0, err

    events: list[Event] = []
    built = pipeline.build(
        pipeline.BuildJob(
            context=contexts[1],
            tags=("test",),
            extra_images=(str(ref),),
            strategy="proxy",
            cache=CacheOptions(),
            store_root=tmp_path / "python" / "store",
            iidfile=tmp_path / "python" / "iid",
        ),
        events.append,
    )
    assert capsys.readouterr() == ("", "")  # the pipeline prints nothing itself

    cli_lines = out.splitlines()
    assert built.image.digest == cli_lines[-1]
    assert [f"Successfully tagged {n}" for n in built.image.names] == cli_lines[-2:-1]
    output = [e.message for e in events if e.kind is EventKind.OUTPUT]
    assert output == cli_lines[:-2] and output[0] == "STEP 1/2: FROM scratch"
    info = [e.message for e in events if e.kind is EventKind.INFO]
    assert info[0] == f"saving images {ref}" and f"info {info[0]}" in err.splitlines()
    assert built.cache is not None and built.cache.summary() == info[1]
    assert info[1].startswith("1 images cached by proxy")
    assert (tmp_path / "python" / "iid").read_bytes() == (tmp_path / "cli" / "iid").read_bytes()
    assert DistributionLayout(contexts[1] / "registry").resolve("library/one-call", "1.0") == (
        image.digest
    )


def test_the_pipeline_asks_the_builders_own_check_before_caching(
    tmp_path: Path, image_factory, plain_registry
):
    """The pre-check is the builder's (``ImageBuilder.check``), whatever its class: a
    refusal stops the build before any image is cached."""
    from sealpy.core import pipeline
    from sealpy.core.build import BuildRequest, BuildResult, ImageBuilder

    seen = []

    class Refusing(ImageBuilder):
        name = "refusing"
        description = "refuses every build file"

        def check(self, context, *, target=None, ignorefile=None, registry_pending=False):
            seen.append((context.root, target, registry_pending))
            raise BuildError("not this one")

        def build(self, request: BuildRequest) -> BuildResult:  # pragma: no cover
            raise AssertionError("built although the check refused")

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\n")
    ref = image_factory.push(image_factory.image("refused", [64]), plain_registry.host, "r/x", "1")
    job = pipeline.BuildJob(
        context=context,
        extra_images=(str(ref),),
        builder=Refusing,
        target="last",
        strategy="proxy",
        store_root=tmp_path / "store",
    )
    with pytest.raises(BuildError, match="not this one"):
        pipeline.build(job)
    assert seen == [(context, "last", True)]
    assert not (context / "registry").exists() and not (tmp_path / "store").exists()


def test_push_then_skopeo_copy_back(tmp_path: Path, capsys, image_factory, plain_registry):
    context, _, _ = cached_context(
        tmp_path, image_factory, plain_registry, seed="pushme", repository="library/pushme"
    )
    store = tmp_path / "store"
    digest = build(context, store).result.digest
    target = f"{plain_registry.host}/built/app:1"
    code, out, err = cli(capsys, "push", "test", target, "--root", str(store))
    assert code == 0, err
    assert out.strip() == digest
    assert "blobs uploaded" in err
    copy = tmp_path / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{copy}:back")
    assert skopeo_manifest_digest(f"oci:{copy}:back") == digest
    # a second push sends nothing: HEAD finds every blob
    code, _, err = cli(
        capsys, "push", "localhost/test:latest", f"docker://{target}", "--root", str(store)
    )
    assert code == 0 and "0 blobs uploaded, 0 mounted, 3 already there" in err
    # another repository of the same registry: the store remembers where its blobs went,
    # so they are mounted, not sent again
    code, _, err = cli(
        capsys, "push", "test", f"{plain_registry.host}/other/app:1", "--root", str(store)
    )
    assert code == 0 and "0 blobs uploaded, 3 mounted, 0 already there" in err, err


def test_kubefile_image_gets_labels_cmd_and_every_layer(
    tmp_path: Path, image_factory, plain_registry
):
    context, _, _ = cached_context(
        tmp_path, image_factory, plain_registry, seed="labels", repository="library/labels"
    )
    store = tmp_path / "store"
    built = build(context, store, cached_images=True)
    assert built.warnings == []
    manifest = manifest_of(store, "localhost/test:latest")
    config = config_of(store, manifest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert config["config"]["Labels"] == {
        "sealos.io.type": "application",
        "sealos.io.version": "v1beta1",
    }
    assert config["config"]["Cmd"] == ["kubectl apply -f manifests/"]
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 2
    assert [h.get("empty_layer", False) for h in config["history"]] == [True, False, False, True]
    assert member_names(store, manifest["layers"][1]["digest"]) == [
        "manifests",
        "manifests/app.yaml",
    ]


def test_warns_when_images_were_cached_but_registry_is_not_copied(
    tmp_path: Path, image_factory, plain_registry
):
    context, _, _ = cached_context(
        tmp_path, image_factory, plain_registry, seed="nocopy", repository="library/nocopy"
    )
    (context / "Kubefile").write_text("FROM scratch\nCOPY manifests ./manifests\n")
    built = build(context, tmp_path / "store", cached_images=True)
    assert any("no COPY or ADD puts registry into the image" in w for w in built.warnings)
    (context / "Kubefile").write_text("FROM scratch\nCOPY . /\n")
    assert build(context, tmp_path / "store", cached_images=True).warnings == []


def test_several_build_files_are_read_as_one_with_a_warning(tmp_path: Path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a")
    (context / "Sealfile").write_text("FROM scratch AS first\nCOPY a.txt /a.txt\n")
    (context / "Kubefile").write_text(
        "FROM scratch\nCOPY --from=first /a.txt /b.txt\nLABEL from=kubefile\n"
    )
    store = tmp_path / "store"
    built = build(context, store)
    assert any("several build files (Sealfile, Kubefile)" in w for w in built.warnings)
    assert built.lines[0] == "[1/2] STEP 1/2: FROM scratch AS first"
    manifest = manifest_of(store, "localhost/test:latest")
    assert config_of(store, manifest)["config"]["Labels"] == {"from": "kubefile"}
    assert [member_names(store, layer["digest"]) for layer in manifest["layers"]] == [["b.txt"]]


def test_from_an_image_in_a_registry_keeps_its_layers_and_config(
    tmp_path: Path, capsys, image_factory, htpasswd_registry
):
    base = image_factory.image("base-for-from", [3000, 1000], docker=True, labels={"base": "yes"})
    ref = image_factory.push(
        base, htpasswd_registry.host, "library/base", "1", client=_client(htpasswd_registry)
    )
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "extra.txt").write_text("extra")
    (context / "Kubefile").write_text(
        "ARG BASE\nFROM ${BASE}\nENV MODE=prod\nLABEL app=demo\nWORKDIR /opt\nCOPY extra.txt .\n"
        'ENTRYPOINT ["/bin/app"]\nUSER 1000\nEXPOSE 80 53/udp\nVOLUME /data\n'
    )
    store = tmp_path / "store"
    code, out, err = cli(
        capsys,
        "build",
        "--no-save-image",
        "--build-arg",
        f"BASE={ref}",
        "--creds",
        "alice:pa55-w0rd-for-tests",
        "-t",
        "from-test",
        str(context),
        "--root",
        str(store),
    )
    assert code == 0, err
    assert f"Trying to pull {ref}..." in out
    manifest = manifest_of(store, "localhost/from-test:latest")
    config = config_of(store, manifest)
    assert [layer["digest"] for layer in manifest["layers"][:2]] == [
        layer.digest for layer in base.layers
    ]
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    # WORKDIR /opt creates the directory the base lacks, then COPY puts the file in it
    assert member_names(store, manifest["layers"][2]["digest"]) == ["opt"]
    assert member_names(store, manifest["layers"][3]["digest"]) == ["opt/extra.txt"]
    body = config["config"]
    assert body["Labels"] == {"base": "yes", "io.sealpy.test.seed": "base-for-from", "app": "demo"}
    assert body["Env"] == ["MODE=prod"] and body["WorkingDir"] == "/opt" and body["User"] == "1000"
    assert body["Entrypoint"] == ["/bin/app"] and body["ExposedPorts"] == {
        "80/tcp": {},
        "53/udp": {},
    }
    assert body["Volumes"] == {"/data": {}}
    assert len(config["history"]) == 2 + 8
    # the base was pulled into the store under its own name
    code, out, _ = cli(capsys, "images", "--root", str(store))
    assert f"{htpasswd_registry.host}/library/base" in out
    # pushing to another repository of that registry mounts the base layers
    code, _, err = cli(
        capsys,
        "push",
        "from-test",
        f"{htpasswd_registry.host}/apps/from-test:1",
        "--root",
        str(store),
        "--creds",
        "alice:pa55-w0rd-for-tests",
    )
    assert code == 0, err
    assert "3 blobs uploaded, 2 mounted, 0 already there" in err  # config, WORKDIR, COPY


def _client(server):
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.remote import RegistryClient

    return RegistryClient(credentials=ConfiguredCredentials(creds=server.credential))


def test_copy_from_an_image_in_a_registry(tmp_path: Path, image_factory, plain_registry):
    source = image_factory.image("copy-from-source", [1500, 700])
    ref = image_factory.push(source, plain_registry.host, "library/copysrc", "2")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text(f"FROM scratch\nCOPY --from={ref} /data/ /imported/\n")
    store = tmp_path / "store"
    build(context, store)
    manifest = manifest_of(store, "localhost/test:latest")
    infos = {m.name: m for m in members(store, manifest["layers"][0]["digest"])}
    seeds = sorted(f"imported/copy-from-source/linux/amd64/{i}.bin" for i in range(2))
    assert [n for n in infos if n.endswith(".bin")] == seeds
    assert [infos[n].size for n in seeds] == [1500, 700]


def test_several_platforms_give_an_index_sharing_the_context_layer(
    tmp_path: Path, image_factory, plain_registry
):
    multi = image_factory.multi_platform("multi-base", ["linux/amd64", "linux/arm64"], [900])
    ref = image_factory.push(multi, plain_registry.host, "library/multibase", "1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "f.txt").write_text("f")
    (context / "Kubefile").write_text(
        f"FROM {ref}\nARG TARGETARCH\nLABEL arch=$TARGETARCH\nCOPY f.txt /f.txt\n"
    )
    store = tmp_path / "store"
    from sealpy.core.reference import Platform

    built = build(
        context, store, platforms=[Platform.parse("linux/amd64"), Platform.parse("linux/arm64")]
    )
    index = manifest_of(store, "localhost/test:latest")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    children = [
        (c["platform"]["architecture"], json.loads(blob(store, c["digest"]).read_bytes()))
        for c in index["manifests"]
    ]
    assert [arch for arch, _ in children] == ["amd64", "arm64"]
    (_, amd_manifest), (_, arm_manifest) = children
    assert amd_manifest["layers"][-1] == arm_manifest["layers"][-1]  # the same context layer
    assert amd_manifest["layers"][0]["digest"] == multi.for_platform("linux/amd64").layers[0].digest
    assert arm_manifest["layers"][0]["digest"] == multi.for_platform("linux/arm64").layers[0].digest
    assert config_of(store, arm_manifest)["config"]["Labels"]["arch"] == "arm64"
    assert any(line.startswith("[linux/arm64/v8] STEP 1/4") for line in built.lines)
    raw = skopeo("inspect", "--raw", f"oci:{store}:localhost/test:latest").stdout
    assert json.loads(raw) == index


BAD_INPUT = [
    (
        "missing COPY source",
        "FROM scratch\nCOPY nothing-here /x\n",
        {},
        "Kubefile:2: COPY: nothing-here: no such file",
    ),
    (
        "COPY escaping the context",
        "FROM scratch\nCOPY ../secret /x\n",
        {},
        "Kubefile:2: COPY: ../secret: outside the build context",
    ),
    (
        "symlink loop",
        "FROM scratch\nCOPY loop /x\n",
        {"loop": "loop"},
        "Kubefile:2: COPY: loop: symlink loop",
    ),
    (
        "symlink out",
        "FROM scratch\nCOPY out /x\n",
        {"out": "/etc/passwd"},
        "outside the build context (symlink out -> /etc/passwd)",
    ),
    (
        "unknown instruction",
        "FROM scratch\nCOPPY a /x\n",
        {},
        "Kubefile:2: unknown instruction COPPY",
    ),
    (
        "RUN with the native builder",
        "FROM scratch\nRUN echo hi\n",
        {},
        "Kubefile:2: RUN: RUN needs a container to run commands, and the native builder has none; "
        "use --builder buildah",
    ),
    (
        "ADD of a URL",
        "FROM scratch\nADD http://example.com/a.tgz /a\n",
        {},
        "Kubefile:2: ADD: http://example.com/a.tgz: ADD of a URL is not supported",
    ),
    ("no FROM", "LABEL a=b\n", {}, "Kubefile:1: LABEL: the first instruction must be FROM"),
]


@pytest.mark.parametrize(
    ("case", "kubefile", "links", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_one_line_with_nothing_half_written(
    tmp_path: Path, capsys, case, kubefile, links, message
):
    (tmp_path / "secret").write_text("host secret")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "ok.txt").write_text("ok")
    for name, target in links.items():
        (context / name).symlink_to(target)
    store = tmp_path / "store"
    (context / "Kubefile").write_text("FROM scratch\nCOPY ok.txt /ok.txt\n")
    assert (
        cli(capsys, "build", "--no-save-image", "-t", "good", str(context), "--root", str(store))[0]
        == 0
    )
    before = store_snapshot(store)
    (context / "Kubefile").write_text(kubefile)
    code, out, err = cli(
        capsys, "build", "--no-save-image", "-t", "bad", str(context), "--root", str(store)
    )
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in out + err
    assert store_snapshot(store) == before


def test_a_missing_path_in_a_copy_from_stage_names_the_instruction(tmp_path: Path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a")
    (context / "Kubefile").write_text(
        "FROM scratch AS one\nCOPY a.txt /a.txt\nFROM scratch\nCOPY --from=one /nope /x\n"
    )
    store = tmp_path / "store"
    with pytest.raises(
        BuildError, match=r"^Kubefile:4: COPY: nope: no such file or directory in stage one$"
    ):
        build(context, store)
    assert (
        not (store / "index.json").exists()
        or "localhost/test" not in (store / "index.json").read_text()
    )


def test_push_mounts_across_repositories_of_a_token_registry(
    tmp_path: Path, capsys, image_factory, plain_registry, token_registry, monkeypatch
):
    """A mount reads from another repository: the token must cover pulling from it too
    (otherwise the registry quietly refuses the mount and the bytes are sent again)."""
    context, _, _ = cached_context(
        tmp_path, image_factory, plain_registry, seed="mountme", repository="library/mountme"
    )
    store = tmp_path / "store"
    build(context, store)
    credential = token_registry.credential
    monkeypatch.setenv("SEALPY_CREDS", f"{credential.username}:{credential.password}")
    code, _, err = cli(
        capsys, "push", "test", f"{token_registry.host}/mount/first:1", "--root", str(store)
    )
    assert code == 0 and "3 blobs uploaded, 0 mounted" in err, err
    tokens = token_registry.token_server
    asked = len(tokens.requests)
    code, _, err = cli(
        capsys, "push", "test", f"{token_registry.host}/mount/second:1", "--root", str(store)
    )
    assert code == 0 and "0 blobs uploaded, 3 mounted, 0 already there" in err, err
    scopes = {r.query.get("scope", "") for r in tokens.requests[asked:]}
    assert "repository:mount/second:pull,push repository:mount/first:pull" in scopes, scopes
