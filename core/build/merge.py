"""``sealpy merge``: several cluster images into one, by Sealos's rules.

Sealos writes a Sealfile — ``FROM scratch``, the merged LABEL and ENV, ENTRYPOINT, CMD,
then ``COPY --from=<image> . .`` per input — and builds it. The result here is what
that build gives, except that each input keeps its own layers instead of being flattened
into one (the same files, and the blobs are shared with the inputs):

- layers: every input's layers, inputs in order — except an input after the first whose
  layers hold whiteouts: kept, they would delete files of the inputs before it, so it is
  flattened into one layer (its whiteouts applied among its own layers), as Sealos's
  ``COPY --from`` does;
- labels: merged, a later input wins; if any input has ``sealos.io.type`` or
  ``apps.sealos.io/type`` equal to ``rootfs``, both are ``rootfs`` in the result;
- ENV: merged by name, a later input wins, ``PATH`` dropped — the result has the
  default ``PATH`` that ``FROM scratch`` gives, as the Sealfile build does;
- ENTRYPOINT and CMD: the inputs' arrays concatenated in input order;
- nothing else of the inputs' configs (WORKDIR, USER, ...) survives ``FROM scratch``.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealpy.core.build.layers import (
    WHITEOUT,
    open_layer,
    readable_layer,
    whiteout_target,
)
from sealpy.core.build.native import DEFAULT_PATH, flatten_image
from sealpy.core.errors import BuildError, StoreError, UsageError
from sealpy.core.image import config as image_config
from sealpy.core.image import media
from sealpy.core.image.compose import new_manifest, platform_index
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.reference import Platform
from sealpy.core.store.layout import Store, StoredImage, oci_media_type

TYPE_LABELS = ("sealos.io.type", "apps.sealos.io/type")
ROOTFS = "rootfs"


@dataclass(frozen=True)
class MergedConfig:
    """The parts of a config that merging combines."""

    labels: dict[str, str]
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]


def merge_configs(configs: Sequence[dict]) -> MergedConfig:
    """Sealos's merge rules over image configs (full config documents), in input order."""
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    rootfs = False
    for config in configs:
        body = config.get("config") or {}
        for key, value in (body.get("Labels") or {}).items():
            labels[key] = value
            if key in TYPE_LABELS and value == ROOTFS:
                rootfs = True
        for item in body.get("Env") or []:
            key, _, value = item.partition("=")
            if key != "PATH":
                env[key] = value
        entrypoint.extend(body.get("Entrypoint") or [])
        cmd.extend(body.get("Cmd") or [])
    if rootfs:
        for key in TYPE_LABELS:
            labels[key] = ROOTFS
    return MergedConfig(labels, env, entrypoint, cmd)


def quote(value: str) -> str:
    """``value`` as a double-quoted Dockerfile word that reads back as exactly ``value``:
    inside double quotes the escape character only escapes ``"``, ``$`` and itself, and
    every ``$`` is escaped — a ``$(`` would stay literal unescaped too, but ``$B`` or
    ``${B}`` would be expanded by the rebuild. Non-ASCII text is kept as it is (JSON's
    ``\u00e9`` would read back as those six characters). A newline cannot be written in a
    Dockerfile value at all; it stays as it is."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def sealfile(inputs: Sequence[str], merged: MergedConfig) -> str:
    """The Sealfile Sealos would build for this merge (shown by ``--print-sealfile``)."""
    lines = ["FROM scratch"]
    lines += [f"LABEL {quote(k)}={quote(v)}" for k, v in merged.labels.items()]
    lines += [f"ENV {k}={quote(v)}" for k, v in merged.env.items()]
    # The exec form is JSON and is not expanded: only non-ASCII needs care.
    if merged.entrypoint:
        lines.append(f"ENTRYPOINT {json.dumps(merged.entrypoint, ensure_ascii=False)}")
    if merged.cmd:
        lines.append(f"CMD {json.dumps(merged.cmd, ensure_ascii=False)}")
    lines += [f"COPY --from={name} . ." for name in inputs]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MergeResult:
    digest: str
    names: tuple[str, ...]
    sealfile: str


def merge(
    store: Store,
    inputs: Sequence[str],
    names: Sequence[str],
    *,
    platforms: Sequence[Platform] | None = None,
    epoch: int = 0,
    resolve: Callable[[str, Platform | None], StoredImage] | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> MergeResult:
    """Merge the stored images ``inputs`` (``resolve`` finds or pulls one for a platform;
    default: the store only) into a new image named ``names``. Without ``platforms`` each
    input gives its only (or the host's) image; with several, the result is an index."""
    if len(inputs) < 2:
        raise UsageError("merge needs at least two images")
    if not names:
        raise UsageError("merge needs a name for the result (-t NAME)")

    def find(text: str, platform: Platform | None) -> StoredImage:
        return resolve(text, platform) if resolve else store.get(text)

    with store.writing():
        results: list[Manifest] = []
        text = ""
        for platform in platforms or (None,):
            chosen = [
                (name, store.require_platform(find(name, platform), platform)) for name in inputs
            ]
            manifest, text = _merge_one(store, chosen, epoch, platform, warn)
            results.append(manifest)
        top = results[0]
        if len(results) > 1:
            top = platform_index(results, store.config)
            store.layout.put_manifest(top)
        for name in names:
            store.name(name, top)
    return MergeResult(top.digest, tuple(names), text)


def _merge_one(
    store: Store,
    inputs: list[tuple[str, Manifest]],
    epoch: int,
    platform: Platform | None,
    warn: Callable[[str], None],
) -> tuple[Manifest, str]:
    configs = [store.config(manifest) for _, manifest in inputs]
    merged = merge_configs(configs)
    created = image_config.timestamp(epoch)
    platforms = {str(Platform.from_oci(c)) for c in configs}
    if len(platforms) > 1 and platform is None:
        warn(
            f"the inputs are for different platforms ({', '.join(sorted(platforms))}); "
            "the result says it is for the first one's"
        )
    first = configs[0]
    body: dict = {"Env": [DEFAULT_PATH, *(f"{k}={v}" for k, v in merged.env.items())]}
    if merged.labels:
        body["Labels"] = merged.labels
    if merged.entrypoint:
        body["Entrypoint"] = merged.entrypoint
    if merged.cmd:
        body["Cmd"] = merged.cmd
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    history: list[dict] = []
    for key, present in (
        ("LABEL", merged.labels),
        ("ENV", merged.env),
        ("ENTRYPOINT", merged.entrypoint),
        ("CMD", merged.cmd),
    ):
        if present:
            history.append(
                {
                    "created": created,
                    "created_by": f"/bin/sh -c #(nop) {key} (merged)",
                    "empty_layer": True,
                }
            )
    for position, ((name, manifest), config) in enumerate(zip(inputs, configs, strict=True)):
        ids = image_config.diff_ids(config)
        if len(ids) != len(manifest.layers):
            raise StoreError(
                f"{name}: its config lists {len(ids)} layers, its manifest {len(manifest.layers)}"
            )
        if position > 0 and _has_whiteouts(store, manifest, name, warn):
            # Kept as they are, its whiteouts would delete files of the inputs before it;
            # Sealos's COPY --from copies its file system, whiteouts applied among its own
            # layers only: one layer with that content does the same.
            warn(
                f"{name} has whiteouts in its layers: flattened into one layer, so they do "
                "not delete files of the images before it"
            )
            blob = flatten_image(store, manifest.layers, name, epoch)
            layers.append(blob.descriptor)
            diff_ids.append(blob.diff_id)
            history.append(
                {
                    "created": created,
                    "created_by": f"/bin/sh -c #(nop) COPY --from={name} . . (flattened)",
                }
            )
            continue
        for number, layer in enumerate(manifest.layers, 1):
            layers.append(Descriptor(oci_media_type(layer.media_type), layer.digest, layer.size))
            history.append(
                {
                    "created": created,
                    "created_by": f"/bin/sh -c #(nop) COPY --from={name} . . "
                    f"(layer {number}/{len(manifest.layers)})",
                }
            )
        diff_ids.extend(ids)
    config = {
        "created": created,
        "architecture": first.get("architecture", ""),
        "os": first.get("os", ""),
        "config": body,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if first.get("variant"):
        config["variant"] = first["variant"]
    manifest = new_manifest(store.put_json(config, media.OCI_CONFIG), layers)
    store.layout.put_manifest(manifest)
    return manifest, sealfile([name for name, _ in inputs], merged)


def _has_whiteouts(
    store: Store, manifest: Manifest, name: str, warn: Callable[[str], None]
) -> bool:
    if not all(readable_layer(layer.media_type) for layer in manifest.layers):
        warn(
            f"{name} has zstd-compressed layers, which sealpy cannot read: its layers are kept "
            "as they are (whiteouts in them, if any, apply to the images before it)"
        )
        return False
    found = False
    for layer in manifest.layers:
        with store.layout.open_blob(layer.digest) as f:
            # Every layer is read to its end: an invalid whiteout is refused here, naming
            # its layer, before flattening would apply it.
            found = _layer_whiteouts(f, f"{name}: layer {layer.digest}") or found
    return found


def _layer_whiteouts(stream, what: str) -> bool:
    """Whether a layer holds whiteouts; BuildError for one that names no single entry."""
    found = False
    try:
        with open_layer(stream) as tar:
            for member in tar:
                if posixpath.basename(posixpath.normpath("/" + member.name)).startswith(WHITEOUT):
                    whiteout_target(member.name, what)
                    found = True
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BuildError(f"{what}: cannot read layer: {exc}") from None
    return found
