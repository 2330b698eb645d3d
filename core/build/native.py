"""The native builder: Kubefile → OCI image in the store, without a container engine.

It runs the instructions cluster images use — FROM (scratch, an earlier stage, or an
image pulled with the registry client into the store), COPY and ADD (one deterministic
layer each; ADD unpacks local tar archives), ``COPY --from`` (a stage or an image), ENV,
LABEL, ARG, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, MAINTAINER, STOPSIGNAL — and
refuses RUN (and SHELL, HEALTHCHECK, ONBUILD), which need a container: ``--builder buildah``.
WORKDIR creates its directory as Docker and buildah do: a small layer with the parts the
stage's file system lacks (mode 0755, root's), none when it has them all.

A build has two phases, so a wrong build file leaves nothing behind:

1. *plan* (here; the plan's data in :mod:`sealpy.core.build.plan`), per platform:
   parse, check every instruction, expand variables, pull base images, and resolve every
   context source of COPY/ADD (missing, outside the context, symlink loops, ignored: all
   errors now, before a byte is written);
2. *write* (:mod:`sealpy.core.build.stagewrite`): the layers (streamed into the store,
   the same content written once even for several platforms), the configs, the
   manifests (an index for several platforms), and last the names.

Every timestamp is ``--timestamp``, else ``SOURCE_DATE_EPOCH``, else 0, so the same
context and build file always give the same image digest.
"""

from __future__ import annotations

import copy
import glob
import re
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from sealpy.core.build import BuildRequest, BuildResult, ImageBuilder
from sealpy.core.build.configsteps import apply_config_instruction
from sealpy.core.build.context import IgnoreMatcher, Tree, clean_dest, plan_sources
from sealpy.core.build.output import apply_flags, write_index
from sealpy.core.build.parser import (
    Instruction,
    expand_flag,
    expand_words,
    key_values,
    parse_files,
)
from sealpy.core.build.plan import (
    DEFAULT_PATH,
    ArchivePart,
    ContextPart,
    ImagePart,
    Ownership,
    Part,
    Stage,
    StageState,
    Step,
    copy_ownership,
    defined,
    has_glob,
    is_tar,
    platform_args,
    split_stages,
)
from sealpy.core.build.precheck import check_native
from sealpy.core.build.stagewrite import StageWriter, flatten_image, unpack_image
from sealpy.core.errors import BuildError, SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BUILD_FILE_NAMES, BuildContext
from sealpy.core.reference import Platform, parse_platforms
from sealpy.core.store.layout import Store, StoredImage, store_name

# Names other modules import from here (merge, the pipeline, tests).
__all__ = [
    "DEFAULT_PATH",
    "NativeBuilder",
    "flatten_image",
    "platform_args",
    "split_stages",
    "unpack_image",
]
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^git@")


# --- the builder ------------------------------------------------------------------------------


class NativeBuilder(ImageBuilder):
    name = "native"
    description = (
        "pure Python: FROM/COPY/ADD/ENV/LABEL/... into OCI layers, no container engine (no RUN)"
    )

    def check(
        self,
        context: BuildContext,
        *,
        target: str | None = None,
        ignorefile: Path | None = None,
        registry_pending: bool = False,
    ) -> None:
        """Parse, the stages up to ``target`` (no RUN), ``ignorefile``, and every literal
        COPY/ADD source (see :mod:`sealpy.core.build.precheck`)."""
        check_native(
            context, target=target, ignorefile=ignorefile, registry_pending=registry_pending
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
        self.explicit_platforms = request.platforms is not None
        self.platforms = tuple(request.platforms or (Platform.host(),))
        self.output = request.output
        self.ignore = IgnoreMatcher.for_context(self.context.root, request.ignorefile)
        self.context_tree = Tree(self.context.root, ignore=self.ignore, fixed_blobs=True)
        self.consumed_args: set[str] = set()
        self._client = None
        self._names = tuple(store_name(t) for t in request.tags)
        self.echo = request.echo
        self._warned: set[str] = set()

    def warn(self, message: str) -> None:
        """A warning, once (planning runs per platform and stage)."""
        if message not in self._warned:
            self._warned.add(message)
            self.request.warn(message)

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
        head, stage_instructions = split_stages(instructions, self.request.target)
        if self.output.annotations and self.output.format == "docker":
            self.warn(
                "--annotation is dropped with --format docker: Docker manifests have no "
                "annotations (buildah drops them too)"
            )
        try:
            with self.store.writing():
                plans = {p: self._plan(p, head, stage_instructions) for p in self.platforms}
                self._check_plans(plans)
                writer = StageWriter(
                    self.store,
                    self.context,
                    epoch=self.epoch,
                    output=self.output,
                    echo=self.echo,
                    warn=self.warn,
                    many_platforms=len(self.platforms) > 1,
                    platform_matters=self._platform_matters(),
                )
                with ExitStack() as scratch:
                    results = {p: writer.write(p, plans[p], scratch) for p in self.platforms}
                manifests = list(results.values())
                top = manifests[0]
                if len(manifests) > 1:
                    top = write_index(self.store, manifests, self.output)
                for name in self._names:
                    self.store.name(name, top)
                if not self._names:
                    self.store.add_untagged(top)
        finally:
            if self._client is not None:
                self._client.close()
        return BuildResult(top.digest, self._names, tuple(m.config.digest for m in manifests))

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
            for name, default in key_values(ins, defined(global_args)):
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
        words = expand_words(from_ins, defined(global_args))
        if len(words) not in (1, 3):
            raise from_ins.error(f"expected FROM IMAGE [AS NAME], got {' '.join(words)!r}")
        base_text = words[0]
        name = words[2].lower() if len(words) == 3 else None
        base_platform = platform
        platform_flag = expand_flag(from_ins, "platform", defined(global_args))
        if platform_flag:
            base_platform = parse_platforms([platform_flag])[0]
        stage = self._base(index, name, base_text, base_platform, earlier, from_ins)
        stage.steps.append(Step(from_ins.original, "", where=from_ins.where))
        args: dict[str, str | None] = {}
        state = StageState(stage, args, cmd_set=False)
        for ins in instructions[1:]:
            self._plan_step(ins, state, global_args, earlier)
        # buildah applies --env and --label when it commits each stage.
        apply_flags(stage.config, self.output, self.warn)
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
        from sealpy.core.store.transfer import ensure_image

        wanted = platform if self._platform_matters() else None
        try:
            return ensure_image(
                self.store,
                text,
                wanted,
                self._registry_client,
                echo=self.echo,
                blob_cache=self.request.transport.blob_cache,
            )
        except SealpyError as exc:
            raise ins.error(f"{text}: {exc}") from None

    def _registry_client(self):
        if self._client is None:
            self._client = self.request.transport.client()
        return self._client

    def _plan_step(
        self,
        ins: Instruction,
        state: StageState,
        global_args: Mapping[str, str | None],
        earlier: list[Stage],
    ) -> None:
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
        elif keyword in ("COPY", "ADD"):
            layer = self._plan_copy(ins, state, env, earlier)
        else:
            layer = apply_config_instruction(ins, state, env)
        state.stage.steps.append(Step(ins.original, created_by, layer, ins.where))

    def _plan_copy(
        self, ins: Instruction, state: StageState, env: Mapping[str, str], earlier: list[Stage]
    ) -> tuple[Part, ...]:
        words = expand_words(ins, env)
        if len(words) < 2:
            raise ins.error("needs a source and a destination")
        sources, dest = words[:-1], words[-1]
        ownership = copy_ownership(ins, env)
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
            if not has_glob(source):
                path = self.context_tree.resolve(source.lstrip("/"))
                if path.is_file() and is_tar(path):
                    archives.append(ArchivePart(path, target))
                else:
                    plain.append(source)
                continue
            # A wildcard: each match that is an archive is unpacked, as Docker does; the
            # rest is copied (by escaped name: a match may hold wildcard characters).
            matches = [(m, self.context_tree.resolve(m)) for m in self.context_tree.glob(source)]
            tars = [(m, p) for m, p in matches if p.is_file() and is_tar(p)]
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
        state: StageState,
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


@hookimpl
def sealpy_register_builders(registry) -> None:
    registry.register(NativeBuilder)
