"""The CLI's own conversion of option values (sealpy.core.cli.coercion) gives exactly what
typer's pydantic conversion gives — the value, or the error message — for every parameter
of every command."""

from __future__ import annotations

from pathlib import Path

import typer
from typer import _coercion

from sealpy.core.cli import app
from sealpy.core.cli.coercion import convert_plainly

INTS = ["0", "1", "8", "256", "257", "007", "-1", "+3", " 7", "7 ", "1_0", "abc", "", "١٢"]
INTS += ["99999999999999999999999", "3.0"]
STRINGS = ["x", "", " spaced ", "-", "ü", "a,b"]


def _paths(tmp_path: Path) -> list[str]:
    existing_file = tmp_path / "file"
    existing_file.write_text("x")
    return [
        "ctx",
        "",
        ".",
        str(tmp_path),
        str(existing_file),
        str(tmp_path / "missing" / "x"),
        "a\x00b",
        "~/x",
        "-",
    ]


def _samples(annotation: object, tmp_path: Path) -> list[object]:
    if annotation is bool:
        return [True, False, "true", 1]
    if annotation is int:
        return [*INTS, 5]
    if annotation is str:
        return [*STRINGS, b"bytes"]
    if annotation is Path:
        return [*_paths(tmp_path), Path("p")]
    if annotation == list[str]:
        return [("a", "b"), (), ["a"], ("a", ""), "a"]
    raise AssertionError(f"a parameter type the test does not know: {annotation!r}")


def _outcome(runtime: object, value: object, param: object, ctx: object) -> tuple[str, object]:
    try:
        result = runtime.coerce(value, param=param, ctx=ctx)  # type: ignore[attr-defined]
    except Exception as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return ("error", (type(exc).__name__, message))
    return ("value", (type(result).__name__, result))


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_parameter_converts_as_typer_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = typer.main.get_command(app)
    assert convert_plainly(command) > 0
    checked = 0
    for path, each in _commands(command):
        ctx = typer.main.get_command(app).context_class(each, info_name=" ".join(path) or "sealpy")
        params = [*each.params, each.get_help_option(ctx)]
        for param in params:
            if param is None:
                continue
            ours = param.get_runtime_param()
            assert type(ours).__name__ == "PlainRuntimeParam", (path, param.name)
            theirs = _coercion.build_runtime_param(param.type_descriptor)
            for value in _samples(param.type_descriptor.annotation, tmp_path):
                assert _outcome(ours, value, param, ctx) == _outcome(theirs, value, param, ctx), (
                    path,
                    param.name,
                    value,
                )
                checked += 1
    assert checked > 500
