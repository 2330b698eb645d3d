"""The instructions that change only the image config (and WORKDIR's small layer): ENV,
LABEL, CMD, ENTRYPOINT, WORKDIR, USER, STOPSIGNAL, MAINTAINER, EXPOSE, VOLUME — as Docker
and buildah apply them, each a pure step on the stage's state."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

from sealpy.core.build.parser import Instruction, expand_word, expand_words, key_values
from sealpy.core.build.plan import Part, StageState, WorkdirPart, port_specs, set_env


def apply_config_instruction(
    ins: Instruction, state: StageState, env: Mapping[str, str]
) -> tuple[Part, ...] | None:
    """Apply ``ins`` to the stage's config; returns WORKDIR's layer, if it needs one."""
    config = state.stage.config
    body = config.setdefault("config", {})
    keyword = ins.keyword
    layer: tuple[Part, ...] | None = None
    if keyword == "ENV":
        for name, value in key_values(ins, env):
            set_env(body, name, value or "")  # never None: only ARG words lack a value
    elif keyword == "LABEL":
        labels = body.get("Labels") or {}
        for name, value in key_values(ins, env):
            labels[name] = value
        body["Labels"] = labels
    elif keyword in ("CMD", "ENTRYPOINT"):
        command = (
            list(ins.exec_form)
            if ins.exec_form is not None
            else (["/bin/sh", "-c", ins.args] if ins.args else [])
        )
        if keyword == "CMD":
            body["Cmd"] = command
            state.cmd_set = True
        else:
            body["Entrypoint"] = command
            if not state.cmd_set:
                body.pop("Cmd", None)  # Docker: a new ENTRYPOINT drops the base's CMD
    elif keyword == "WORKDIR":
        path = expand_word(ins, env)
        body["WorkingDir"] = posixpath.normpath(posixpath.join(body.get("WorkingDir") or "/", path))
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
            ports.update({p: {} for p in port_specs(word, ins)})
        body["ExposedPorts"] = ports
    elif keyword == "VOLUME":
        volumes = body.get("Volumes") or {}
        for word in expand_words(ins, env):
            if not word:
                raise ins.error("a volume path cannot be empty")
            volumes[word] = {}
        body["Volumes"] = volumes
    return layer
