"""``sealpy merge`` follows Sealos's rules: layers in input order, labels and ENV merged
(later wins, PATH dropped, the rootfs type kept), ENTRYPOINT and CMD concatenated."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from _build_support import build, cli, config_of, manifest_of

from sealpy.core.build.merge import merge_configs, sealfile
from sealpy.core.build.native import DEFAULT_PATH, unpack_image
from sealpy.core.image.media import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor
from sealpy.core.store.layout import Store
from sealpy.core.testing.registry import skopeo_manifest_digest

ROOTFS_KUBEFILE = """FROM scratch
LABEL sealos.io.type=rootfs sealos.io.version=v1beta1 shared=from-rootfs only.rootfs=1
ENV PATH=/opt/kube/bin:/usr/bin K=rootfs A=x
COPY bin /bin
COPY etc /etc
ENTRYPOINT ["/init"]
CMD ["kubeadm init"]
"""
APP_KUBEFILE = """FROM scratch
LABEL sealos.io.type=application shared=from-app only.app=2
ENV K=app B=y
COPY manifests ./manifests
ENTRYPOINT ["run"]
CMD ["kubectl apply -f manifests/", "echo $(B)"]
"""


def make_images(tmp_path: Path, store: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "bin" / "kubeadm").write_text("kubeadm")
    (rootfs / "etc" / "kube.conf").write_text("conf")
    (rootfs / "Kubefile").write_text(ROOTFS_KUBEFILE)
    app = tmp_path / "app"
    (app / "manifests").mkdir(parents=True)
    (app / "manifests" / "app.yaml").write_text("kind: Deployment\n")
    (app / "Kubefile").write_text(APP_KUBEFILE)
    build(rootfs, store, tags=["rootfs:v1"])
    build(app, store, tags=["app:v1"])


def test_merge_of_a_rootfs_and_an_application_follows_every_rule(tmp_path: Path, capsys):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    code, out, err = cli(
        capsys,
        "merge",
        "-t",
        "merged:v1",
        "rootfs:v1",
        "app:v1",
        "--print-sealfile",
        "--root",
        str(store),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-2] == "Successfully tagged localhost/merged:v1"
    digest = lines[-1]
    rootfs = manifest_of(store, "localhost/rootfs:v1")
    app = manifest_of(store, "localhost/app:v1")
    merged = manifest_of(store, "localhost/merged:v1")
    # layers: the inputs' layers, in input order, the same blobs
    assert merged["layers"] == rootfs["layers"] + app["layers"]
    config = config_of(store, merged)
    inputs = [config_of(store, rootfs), config_of(store, app)]
    assert (
        config["rootfs"]["diff_ids"]
        == inputs[0]["rootfs"]["diff_ids"] + inputs[1]["rootfs"]["diff_ids"]
    )
    body = config["config"]
    # labels: later wins; the rootfs type wins over application, under both keys
    assert body["Labels"] == {
        "sealos.io.type": "rootfs",
        "apps.sealos.io/type": "rootfs",
        "sealos.io.version": "v1beta1",
        "shared": "from-app",
        "only.rootfs": "1",
        "only.app": "2",
    }
    # ENV: later wins, the inputs' PATH dropped (the default one of FROM scratch remains)
    assert body["Env"] == [DEFAULT_PATH, "K=app", "A=x", "B=y"]
    # ENTRYPOINT and CMD: concatenated in input order
    assert body["Entrypoint"] == ["/init", "run"]
    assert body["Cmd"] == ["kubeadm init", "kubectl apply -f manifests/", "echo $(B)"]
    assert sum(1 for h in config["history"] if not h.get("empty_layer")) == len(merged["layers"])
    # the equivalent Sealfile
    expected = (
        "FROM scratch\n"
        'LABEL "only.rootfs"="1"\nLABEL "sealos.io.type"="rootfs"\n'
        'LABEL "sealos.io.version"="v1beta1"\nLABEL "shared"="from-app"\nLABEL "only.app"="2"\n'
        'LABEL "apps.sealos.io/type"="rootfs"\n'
        'ENV K="app"\nENV A="x"\nENV B="y"\n'
        'ENTRYPOINT ["/init", "run"]\n'
        'CMD ["kubeadm init", "kubectl apply -f manifests/", "echo $(B)"]\n'
        "COPY --from=rootfs:v1 . .\nCOPY --from=app:v1 . .\n"
    )
    assert "\n".join(lines[:-2]) + "\n" == expected
    # readable by skopeo, and the same merge again gives the same digest
    assert skopeo_manifest_digest(f"oci:{store}:localhost/merged:v1") == digest
    code, out, _ = cli(capsys, "merge", "-t", "again", "rootfs:v1", "app:v1", "--root", str(store))
    assert out.splitlines()[-1] == digest


def test_debug_prints_the_sealfile_too(tmp_path: Path, capsys):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    code, out, _ = cli(
        capsys, "--debug", "merge", "-t", "m", "rootfs:v1", "app:v1", "--root", str(store)
    )
    assert code == 0
    assert (
        out.startswith("FROM scratch\n")
        and "COPY --from=rootfs:v1 . .\nCOPY --from=app:v1 . .\n" in out
    )
    _, quiet, _ = cli(capsys, "merge", "-t", "m2", "rootfs:v1", "app:v1", "--root", str(store))
    assert "FROM scratch" not in quiet


TRICKY_KUBEFILE = r"""FROM scratch
LABEL tricky='back\slash "quoted" $HOME ${HOME} $(cmd) café'
ENV DOLLAR='$B ${B:-x} $(B) \ ünï'
CMD ["echo $(B) $B \\ café"]
COPY manifests ./manifests
"""


def test_the_printed_sealfile_builds_an_image_with_the_same_config(tmp_path: Path, capsys):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    # values with $, backslashes, quotes and non-ASCII must come back the same
    tricky = tmp_path / "tricky"
    (tricky / "manifests").mkdir(parents=True)
    (tricky / "manifests" / "t.yaml").write_text("t: 1\n")
    (tricky / "Kubefile").write_text(TRICKY_KUBEFILE)
    build(tricky, store, tags=["tricky:v1"])
    tricky_config = config_of(store, manifest_of(store, "localhost/tricky:v1"))["config"]
    assert tricky_config["Labels"]["tricky"] == 'back\\slash "quoted" $HOME ${HOME} $(cmd) café'
    assert "DOLLAR=$B ${B:-x} $(B) \\ ünï" in tricky_config["Env"]
    _, out, _ = cli(
        capsys,
        "merge",
        "-t",
        "merged",
        "rootfs:v1",
        "app:v1",
        "tricky:v1",
        "--print-sealfile",
        "--root",
        str(store),
    )
    assert "café" in out and "\\u00e9" not in out
    context = tmp_path / "sealfile-ctx"
    context.mkdir()
    (context / "Sealfile").write_text("\n".join(out.splitlines()[:-2]) + "\n")
    build(context, store, tags=["from-sealfile"])
    merged = config_of(store, manifest_of(store, "localhost/merged:latest"))["config"]
    built = config_of(store, manifest_of(store, "localhost/from-sealfile:latest"))["config"]
    assert built == merged
    assert merged["Labels"]["tricky"] == tricky_config["Labels"]["tricky"]


def test_the_rootfs_rule_also_reads_apps_sealos_io_type():
    merged = merge_configs(
        [
            {"config": {"Labels": {"apps.sealos.io/type": "rootfs"}}},
            {"config": {"Labels": {"sealos.io.type": "patch"}}},
        ]
    )
    assert merged.labels == {"apps.sealos.io/type": "rootfs", "sealos.io.type": "rootfs"}
    plain = merge_configs(
        [{"config": {"Labels": {"sealos.io.type": "application"}}}, {"config": {}}]
    )
    assert plain.labels == {"sealos.io.type": "application"}
    assert sealfile(["a", "b"], plain).splitlines()[-2:] == [
        "COPY --from=a . .",
        "COPY --from=b . .",
    ]


def test_merge_pulls_an_input_missing_from_the_store(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    remote = image_factory.image("merge-remote", [500], labels={"sealos.io.type": "application"})
    ref = image_factory.push(remote, plain_registry.host, "apps/remote", "1")
    code, _, err = cli(
        capsys, "merge", "-t", "with-remote", "rootfs:v1", str(ref), "--root", str(store)
    )
    assert code == 0, err
    assert f"Trying to pull {ref}..." in err
    merged = manifest_of(store, "localhost/with-remote:latest")
    assert merged["layers"][-1]["digest"] == remote.layers[0].digest
    assert (
        json.loads(cli(capsys, "inspect", str(ref), "--root", str(store))[1])["Digest"]
        == remote.digest
    )


def test_pipeline_merge_is_the_cli_merge_in_one_call(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    """`pipeline.merge(MergeJob(...))` pulls and merges as `sealpy merge` does, and says
    what it pulls with a status event (the line the CLI prints)."""
    from sealpy.core import pipeline
    from sealpy.core.events import Event, EventKind

    stores = [tmp_path / "cli" / "store", tmp_path / "python" / "store"]
    for store in stores:
        make_images(store.parent, store)
    remote = image_factory.image("merge-call", [300], labels={"sealos.io.type": "application"})
    ref = image_factory.push(remote, plain_registry.host, "apps/call", "1")
    code, out, err = cli(
        capsys, "merge", "-t", "m", "rootfs:v1", str(ref), "--root", str(stores[0])
    )
    assert code == 0, err

    events: list[Event] = []
    result = pipeline.merge(
        pipeline.MergeJob(images=("rootfs:v1", str(ref)), tags=("m",), store_root=stores[1]),
        events.append,
    )
    assert capsys.readouterr() == ("", "")
    assert [result.digest] == out.splitlines()[-1:]
    assert [f"Successfully tagged {n}" for n in result.names] == out.splitlines()[-2:-1]
    status = [e.message for e in events if e.kind is EventKind.STATUS]
    assert status == [f"Trying to pull {ref}..."] and status[0] in err.splitlines()


def test_merge_needs_two_existing_images_and_a_name(tmp_path: Path, capsys, plain_registry):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    missing = f"{plain_registry.host}/nope/missing:1"
    for args, message in (
        (["merge", "-t", "x", "rootfs:v1"], "error: merge needs at least two images"),
        (["merge", "rootfs:v1", "app:v1"], "error: merge needs -t NAME for the result"),
        (["merge", "-t", "x", "rootfs:v1", missing], f"error: {missing}: "),
    ):
        code, _, err = cli(capsys, *args, "--root", str(store))
        assert code != 0 and err.splitlines()[-1].startswith(message) and "Traceback" not in err, (
            err
        )
    assert "localhost/x:latest" not in (store / "index.json").read_text()


def test_merge_save_image_selects_a_strategy_and_has_nothing_to_cache(
    tmp_path: Path, capsys, monkeypatch
):
    store = tmp_path / "store"
    make_images(tmp_path, store)
    code, _, err = cli(
        capsys,
        "merge",
        "-t",
        "x",
        "rootfs:v1",
        "app:v1",
        "--save-image",
        "--strategy",
        "nope",
        "--root",
        str(store),
    )
    assert code == 2 and "unknown strategy 'nope'" in err
    code, _, err = cli(
        capsys, "merge", "-t", "x", "rootfs:v1", "app:v1", "--save-image", "--root", str(store)
    )
    assert code == 0 and "no images to cache" in err


def test_merge_for_several_platforms_gives_an_index(tmp_path: Path, capsys):
    from sealpy.core.reference import Platform

    store = tmp_path / "store"
    both = [Platform.parse("linux/amd64"), Platform.parse("linux/arm64")]
    for name, label in (("one", "a=1"), ("two", "b=2")):
        context = tmp_path / name
        context.mkdir()
        (context / f"{name}.txt").write_text(name)
        (context / "Kubefile").write_text(
            f"FROM scratch\nARG TARGETARCH\nLABEL {label} arch=$TARGETARCH\nCOPY {name}.txt /\n"
        )
        build(context, store, tags=[name], platforms=both)
    code, _, err = cli(
        capsys, "merge", "-t", "m", "one", "two", "--platform", "linux/amd64,linux/arm64",
        "--root", str(store),
    )  # fmt: skip
    assert code == 0, err
    index = manifest_of(store, "localhost/m:latest")
    assert [c["platform"]["architecture"] for c in index["manifests"]] == ["amd64", "arm64"]
    for child in index["manifests"]:
        arch = child["platform"]["architecture"]
        merged = json.loads((store / "blobs/sha256" / child["digest"].split(":")[1]).read_bytes())
        assert config_of(store, merged)["config"]["Labels"] == {"a": "1", "b": "2", "arch": arch}
        assert len(merged["layers"]) == 2


def _layer(store: Store, members: dict[str, bytes]) -> tuple[Descriptor, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    digest = store.layout.put_blob_bytes(compressed)
    diff_id = store.layout.put_blob_bytes(raw.getvalue())  # only its digest matters
    return Descriptor(OCI_LAYER_GZIP, digest, len(compressed)), diff_id


def test_whiteouts_of_a_later_input_do_not_delete_files_of_earlier_ones(tmp_path: Path, capsys):
    store_dir = tmp_path / "store"
    make_images(tmp_path, store_dir)
    store = Store(store_dir)
    # a patch image whose second layer whites out its own etc/ (opaque) and a file that
    # only the rootfs has: Sealos's COPY --from=patch copies patch's file system, in which
    # both whiteouts already happened, so the rootfs keeps etc/kube.conf and bin/kubeadm
    layers = [
        _layer(store, {"etc/old.conf": b"old", "bin/tool": b"tool"}),
        _layer(store, {"etc/.wh..wh..opq": b"", "etc/new.conf": b"new", "bin/.wh.kubeadm": b""}),
    ]
    config = store.put_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        },
        OCI_CONFIG,
    )
    manifest = store.put_manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [d.to_json() for d, _ in layers],
        }
    )
    store.name("localhost/patch:v1", manifest)
    code, _, err = cli(
        capsys, "merge", "-t", "m", "rootfs:v1", "patch:v1", "--root", str(store_dir)
    )
    assert code == 0, err
    assert "patch:v1 has whiteouts in its layers: flattened into one layer" in err
    merged = store.require_platform(store.get("localhost/m:latest"), None)
    rootfs = manifest_of(store_dir, "localhost/rootfs:v1")
    assert [d.digest for d in merged.layers[:-1]] == [d["digest"] for d in rootfs["layers"]]
    root = tmp_path / "merged-fs"
    root.mkdir()
    unpack_image(store, merged.layers, root, "merged")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["bin/kubeadm", "bin/tool", "etc/kube.conf", "etc/new.conf"]
    history = config_of(store_dir, manifest_of(store_dir, "localhost/m:latest"))["history"]
    assert history[-1]["created_by"].endswith("COPY --from=patch:v1 . . (flattened)")
    # an input without whiteouts keeps its layers (shared blobs)
    code, _, err = cli(capsys, "merge", "-t", "n", "patch:v1", "app:v1", "--root", str(store_dir))
    assert code == 0 and "flattened" not in err
    assert store.require_platform(store.get("localhost/n:latest"), None).layers == (
        *manifest.layers,
        *store.require_platform(store.get("localhost/app:v1"), None).layers,
    )


def test_merge_takes_builds_registry_flags_for_the_inputs_it_pulls(
    tmp_path: Path, capsys, image_factory, plain_registry
):
    from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy

    store = tmp_path / "store"
    make_images(tmp_path, store)
    multi = image_factory.multi_platform("merge-flags", ["linux/amd64", "linux/arm64"], [300])
    image_factory.push(multi, plain_registry.host, "apps/multi", "1")
    flags = ["--max-pull-procs", "2", "--tls-verify=false", "--quiet", "--root", str(store)]
    # the first request fails: without retries the merge fails...
    with FaultProxy(plain_registry.host, FaultPlan(at={1: "503"})) as proxy:
        ref = f"{proxy.host}/apps/multi:1"
        code, _, err = cli(capsys, "merge", "-t", "x", "rootfs:v1", ref, "--retry-times", "0",
                           *flags)  # fmt: skip
        assert code == 1 and "503" in err, err
    # ...with --retry-times it is retried, and --all pulls every platform of the input
    with FaultProxy(plain_registry.host, FaultPlan(at={1: "503", 2: "503"})) as proxy:
        ref = f"{proxy.host}/apps/multi:1"
        code, _, err = cli(capsys, "merge", "-t", "x", "rootfs:v1", ref, "--retry-times", "2",
                           "--all", "--platform", "linux/amd64", *flags)  # fmt: skip
        assert code == 0, err
        assert len(proxy.faults) == 2 and "Trying to pull" not in err  # --quiet
    blobs = {p.name for p in (store / "blobs" / "sha256").iterdir()}
    assert {d.split(":")[1] for d in multi.blob_digests} <= blobs
    merged = manifest_of(store, "localhost/x:latest")
    amd64 = multi.for_platform("linux/amd64")
    assert merged["layers"][-1]["digest"] == amd64.layers[0].digest


def test_zstd_layers_are_kept_and_said_not_read(tmp_path: Path, capsys):
    """tarfile cannot read tar+zstd: merge keeps such an input's layers (with a warning)
    and WORKDIR over such a base creates nothing, instead of failing."""
    store_dir = tmp_path / "store"
    make_images(tmp_path, store_dir)
    store = Store(store_dir)
    blob = store.layout.put_blob_bytes(b"\x28\xb5\x2f\xfd not really zstd")
    zstd = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", blob, 20)
    config = store.put_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "3" * 64]},
        },
        OCI_CONFIG,
    )
    manifest = store.put_manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [zstd.to_json()],
        }
    )
    store.name("localhost/zbase:1", manifest)
    code, _, err = cli(capsys, "merge", "-t", "z", "app:v1", "zbase:1", "--root", str(store_dir))
    assert code == 0, err
    assert "zbase:1 has zstd-compressed layers" in err
    merged = store.require_platform(store.get("localhost/z:latest"), None)
    assert merged.layers[-1].digest == blob
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM localhost/zbase:1\nWORKDIR /app\nLABEL a=b\n")
    code, _, err = cli(capsys, "build", "-t", "w", "--root", str(store_dir), str(context))
    assert code == 0, err
    assert "WORKDIR /app: the image has zstd-compressed layers" in err
