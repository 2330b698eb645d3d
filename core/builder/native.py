"""The native builder: Kubefile → OCI image in the store, without a container engine.

It runs the instructions cluster images use — FROM (scratch, an earlier stage, or an
image pulled with the registry client into the store), COPY and ADD (one deterministic
layer each; ADD unpacks local tar archives), ``COPY --from`` (a stage or an image), ENV,
LABEL, ARG, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, MAINTAINER, STOPSIGNAL — and
refuses RUN (and SHELL, HEALTHCHECK, ONBUILD), which need a container: ``--builder buildah``.
WORKDIR creates its directory as Docker and buildah do: a small layer with the parts the
stage's file system lacks (mode 0755, root's), none when it has them all.

A build has two phases, so a wrong build file leaves nothing behind:

1. *plan*, per platform: parse, check every instruction, expand variables, pull base
   images, and resolve every context source of COPY/ADD (missing, outside the context,
   symlink loops, ignored: all errors now, before a byte is written);
2. *write*: the layers (streamed into the store, the same content written once even for
   several platforms), the configs, the manifests (an index for several platforms), and
   last the names.

Every timestamp is ``SOURCE_DATE_EPOCH`` (default 0), so the same context and build file
always give the same image digest.
"""

from __future__ import annotations

import copy
import datetime
import glob
import lzma
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core.builder import BuildRequest, BuildResult, ImageBuilder
from sealpy.core.builder.context import (
    Entry,
    IgnoreMatcher,
    Ownership,
    Tree,
    clean_dest,
    merge_entries,
    plan_sources,
)
from sealpy.core.builder.layers import (
    IMPLICIT_DIR_MODE,
    LayerBlob,
    open_layer,
    readable_layer,
    unpack,
    write_layer,
)
from sealpy.core.builder.parser import (
    NATIVE,
    Instruction,
    expand_flag,
    expand_word,
    expand_words,
    key_values,
    parse_files,
)
from sealpy.core.errors import BuildError, SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BUILD_FILE_NAMES
from sealpy.core.reference import Platform, parse_platforms
from sealpy.core.store import Store, StoredImage, oci_media_type, store_name
from sealpy.core.transport import media
from sealpy.core.transport.media import Descriptor, Manifest

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHORT_ID = 11  # buildah prints image IDs this long after "-->"
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^git@")
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$")
_NEEDS_CONTAINER = {
    "RUN": "RUN needs a container to run commands, and the native builder has none",
    "SHELL": "SHELL only matters to RUN, which needs a container",
    "HEALTHCHECK": "HEALTHCHECK is not supported by the native builder",
    "ONBUILD": "ONBUILD is not supported by the native builder",
}


def timestamp(epoch: int) -> str:
    """RFC 3339, UTC, whole seconds: ``1970-01-01T00:00:00Z`` for epoch 0."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what a plan holds --------------------------------------------------------------------


@dataclass(frozen=True)
class ContextPart:
    """Files of the build context, resolved at plan time."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class ArchivePart:
    """A local tar archive that ADD unpacks into ``target`` (a directory)."""

    path: Path
    target: str


@dataclass(frozen=True)
class ImagePart:
    """``COPY --from``: paths of an earlier stage (``stage``) or a stored image."""

    sources: tuple[str, ...]
    dest: str
    workdir: str
    ownership: Ownership
    stage: int | None = None
    image: str | None = None  # the stored image's (top) manifest digest
    label: str = ""


@dataclass(frozen=True)
class WorkdirPart:
    """WORKDIR: the directory (no leading ``/``) is created if the stage lacks it, as
    Docker and buildah do (mode 0755, owned by root)."""

    path: str


Part = ContextPart | ArchivePart | ImagePart | WorkdirPart


@dataclass
class Step:
    text: str
    created_by: str
    layer: tuple[Part, ...] | None = None
    where: str = ""  # file:line, for errors found only when the layer is written


@dataclass
class Stage:
    """A planned stage: where it starts, its steps, and its final config (without the
    layers, which only the write phase knows)."""

    index: int
    name: str | None
    base_label: str
    base_stage: int | None
    base_manifest: Manifest | None
    config: dict
    steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class StageResult:
    manifest: Manifest
    config: dict
    layers: tuple[Descriptor, ...]


# --- checks before anything runs ------------------------------------------------------------


def split_stages(
    instructions: list[Instruction],
) -> tuple[list[Instruction], list[list[Instruction]]]:
    """Global ARGs (before the first FROM), and the stages; every instruction is checked
    to be one the native builder can run."""
    if not instructions:
        raise BuildError("the build file has no instructions")
    head: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword in _NEEDS_CONTAINER:
            raise ins.error(
                f"{_NEEDS_CONTAINER[ins.keyword]}; use --builder buildah (apt-get install buildah)"
            )
        if ins.keyword not in NATIVE:  # pragma: no cover - the parser knows only these
            raise ins.error("not supported")
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
        elif ins.keyword == "ARG":
            head.append(ins)
        else:
            raise ins.error("the first instruction must be FROM (only ARG may come before it)")
    if not stages:
        raise BuildError(f"{instructions[0].file}: no FROM instruction")
    return head, stages


def platform_args(platform: Platform, build: Platform) -> dict[str, str]:
    """The automatic platform ARGs (TARGETARCH, ...), as BuildKit and buildah define them."""
    out: dict[str, str] = {}
    for prefix, p in (("TARGET", platform), ("BUILD", build)):
        out[f"{prefix}PLATFORM"] = str(p)
        out[f"{prefix}OS"] = p.os
        out[f"{prefix}ARCH"] = p.architecture
        out[f"{prefix}VARIANT"] = p.variant
    return out


# --- the builder ------------------------------------------------------------------------------


class NativeBuilder(ImageBuilder):
    name = "native"
    description = (
        "pure Python: FROM/COPY/ADD/ENV/LABEL/... into OCI layers, no container engine (no RUN)"
    )

    def build(self, request: BuildRequest) -> BuildResult:
        return _Build(request).run()


class _Build:
    """One ``sealpy build``: the state of a single run (no module-level state)."""

    def __init__(self, request: BuildRequest) -> None:
        self.request = request
        self.context = request.context
        self.store = Store(request.store_root)
        self.epoch = request.source_date_epoch or 0
        self.created = timestamp(self.epoch)
        self.explicit_platforms = request.platforms is not None
        self.platforms = tuple(request.platforms or (Platform.host(),))
        self.ignore = IgnoreMatcher.for_context(self.context.root)
        self.context_tree = Tree(self.context.root, ignore=self.ignore)
        self.consumed_args: set[str] = set()
        self._client = None
        self._layers: dict[object, LayerBlob] = {}
        self._paths: dict[str, frozenset[str]] = {}  # layer digest -> paths it names
        self._names = tuple(store_name(t) for t in request.tags)
        self.echo = request.echo
        self.warn = request.warn

    # --- the whole run ---------------------------------------------------------------------

    def run(self) -> BuildResult:
        files = self.context.build_files
        if len(files) > 1:
            listed = ", ".join(p.name for p in files)
            self.warn(
                f"several build files ({listed}) are read as one, in the order "
                f"{', '.join(BUILD_FILE_NAMES)}; use -f to choose one"
            )
        instructions = parse_files(files, root=self.context.root)
        head, stage_instructions = split_stages(instructions)
        try:
            with self.store.writing():
                plans = {p: self._plan(p, head, stage_instructions) for p in self.platforms}
                self._check_plans(plans)
                with ExitStack() as scratch:
                    results = {p: self._write(p, plans[p], scratch) for p in self.platforms}
                top = self._top(results)
                for name in self._names:
                    self.store.name(name, top)
                if not self._names:
                    self.store.add_untagged(top)
        finally:
            if self._client is not None:
                self._client.close()
        return BuildResult(top.digest, self._names)

    def _check_plans(self, plans: Mapping[Platform, list[Stage]]) -> None:
        unused = sorted(set(self.request.build_args) - self.consumed_args)
        if unused:
            self.warn(f"build args not consumed by any ARG: {', '.join(unused)}")
        if self.request.cached_images and not self._copies_registry(plans):
            self.warn(
                "images were cached into registry/ but no COPY or ADD puts registry into "
                "the image; add `COPY registry ./registry` to the build file"
            )

    def _copies_registry(self, plans: Mapping[Platform, list[Stage]]) -> bool:
        registry = self.context.root / "registry"
        for stages in plans.values():
            for stage in stages:
                for step in stage.steps:
                    for part in step.layer or ():
                        if isinstance(part, ContextPart) and any(
                            e.source is not None and e.source.is_relative_to(registry)
                            for e in part.entries
                        ):
                            return True
        return False

    # --- phase 1: plan ---------------------------------------------------------------------

    def _plan(
        self, platform: Platform, head: list[Instruction], stages: list[list[Instruction]]
    ) -> list[Stage]:
        build_args = dict(self.request.build_args)
        automatic = platform_args(platform, Platform.host())
        global_args: dict[str, str | None] = dict(automatic)
        for ins in head:
            for name, default in key_values(ins, _defined(global_args)):
                global_args[name] = build_args.get(name, default)
                self.consumed_args.add(name)
        planned: list[Stage] = []
        for index, instructions in enumerate(stages):
            planned.append(self._plan_stage(index, instructions, platform, global_args, planned))
        return planned

    def _plan_stage(
        self,
        index: int,
        instructions: list[Instruction],
        platform: Platform,
        global_args: Mapping[str, str | None],
        earlier: list[Stage],
    ) -> Stage:
        from_ins = instructions[0]
        words = expand_words(from_ins, _defined(global_args))
        if len(words) not in (1, 3):
            raise from_ins.error(f"expected FROM IMAGE [AS NAME], got {' '.join(words)!r}")
        base_text = words[0]
        name = words[2].lower() if len(words) == 3 else None
        base_platform = platform
        platform_flag = expand_flag(from_ins, "platform", _defined(global_args))
        if platform_flag:
            base_platform = parse_platforms([platform_flag])[0]
        stage = self._base(index, name, base_text, base_platform, earlier, from_ins)
        stage.steps.append(Step(from_ins.original, "", where=from_ins.where))
        args: dict[str, str | None] = {}
        state = _StageState(stage, args, cmd_set=False)
        for ins in instructions[1:]:
            self._plan_step(ins, state, global_args, earlier)
        return stage

    def _base(
        self,
        index: int,
        name: str | None,
        text: str,
        platform: Platform,
        earlier: list[Stage],
        ins: Instruction,
    ) -> Stage:
        if text.lower() == "scratch":
            config = {
                "architecture": platform.architecture,
                "os": platform.os,
                "config": {"Env": [DEFAULT_PATH]},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }
            if platform.variant:
                config["variant"] = platform.variant
            return Stage(index, name, "scratch", None, None, config)
        for stage in earlier:
            if stage.name == text.lower():
                return Stage(index, name, text, stage.index, None, copy.deepcopy(stage.config))
        image = self._image(text, platform, ins)
        manifest = self.store.require_platform(
            image, platform if self._platform_matters() else None
        )
        config = self.store.config(manifest)
        for stale in ("container", "container_config", "docker_version"):
            config.pop(stale, None)
        return Stage(index, name, image.display, None, manifest, config)

    def _platform_matters(self) -> bool:
        # With no --platform, a single-platform base is taken as it is (as buildah does).
        return self.explicit_platforms

    def _image(self, text: str, platform: Platform, ins: Instruction) -> StoredImage:
        """An image from the store, pulled first if it is not there (for this platform)."""
        from sealpy.core.storeio import ensure_image

        wanted = platform if self._platform_matters() else None
        try:
            return ensure_image(self.store, text, wanted, self._registry_client, echo=self.echo)
        except SealpyError as exc:
            raise ins.error(f"{text}: {exc}") from None

    def _registry_client(self):
        if self._client is None:
            from sealpy.core.transport.remote import RegistryClient

            self._client = RegistryClient(
                credentials=self.request.credentials,
                tls_verify=self.request.tls_verify,
                registries=self.request.registries,
            )
        return self._client

    def _plan_step(
        self,
        ins: Instruction,
        state: _StageState,
        global_args: Mapping[str, str | None],
        earlier: list[Stage],
    ) -> None:
        config = state.stage.config
        body = config.setdefault("config", {})
        env = state.expansion_env()
        created_by = f"/bin/sh -c #(nop) {ins.original}"
        layer: tuple[Part, ...] | None = None
        keyword = ins.keyword
        if keyword == "ARG":
            for name, default in key_values(ins, env):
                self.consumed_args.add(name)
                if name in self.request.build_args:
                    state.args[name] = self.request.build_args[name]
                elif default is not None:
                    state.args[name] = default
                else:
                    state.args[name] = global_args.get(name)
        elif keyword == "ENV":
            for name, value in key_values(ins, env):
                _set_env(body, name, value)
        elif keyword == "LABEL":
            labels = body.get("Labels") or {}
            for name, value in key_values(ins, env):
                labels[name] = value
            body["Labels"] = labels
        elif keyword in ("CMD", "ENTRYPOINT"):
            value = (
                list(ins.exec_form)
                if ins.exec_form is not None
                else (["/bin/sh", "-c", ins.args] if ins.args else [])
            )
            if keyword == "CMD":
                body["Cmd"] = value
                state.cmd_set = True
            else:
                body["Entrypoint"] = value
                if not state.cmd_set:
                    body.pop("Cmd", None)  # Docker: a new ENTRYPOINT drops the base's CMD
        elif keyword == "WORKDIR":
            path = expand_word(ins, env)
            body["WorkingDir"] = posixpath.normpath(
                posixpath.join(body.get("WorkingDir") or "/", path)
            )
            if body["WorkingDir"].strip("/"):
                layer = (WorkdirPart(body["WorkingDir"].strip("/")),)
        elif keyword == "USER":
            body["User"] = expand_word(ins, env)
        elif keyword == "STOPSIGNAL":
            body["StopSignal"] = expand_word(ins, env)
        elif keyword == "MAINTAINER":
            config["author"] = ins.args
        elif keyword == "EXPOSE":
            ports = body.get("ExposedPorts") or {}
            for word in expand_words(ins, env):
                ports.update({p: {} for p in _ports(word, ins)})
            body["ExposedPorts"] = ports
        elif keyword == "VOLUME":
            volumes = body.get("Volumes") or {}
            for word in expand_words(ins, env):
                if not word:
                    raise ins.error("a volume path cannot be empty")
                volumes[word] = {}
            body["Volumes"] = volumes
        elif keyword in ("COPY", "ADD"):
            layer = self._plan_copy(ins, state, env, earlier)
        state.stage.steps.append(Step(ins.original, created_by, layer, ins.where))

    def _plan_copy(
        self, ins: Instruction, state: _StageState, env: Mapping[str, str], earlier: list[Stage]
    ) -> tuple[Part, ...]:
        words = expand_words(ins, env)
        if len(words) < 2:
            raise ins.error("needs a source and a destination")
        sources, dest = words[:-1], words[-1]
        ownership = _ownership(ins, env)
        workdir = state.stage.config.get("config", {}).get("WorkingDir") or "/"
        source_from = expand_flag(ins, "from", env)
        try:
            if source_from is not None:
                return (
                    self._plan_copy_from(
                        ins, source_from, sources, dest, workdir, ownership, state, earlier
                    ),
                )
            if ins.keyword == "ADD":
                return self._plan_add(ins, sources, dest, workdir, ownership)
            entries, _ = plan_sources(
                self.context_tree, sources, dest, workdir, ownership, keyword=ins.keyword
            )
        except BuildError as exc:
            raise ins.error(str(exc)) from None
        return (ContextPart(tuple(entries)),)

    def _plan_add(
        self, ins: Instruction, sources: list[str], dest: str, workdir: str, ownership: Ownership
    ) -> tuple[Part, ...]:
        for source in sources:
            if _URL.match(source):
                raise BuildError(
                    f"{source}: ADD of a URL is not supported (no network at build time); "
                    "download it into the context and COPY it"
                )
        plain: list[str] = []
        archives: list[ArchivePart] = []
        target, dest_is_dir = clean_dest(dest, workdir)
        if len(sources) > 1 and not dest_is_dir:
            raise BuildError(
                f"ADD with several sources needs a directory destination ending in /, not {dest}"
            )
        for source in sources:
            if not _has_glob(source):
                path = self.context_tree.resolve(source.lstrip("/"))
                if path.is_file() and _is_tar(path):
                    archives.append(ArchivePart(path, target))
                else:
                    plain.append(source)
                continue
            # A wildcard: each match that is an archive is unpacked, as Docker does; the
            # rest is copied (by escaped name: a match may hold wildcard characters).
            matches = [(m, self.context_tree.resolve(m)) for m in self.context_tree.glob(source)]
            tars = [(m, p) for m, p in matches if p.is_file() and _is_tar(p)]
            if not tars:
                plain.append(source)  # unchanged, so "no file matches" is reported as for COPY
                continue
            if len(matches) > 1 and not dest_is_dir:
                raise BuildError(
                    f"ADD {source} matches several files and needs a directory destination "
                    f"ending in /, not {dest}"
                )
            archives.extend(ArchivePart(p, target) for _, p in tars)
            plain.extend(glob.escape(m) for m, p in matches if (m, p) not in tars)
        parts: list[Part] = []
        if plain:
            entries, _ = plan_sources(
                self.context_tree, plain, dest, workdir, ownership, keyword="ADD"
            )
            parts.append(ContextPart(tuple(entries)))
        parts.extend(archives)
        return tuple(parts)

    def _plan_copy_from(
        self,
        ins: Instruction,
        source_from: str,
        sources: list[str],
        dest: str,
        workdir: str,
        ownership: Ownership,
        state: _StageState,
        earlier: list[Stage],
    ) -> ImagePart:
        common = {
            "sources": tuple(sources),
            "dest": dest,
            "workdir": workdir,
            "ownership": ownership,
        }
        for stage in earlier:
            if stage.name == source_from.lower() or str(stage.index) == source_from:
                return ImagePart(stage=stage.index, label=f"stage {source_from}", **common)  # type: ignore[arg-type]
        platform = self._stage_platform(state.stage)
        image = self._image(source_from, platform, ins)
        return ImagePart(image=image.digest, label=image.name or source_from, **common)  # type: ignore[arg-type]

    def _stage_platform(self, stage: Stage) -> Platform:
        return Platform.from_oci(stage.config)

    # --- phase 2: write --------------------------------------------------------------------

    def _write(self, platform: Platform, stages: list[Stage], scratch: ExitStack) -> Manifest:
        results: dict[int, StageResult] = {}
        prefix_all = len(stages) > 1
        many_platforms = len(self.platforms) > 1
        for stage in stages:
            prefix = f"[{platform}] " if many_platforms else ""
            if prefix_all:
                prefix += f"[{stage.index + 1}/{len(stages)}] "
            results[stage.index] = self._write_stage(stage, results, platform, prefix, scratch)
        final = results[stages[-1].index]
        return final.manifest

    def _write_stage(
        self,
        stage: Stage,
        results: dict[int, StageResult],
        platform: Platform,
        prefix: str,
        scratch: ExitStack,
    ) -> StageResult:
        if stage.base_stage is not None:
            base = results[stage.base_stage]
            layers = list(base.layers)
            diff_ids = list(base.config["rootfs"]["diff_ids"])
            history = list(base.config.get("history") or [])
        elif stage.base_manifest is not None:
            layers = [
                Descriptor(oci_media_type(d.media_type), d.digest, d.size)
                for d in stage.base_manifest.layers
            ]
            base_config = self.store.config(stage.base_manifest)
            diff_ids = list((base_config.get("rootfs") or {}).get("diff_ids") or [])
            history = list(base_config.get("history") or [])
        else:
            layers, diff_ids, history = [], [], []
        total = len(stage.steps)
        for number, step in enumerate(stage.steps, 1):
            self.echo(f"{prefix}STEP {number}/{total}: {step.text}")
            if number == 1:
                continue  # FROM: its layers and history are the base's
            entry = {"created": self.created, "created_by": step.created_by}
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
                    if str(exc).startswith(step.where):
                        raise
                    raise BuildError(f"{step.where}: {step.text.split()[0]}: {exc}") from None
                layers.append(blob.descriptor)
                diff_ids.append(blob.diff_id)
            history.append(entry)
        config = copy.deepcopy(stage.config)
        config["created"] = self.created
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        config["history"] = history
        config_descriptor = self.store.put_json(config, media.OCI_CONFIG)
        manifest = self.store.put_manifest(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_MANIFEST,
                "config": config_descriptor.to_json(),
                "layers": [d.to_json() for d in layers],
            }
        )
        self.echo(f"{prefix}--> {config_descriptor.digest.removeprefix('sha256:')[:SHORT_ID]}")
        return StageResult(manifest, config, tuple(layers))

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
            wanted = platform if self._platform_matters() else None
            image = StoredImage(part.label, Descriptor("", part.image, 0))
            layers = self.store.require_platform(image, wanted).layers
        root = self._unpack_dir(scratch)
        tree = unpack_image(self.store, layers, root, part.label)
        entries, _ = plan_sources(tree, list(part.sources), part.dest, part.workdir, part.ownership)
        return entries

    def _top(self, results: Mapping[Platform, Manifest]) -> Manifest:
        if len(results) == 1:
            return next(iter(results.values()))
        entries = []
        for manifest in results.values():
            config = self.store.config(manifest)
            platform = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
            if config.get("variant"):
                platform["variant"] = config["variant"]
            entries.append(manifest.descriptor(platform).to_json())
        return self.store.put_manifest(
            {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
        )


def unpack_image(store: Store, layers: Sequence[Descriptor], root: Path, label: str) -> Tree:
    """An image's file system: its ``layers`` unpacked in order into ``root``, each
    layer's whiteouts deleting what the layers below put there (``COPY --from``)."""
    for layer in layers:
        with store.layout.open_blob(layer.digest) as f, open_layer(f) as tar:
            unpack(tar, root, whiteouts=True, what=f"COPY --from={label}")
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


@dataclass
class _StageState:
    stage: Stage
    args: dict[str, str | None]
    cmd_set: bool

    def expansion_env(self) -> dict[str, str]:
        """ARGs declared in the stage, overridden by ENV (as in Docker)."""
        env = _defined(self.args)
        for item in self.stage.config.get("config", {}).get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env


def _with_parents(names: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for name in names:
        while name and name not in out:
            out.add(name)
            name = posixpath.dirname(name)
    return frozenset(out)


def _defined(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _set_env(body: dict, name: str, value: str) -> None:
    env = list(body.get("Env") or [])
    item = f"{name}={value}"
    for i, existing in enumerate(env):
        if existing.partition("=")[0] == name:
            env[i] = item
            break
    else:
        env.append(item)
    body["Env"] = env


def _ports(word: str, ins: Instruction) -> list[str]:
    match = _PORT.match(word)
    if not match:
        raise ins.error(f"invalid port {word!r}: expected PORT[-PORT][/tcp|udp|sctp]")
    first, last, proto = (
        int(match.group(1)),
        int(match.group(2) or match.group(1)),
        match.group(3) or "tcp",
    )
    if not 0 < first <= last <= 65535:
        raise ins.error(f"invalid port range {word!r}")
    return [f"{port}/{proto}" for port in range(first, last + 1)]


def _ownership(ins: Instruction, env: Mapping[str, str]) -> Ownership:
    uid = gid = 0
    mode = None
    chown = expand_flag(ins, "chown", env)
    if chown:
        user, _, group = chown.partition(":")
        uid = _numeric_id(user, ins)
        gid = _numeric_id(group, ins) if group else uid
    chmod = expand_flag(ins, "chmod", env)
    if chmod:
        try:
            mode = int(chmod, 8)
        except ValueError:
            raise ins.error(f"invalid --chmod {chmod!r}: expected an octal mode") from None
        if not 0 <= mode <= 0o7777:
            raise ins.error(f"invalid --chmod {chmod!r}")
    return Ownership(uid, gid, mode)


def _numeric_id(text: str, ins: Instruction) -> int:
    if text == "root":
        return 0
    if text.isdigit():
        return int(text)
    raise ins.error(
        f"--chown {text!r}: only numeric IDs (or root) without a container's /etc/passwd"
    )


def _has_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def _is_tar(path: Path) -> bool:
    """Whether ADD unpacks ``path``: a (possibly compressed) tar with at least one member,
    as Docker decides. ``tarfile.is_tarfile`` alone accepts any 512 zero bytes (an empty
    archive's end marker), which would make such a file vanish instead of being copied."""
    try:
        with open(path, "rb") as f, open_layer(f) as tar:
            return tar.next() is not None
    except (BuildError, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError):
        return False


@hookimpl
def sealpy_register_builders(registry) -> None:
    registry.register(NativeBuilder)
