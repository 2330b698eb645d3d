"""What the native builder writes once a stage's steps are planned or its layers written:
the config with ``--env``/``--label`` applied, the manifest in the OCI or Docker format
(``--format``, with ``--annotation``), the index over several platforms, and the one
layer of ``--squash``. Each follows what buildah 1.28 does with the same flag, since that
is what ``sealos build`` runs.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping, Sequence

from sealpy.core.build import OutputOptions
from sealpy.core.errors import BuildError
from sealpy.core.image import media
from sealpy.core.image.compose import new_manifest, platform_index
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.store.layout import Store, oci_media_type

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_DOCKER_LAYER_TYPES = {
    media.OCI_LAYER_GZIP: media.DOCKER_LAYER_GZIP,
    media.OCI_LAYER: DOCKER_LAYER,
}
# The fields Docker's container config always writes (Go's encoding of a struct without
# omitempty), with the values buildah gives them; Hostname is random in buildah, empty
# here so that the same context keeps giving the same image.
_DOCKER_CONTAINER_CONFIG = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": [],
    "Labels": None,
}
_GO_SPECIAL = set("*#$@!?-0123456789")
_GO_NAME = re.compile(r"[A-Za-z0-9_]*")


# --- --env and --label ---------------------------------------------------------------------


def apply_flags(config: dict, options: OutputOptions, warn: Callable[[str], None]) -> None:
    """``--env`` and ``--label`` on a stage's config, as buildah applies them when it
    commits each stage (so a later stage built on it sees them): after the build file's
    own ENV and LABEL, in the order given, the later winning."""
    body = config.setdefault("config", {})
    for name, value in options.env:
        current = dict(item.partition("=")[::2] for item in body.get("Env") or [])
        expanded = expand_env_flag(value, current, warn=functools.partial(_unset, warn, name))
        # Set as buildah sets it: removed from where it was, appended at the end.
        env = [item for item in body.get("Env") or [] if item.partition("=")[0] != name]
        body["Env"] = [*env, f"{name}={expanded}"]
    if options.labels:
        labels = dict(body.get("Labels") or {})
        for name, value in options.labels:
            labels[name] = value
        body["Labels"] = labels


def _unset(warn: Callable[[str], None], flag: str, name: str) -> None:
    warn(f"--env {flag}: ${name} is not set in the image; its name is used, as buildah does")


def expand_env_flag(
    value: str, env: Mapping[str, str], *, warn: Callable[[str], None] = lambda name: None
) -> str:
    """An ``--env`` value expanded as buildah 1.28 does it (Go's ``os.Expand`` over the
    image's environment): ``$NAME`` and ``${NAME}`` only — no quotes, no ``:-`` — and a
    name the image does not set is replaced by *the name itself* (buildah logs an error
    and goes on; ``warn`` is told)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 == len(value):
            out.append(ch)
            i += 1
            continue
        name, width = _go_shell_name(value, i + 1)
        if not name and width:
            pass  # bad syntax (`${}`, an unclosed `${`): Go drops those characters
        elif not name:
            out.append("$")
        elif name in env:
            out.append(env[name])
        else:
            warn(name)
            out.append(name)
        i += 1 + width
    return "".join(out)


def _go_shell_name(text: str, start: int) -> tuple[str, int]:
    """Go's ``getShellName``: the variable name after a ``$`` and how many characters it
    takes."""
    rest = text[start:]
    if rest.startswith("{"):
        if len(rest) > 2 and rest[1] in _GO_SPECIAL and rest[2] == "}":
            return rest[1], 3
        end = rest.find("}")
        if end == 1:
            return "", 2
        if end < 0:
            return "", 1
        return rest[1:end], end + 1
    if rest[0] in _GO_SPECIAL:
        return rest[0], 1
    name = _GO_NAME.match(rest).group(0)  # type: ignore[union-attr]
    return name, len(name)


# --- manifests -------------------------------------------------------------------------------


def write_image(
    store: Store,
    config: dict,
    layers: Sequence[Descriptor],
    options: OutputOptions,
    *,
    final: bool,
) -> Manifest:
    """Store ``config`` and a manifest over ``layers``. The final stage gets the chosen
    format and the annotations; earlier stages are always OCI (nothing outside the store
    sees them)."""
    if final and options.format == "docker":
        manifest = new_manifest(
            store.put_json(docker_config(config), media.DOCKER_CONFIG),
            [_docker_layer(d) for d in layers],
            media_type=media.DOCKER_MANIFEST,
        )
    else:
        manifest = new_manifest(
            store.put_json(config, media.OCI_CONFIG),
            [Descriptor(oci_media_type(d.media_type), d.digest, d.size) for d in layers],
            annotations=dict(options.annotations) if final else None,
        )
    store.layout.put_manifest(manifest)
    return manifest


def write_index(store: Store, manifests: Sequence[Manifest], options: OutputOptions) -> Manifest:
    """One index (or Docker manifest list) over the platforms' manifests."""
    kind = media.DOCKER_LIST if options.format == "docker" else media.OCI_INDEX
    index = platform_index(manifests, store.config, media_type=kind)
    store.layout.put_manifest(index)
    return index


def docker_config(config: dict) -> dict:
    """An OCI image config as Docker's image JSON, as buildah writes it for ``--format
    docker``: the container config with every field Docker always writes, twice (``config``
    and ``container_config``). buildah's random ``container`` ID is left out."""
    out = copy.deepcopy(config)
    body = {**_DOCKER_CONTAINER_CONFIG, **(config.get("config") or {})}
    out["config"] = body
    out["container_config"] = copy.deepcopy(body)
    return out


def _docker_layer(descriptor: Descriptor) -> Descriptor:
    kind = oci_media_type(descriptor.media_type)
    if kind not in _DOCKER_LAYER_TYPES:
        raise BuildError(
            f"layer {descriptor.digest} is {kind}, which a Docker image manifest cannot "
            "describe; build with --format oci"
        )
    return Descriptor(_DOCKER_LAYER_TYPES[kind], descriptor.digest, descriptor.size)
