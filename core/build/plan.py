"""What a native build's plan holds, and the checks and small rules its instructions use.

The plan (phase 1 of :mod:`sealpy.core.build.native`) is plain data: per stage, its base,
its config as the instructions leave it, and per step the parts of the layer it will
write — files of the context, a local archive to unpack, paths of another stage or image,
a WORKDIR directory. Phase 2 (:mod:`sealpy.core.build.stagewrite`) writes them.
"""

from __future__ import annotations

import lzma
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core.build.context import Entry, Ownership
from sealpy.core.build.layers import open_layer
from sealpy.core.build.parser import NATIVE, Instruction, expand_flag
from sealpy.core.errors import BuildError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.reference import Platform

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$")
_NEEDS_CONTAINER = {
    "RUN": "RUN needs a container to run commands, and the native builder has none",
    "SHELL": "SHELL only matters to RUN, which needs a container",
    "HEALTHCHECK": "HEALTHCHECK is not supported by the native builder",
    "ONBUILD": "ONBUILD is not supported by the native builder",
}


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
    instructions: list[Instruction], target: str | None = None
) -> tuple[list[Instruction], list[list[Instruction]]]:
    """Global ARGs (before the first FROM), and the stages up to ``target`` (``--target``:
    the stage named so, or an unnamed stage's number, as buildah matches it); every
    instruction of those is checked to be one the native builder can run."""
    if not instructions:
        raise BuildError("the build file has no instructions")
    head: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
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
    if target is not None:
        stages = stages[: _target_index(stages, target) + 1]
    for ins in [*head, *(i for stage in stages for i in stage)]:
        if ins.keyword in _NEEDS_CONTAINER:
            raise ins.error(
                f"{_NEEDS_CONTAINER[ins.keyword]}; use --builder buildah (apt-get install buildah)"
            )
        if ins.keyword not in NATIVE:  # pragma: no cover - the parser knows only these
            raise ins.error("not supported")
    return head, stages


def _target_index(stages: list[list[Instruction]], target: str) -> int:
    """The stage ``--target`` names: buildah compares the name as written (case
    included); a stage without a name goes by its number."""
    names = []
    for index, stage in enumerate(stages):
        words = stage[0].args.split()
        name = words[2] if len(words) == 3 else str(index)
        if name == target:
            return index
        names.append(name)
    raise BuildError(
        f"--target {target}: the build file has no such stage (stages: {', '.join(names)})"
    )


def platform_args(platform: Platform, build: Platform) -> dict[str, str]:
    """The automatic platform ARGs (TARGETARCH, ...), as BuildKit and buildah define them."""
    out: dict[str, str] = {}
    for prefix, p in (("TARGET", platform), ("BUILD", build)):
        out[f"{prefix}PLATFORM"] = str(p)
        out[f"{prefix}OS"] = p.os
        out[f"{prefix}ARCH"] = p.architecture
        out[f"{prefix}VARIANT"] = p.variant
    return out


# --- what the instructions of a stage share ---------------------------------------------------


@dataclass
class StageState:
    stage: Stage
    args: dict[str, str | None]
    cmd_set: bool

    def expansion_env(self) -> dict[str, str]:
        """ARGs declared in the stage, overridden by ENV (as in Docker)."""
        env = defined(self.args)
        for item in self.stage.config.get("config", {}).get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env


def defined(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def set_env(body: dict, name: str, value: str) -> None:
    env = list(body.get("Env") or [])
    item = f"{name}={value}"
    for i, existing in enumerate(env):
        if existing.partition("=")[0] == name:
            env[i] = item
            break
    else:
        env.append(item)
    body["Env"] = env


def port_specs(word: str, ins: Instruction) -> list[str]:
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


def copy_ownership(ins: Instruction, env: Mapping[str, str]) -> Ownership:
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


def has_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def is_tar(path: Path) -> bool:
    """Whether ADD unpacks ``path``: a (possibly compressed) tar with at least one member,
    as Docker decides. ``tarfile.is_tarfile`` alone accepts any 512 zero bytes (an empty
    archive's end marker), which would make such a file vanish instead of being copied."""
    try:
        with open(path, "rb") as f, open_layer(f) as tar:
            return tar.next() is not None
    except (BuildError, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError):
        return False
