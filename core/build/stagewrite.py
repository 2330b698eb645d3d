"""Phase 2 of a native build: a planned stage's layers, config and manifest, written into
the store (see :mod:`sealpy.core.build.native` for the phases).

A layer is written once even when several platforms need it (context files are the same
for all); what WORKDIR must create is found from the paths the stage's layers already
name; ``--squash`` flattens the final image into one layer.
"""

from __future__ import annotations

import copy
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

from sealpy.core.build import OutputOptions
from sealpy.core.build.context import Entry, Ownership, Tree, merge_entries, plan_sources
from sealpy.core.build.layers import (
    IMPLICIT_DIR_MODE,
    LayerBlob,
    open_layer,
    readable_layer,
    unpack,
    write_layer,
)
from sealpy.core.build.output import write_image
from sealpy.core.build.plan import (
    ArchivePart,
    ContextPart,
    ImagePart,
    Part,
    Stage,
    StageResult,
    WorkdirPart,
)
from sealpy.core.errors import BuildError
from sealpy.core.image import config as image_config
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.model import BuildContext
from sealpy.core.reference import Platform
from sealpy.core.store.layout import Store, StoredImage, oci_media_type

SHORT_ID = 11  # buildah prints image IDs this long after "-->"


class StageWriter:
    """Writes the planned stages of one build (all its platforms)."""

    def __init__(
        self,
        store: Store,
        context: BuildContext,
        *,
        epoch: int,
        output: OutputOptions,
        echo: Callable[[str], None],
        warn: Callable[[str], None],
        many_platforms: bool,
        platform_matters: bool,
    ) -> None:
        self.store = store
        self.context = context
        self.epoch = epoch
        self.created = image_config.timestamp(epoch)
        self.output = output
        self.echo = echo
        self.warn = warn
        self.many_platforms = many_platforms
        self.platform_matters = platform_matters
        self._layers: dict[object, LayerBlob] = {}
        self._paths: dict[str, frozenset[str]] = {}  # layer digest -> paths it names

    def write(self, platform: Platform, stages: list[Stage], scratch: ExitStack) -> Manifest:
        """A platform's stages, in order; the last one's manifest."""
        results: dict[int, StageResult] = {}
        prefix_all = len(stages) > 1
        many_platforms = self.many_platforms
        for stage in stages:
            prefix = f"[{platform}] " if many_platforms else ""
            if prefix_all:
                prefix += f"[{stage.index + 1}/{len(stages)}] "
            final = stage is stages[-1]
            results[stage.index] = self._write_stage(
                stage, results, platform, prefix, scratch, final=final
            )
        return results[stages[-1].index].manifest

    def _write_stage(
        self,
        stage: Stage,
        results: dict[int, StageResult],
        platform: Platform,
        prefix: str,
        scratch: ExitStack,
        *,
        final: bool = False,
    ) -> StageResult:
        if stage.base_stage is not None:
            base = results[stage.base_stage]
            layers = list(base.layers)
            diff_ids = image_config.diff_ids(base.config)
            history = image_config.history(base.config)
        elif stage.base_manifest is not None:
            layers = [
                Descriptor(oci_media_type(d.media_type), d.digest, d.size)
                for d in stage.base_manifest.layers
            ]
            base_config = self.store.config(stage.base_manifest)
            diff_ids = image_config.diff_ids(base_config)
            history = image_config.history(base_config)
        else:
            layers, diff_ids, history = [], [], []
        inherited = len(history)
        total = len(stage.steps)
        for number, step in enumerate(stage.steps, 1):
            self.echo(f"{prefix}STEP {number}/{total}: {step.text}")
            if number == 1:
                continue  # FROM: its layers and history are the base's
            entry: dict[str, object] = {"created": self.created, "created_by": step.created_by}
            if step.layer and isinstance(step.layer[0], WorkdirPart):
                blob = self._workdir_layer(step.layer[0], layers)
                if blob is None:
                    entry["empty_layer"] = True
                else:
                    layers.append(blob.descriptor)
                    diff_ids.append(blob.diff_id)
            elif step.layer is None:
                entry["empty_layer"] = True
            else:
                try:
                    blob = self._layer(step.layer, results, platform, scratch)
                except BuildError as exc:
                    if not step.where or exc.subject == step.where:
                        raise  # it names its instruction already
                    raise exc.about(f"{step.where}: {step.text.split()[0]}") from exc.cause
                layers.append(blob.descriptor)
                diff_ids.append(blob.diff_id)
            history.append(entry)
        if final and self.output.squash:
            layers, diff_ids, history = self._squash(stage, layers, history[inherited:])
        config = copy.deepcopy(stage.config)
        config["created"] = self.created
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        config["history"] = history
        manifest = write_image(self.store, config, layers, self.output, final=final)
        self.echo(f"{prefix}--> {manifest.config.digest.removeprefix('sha256:')[:SHORT_ID]}")
        return StageResult(manifest, config, tuple(layers))

    def _squash(
        self, stage: Stage, layers: list[Descriptor], own_history: list[dict]
    ) -> tuple[list[Descriptor], list[str], list[dict]]:
        """``--squash``: every layer of the image, the base's included, as one layer (as
        buildah 1.28 does); the history keeps this stage's steps only, the last one
        standing for the layer."""
        blob = flatten_image(self.store, layers, stage.base_label, self.epoch)
        history = [{**entry, "empty_layer": True} for entry in own_history] or [
            {"created": self.created}
        ]
        history[-1].pop("empty_layer")
        return [blob.descriptor], [blob.diff_id], history

    def _layer(
        self,
        parts: tuple[Part, ...],
        results: dict[int, StageResult],
        platform: Platform,
        scratch: ExitStack,
    ) -> LayerBlob:
        # Context files are the same for every platform: write such a layer once.
        key: object = (parts, platform if any(isinstance(p, ImagePart) for p in parts) else None)
        if key in self._layers:
            return self._layers[key]
        groups: list[list[Entry]] = []
        for part in parts:
            if isinstance(part, ContextPart):
                groups.append(list(part.entries))
            elif isinstance(part, ArchivePart):
                groups.append(self._archive_entries(part, scratch))
            else:
                assert isinstance(part, ImagePart)  # WORKDIR's part never reaches here
                groups.append(self._image_entries(part, results, platform, scratch))
        entries = merge_entries(groups)
        blob = write_layer(entries, self.store.layout.new_blob_writer, epoch=self.epoch)
        self._paths[blob.descriptor.digest] = _with_parents(e.name for e in entries)
        self._layers[key] = blob
        return blob

    def _workdir_layer(self, part: WorkdirPart, layers: list[Descriptor]) -> LayerBlob | None:
        """A layer holding the WORKDIR directory and its parents that the stage's file
        system lacks; ``None`` when it has them all (nothing is changed)."""
        if not all(readable_layer(layer.media_type) for layer in layers):
            self.warn(
                f"WORKDIR /{part.path}: the image has zstd-compressed layers, which sealpy "
                "cannot read, so the directory is not created (it may exist already)"
            )
            return None
        existing: set[str] = set()
        for layer in layers:
            existing |= self._layer_paths(layer)
        components = part.path.split("/")
        wanted = ["/".join(components[: i + 1]) for i in range(len(components))]
        missing = [Entry(name, "dir", IMPLICIT_DIR_MODE) for name in wanted if name not in existing]
        if not missing:
            return None
        blob = write_layer(missing, self.store.layout.new_blob_writer, epoch=self.epoch)
        self._paths[blob.descriptor.digest] = frozenset(wanted)
        return blob

    def _layer_paths(self, layer: Descriptor) -> frozenset[str]:
        """Every path a layer names (and their parents); a base image's layer is read for
        its tar headers once. Whiteouts are not applied: a path deleted later still counts
        as present, so WORKDIR then leaves it alone rather than guess."""
        if layer.digest not in self._paths:
            names: list[str] = []
            with self.store.layout.open_blob(layer.digest) as f, open_layer(f) as tar:
                names.extend(posixpath.normpath("/" + m.name).strip("/") for m in tar)
            self._paths[layer.digest] = _with_parents(names)
        return self._paths[layer.digest]

    def _unpack_dir(self, scratch: ExitStack) -> Path:
        path = Path(tempfile.mkdtemp(prefix="unpack-", dir=self.store.temp_dir()))
        path.chmod(0o755)
        scratch.callback(shutil.rmtree, path, True)
        return path

    def _archive_entries(self, part: ArchivePart, scratch: ExitStack) -> list[Entry]:
        root = self._unpack_dir(scratch)
        what = f"ADD {self.context.relative(part.path)}"
        with open(part.path, "rb") as f, open_layer(f) as tar:
            unpack(tar, root, whiteouts=False, what=what)
        tree = Tree(root, what=f"archive {self.context.relative(part.path)}", jail=True)
        entries, _ = plan_sources(tree, ["."], f"/{part.target}/", "/", Ownership())
        # The directory unpacked into is not part of the archive: no entry (and no mode) for it.
        return [e for e in entries if e.name != part.target]

    def _image_entries(
        self,
        part: ImagePart,
        results: dict[int, StageResult],
        platform: Platform,
        scratch: ExitStack,
    ) -> list[Entry]:
        if part.stage is not None:
            layers = results[part.stage].layers
        else:
            assert part.image is not None
            wanted = platform if self.platform_matters else None
            image = StoredImage(part.label, Descriptor("", part.image, 0))
            layers = self.store.require_platform(image, wanted).layers
        root = self._unpack_dir(scratch)
        tree = unpack_image(self.store, layers, root, part.label)
        entries, _ = plan_sources(tree, list(part.sources), part.dest, part.workdir, part.ownership)
        return entries


def unpack_image(store: Store, layers: Sequence[Descriptor], root: Path, label: str) -> Tree:
    """An image's file system: its ``layers`` unpacked in order into ``root``, each
    layer's whiteouts deleting what the layers below put there (``COPY --from``)."""
    for layer in layers:
        with store.layout.open_blob(layer.digest) as f, open_layer(f) as tar:
            unpack(tar, root, whiteouts=True, what=f"COPY --from={label}: layer {layer.digest}")
    return Tree(root, what=label, jail=True)


def flatten_image(store: Store, layers: Sequence[Descriptor], label: str, epoch: int) -> LayerBlob:
    """One layer holding what ``COPY --from=<image> . .`` copies: the image's layers
    applied in order (whiteouts done), written as a deterministic layer into the store."""
    root = Path(tempfile.mkdtemp(prefix="flatten-", dir=store.temp_dir()))
    try:
        root.chmod(0o755)
        tree = unpack_image(store, layers, root, label)
        entries, _ = plan_sources(tree, ["."], ".", "/", Ownership())
        return write_layer(merge_entries([entries]), store.layout.new_blob_writer, epoch=epoch)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _with_parents(names: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for name in names:
        while name and name not in out:
            out.add(name)
            name = posixpath.dirname(name)
    return frozenset(out)
