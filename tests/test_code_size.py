"""Modules a newcomer can read top to bottom: no module of sealpy.core or sealpy.strategies
(the test kit in core/testing aside) over 400 code lines, and no function of the transport
or a strategy over 60 — blank lines, comments and docstrings not counted."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_LIMIT = 400
FUNCTION_LIMIT = 60
_NOT_CODE = (
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
)


def code_lines(source: str) -> set[int]:
    """Line numbers holding code: not blank, not only a comment, not a docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines - docstrings


def modules() -> list[Path]:
    found = [*(ROOT / "core").rglob("*.py"), *(ROOT / "strategies").rglob("*.py")]
    return sorted(p for p in found if "testing" not in p.relative_to(ROOT).parts)


def test_the_counter_skips_docstrings_comments_and_blank_lines():
    source = '"""Doc.\n\nMore."""\n\n# comment\nx = (\n    1,\n)\n\n\ndef f():\n    """Doc."""\n    return x  # why\n'
    assert sorted(code_lines(source)) == [6, 7, 8, 11, 13]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path: Path):
    count = len(code_lines(path.read_text()))
    assert count <= MODULE_LIMIT, f"{count} code lines: split the module"


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in modules()
        if p.is_relative_to(ROOT / "core" / "transport") or "strategies" in p.parts
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_function_size(path: Path):
    source = path.read_text()
    lines = code_lines(source)
    too_long = {
        node.name: n
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := len([x for x in lines if node.lineno <= x <= (node.end_lineno or 0)]))
        > FUNCTION_LIMIT
    }
    assert not too_long, f"functions over {FUNCTION_LIMIT} code lines: {too_long}"
