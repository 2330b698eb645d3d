"""Option values converted without pydantic, when they are plainly valid.

typer (0.2x) converts every non-flag value through a pydantic ``TypeAdapter``: importing
pydantic and building the adapters costs more than the rest of parsing a command line, a
good part of a warm ``sealpy registry save``. sealpy's parameters are plain — ``str``, ``bool``,
``int`` with bounds, ``Path``, lists of those — so :func:`convert_plainly` gives each such
parameter of a command tree a converter that does what typer's adapter does for a value
that is plainly valid (``"5"`` for an int in range, any non-empty string for a path) and
hands every other value to typer's own conversion, so its error messages stay exactly
typer's. A typer without this machinery (older releases convert with click's types,
without pydantic) is left alone. tests/test_cli_coercion.py checks every parameter of
every command against typer's own conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

_FALLBACK = object()  # "not plainly valid: let typer convert it"
_DIGITS = re.compile(r"(?:0|[1-9][0-9]{0,17})\Z")  # no sign, space, "_" or leading zero

Leaf = Callable[[Any, Any, Any, Any], Any]


def _leaf_converter(annotation: Any, info: Any) -> Leaf | None:
    """How to convert one value of ``annotation`` (``None``: not a plain type)."""
    if annotation in (str, bool):  # a flag's value is a bool already, or None
        return lambda value, info, param, ctx: value if type(value) is annotation else _FALLBACK
    if annotation is int and not info.clamp:

        def to_int(value: Any, info: Any, param: Any, ctx: Any) -> Any:
            if type(value) is not str or not _DIGITS.match(value):
                return _FALLBACK
            number = int(value)
            if (info.min is not None and number < info.min) or (
                info.max is not None and number > info.max
            ):
                return _FALLBACK
            return number

        return to_int
    if annotation is Path and info.path_type in (None, Path):
        from typer._param_types import coerce_cli_path

        def to_path(value: Any, info: Any, param: Any, ctx: Any) -> Any:
            if type(value) is not str or not value or "\x00" in value:
                return _FALLBACK
            # Given a Path, typer's own path checks (exists, readable, ...) skip pydantic.
            return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)

        return to_path
    return None


def _converter(annotation: Any, info: Any) -> Leaf | None:
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        leaf = _leaf_converter(item, info)
        if leaf is None:
            return None

        def to_list(value: Any, info: Any, param: Any, ctx: Any) -> Any:
            if not isinstance(value, (list, tuple)):
                return _FALLBACK
            items = [leaf(v, info, param, ctx) for v in value]
            return _FALLBACK if any(i is _FALLBACK for i in items) else items

        return to_list
    return _leaf_converter(annotation, info)


def convert_plainly(command: Any) -> int:
    """Give every plain parameter of ``command`` and its subcommands the fast converter;
    returns how many were given one (0 with a typer that does not use pydantic)."""
    try:
        from typer import _coercion
        from typer.core import _TyperParameter
    except ImportError:  # an older typer: click's types, no pydantic to avoid
        return 0
    if not hasattr(_TyperParameter, "get_runtime_param"):
        return 0

    @dataclass(frozen=True)
    class PlainRuntimeParam(_coercion.RuntimeParam):  # type: ignore[misc, name-defined]
        convert: Leaf

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            result = self.convert(value, self.parameter_info, param, ctx)
            if result is _FALLBACK:
                typer_own = _coercion.build_runtime_param(param.type_descriptor)
                return typer_own._coerce_value(value, param=param, ctx=ctx)
            return result

    def give(param: Any) -> bool:
        if not isinstance(param, _TyperParameter) or param._runtime_param is not None:
            return False
        descriptor = param.type_descriptor
        info = descriptor.parameter_info
        if descriptor.file_annotation is not None or info.parser is not None:
            return False
        convert = _converter(descriptor.annotation, info)
        if convert is None:
            return False
        param._runtime_param = PlainRuntimeParam(
            parameter_info=info, annotation=descriptor.annotation, convert=convert
        )
        return True

    count = 0
    for each in _commands(command):
        count += sum(give(param) for param in each.params)
        _convert_help_option(each, give)
    return count


def _convert_help_option(command: Any, give: Callable[[Any], bool]) -> None:
    """``--help`` is made (once) when a context first asks for it: convert it then."""
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            give(option)
        return option

    command.get_help_option = get_help_option


def _commands(command: Any) -> list[Any]:
    found = [command]
    for sub in getattr(command, "commands", {}).values():
        found.extend(_commands(sub))
    return found
