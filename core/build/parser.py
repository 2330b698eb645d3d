"""Kubefile / Dockerfile parsing, as buildah 1.28 (Sealos's build engine) reads it.

The escape character (``\\``, or the one a leading ``# escape=`` directive names) at the
end of a line, optionally followed by blanks, continues it: the next lines are appended
as they are (their leading blanks kept, only the first line's dropped), comment lines
(``#`` after optional blanks) and blank lines inside a continuation are skipped. An
instruction is a keyword (any case), optional ``--flags`` and arguments, which are *exec
form* when they are a JSON array of strings and *shell form* otherwise.

Variables are expanded later, step by step, because ``ENV`` and ``ARG`` change them as the
build goes: :mod:`sealpy.core.build.words` splits and processes words as buildah does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.build.words import (
    process_word,
    process_words,
    split_fields,
    split_first_field,
    split_raw_words,
)
from sealpy.core.errors import BuildError

__all__ = [
    "Instruction",
    "expand_flag",
    "expand_word",
    "expand_words",
    "key_values",
    "parse_files",
    "parse_text",
    "process_word",
    "process_words",
]

# Instructions the native builder runs, and those that exist in Dockerfiles but need a
# container (RUN) or are not supported without one; anything else is an unknown word.
NATIVE = frozenset(
    {
        "FROM",
        "COPY",
        "ADD",
        "ENV",
        "LABEL",
        "ARG",
        "CMD",
        "ENTRYPOINT",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "MAINTAINER",
        "STOPSIGNAL",
    }
)
KNOWN = NATIVE | {"RUN", "SHELL", "HEALTHCHECK", "ONBUILD"}
# The flags each instruction accepts (Docker's, minus those that need BuildKit).
FLAGS: Mapping[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link"}),
    "RUN": frozenset({"mount", "network", "security"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "retries"}),
}
_KEYWORD = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\s+|$)")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_COMMENT = re.compile(r"^\s*#")


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: keyword, flags, and arguments before expansion.

    ``args`` is the text after the flags (continuations joined with a space); ``exec_form``
    holds the JSON array when the arguments are one; ``file`` and ``line`` say where it
    starts, for messages."""

    keyword: str
    args: str
    flags: tuple[tuple[str, str | None], ...]
    exec_form: tuple[str, ...] | None
    original: str
    file: str
    line: int
    escape: str = "\\"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def flag(self, name: str) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return None

    def has_flag(self, name: str) -> bool:
        return any(key == name for key, _ in self.flags)

    def error(self, message: str) -> BuildError:
        return BuildError(f"{self.keyword}: {message}", subject=self.where)


def parse_files(paths: Sequence[Path], *, root: Path | None = None) -> list[Instruction]:
    """Parse several build files as one (Sealos hands them all to buildah, which reads them
    as one file); each instruction keeps its own file name and line."""
    out: list[Instruction] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BuildError(f"{path}: not a UTF-8 text file") from None
        except OSError as exc:
            raise BuildError(f"cannot read build file {path}: {exc.strerror}") from None
        name = Path(path).name
        if root is not None:
            try:
                name = Path(path).relative_to(root).as_posix()
            except ValueError:
                name = str(path)
        out.extend(parse_text(text, name))
    return out


def parse_text(text: str, file: str = "Dockerfile") -> list[Instruction]:
    """Parse one build file's text into instructions (unknown keywords are errors)."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    # Parser directives: comment lines of the form `# key=value` before anything else.
    for number, raw in enumerate(lines):
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise BuildError(
                    f"{file}:{number + 1}: invalid escape directive {value!r}: use \\ or `"
                )
            escape = value
        start = number + 1
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        if not raw.strip() or _COMMENT.match(raw):
            i += 1
            continue
        first = i
        line = raw.lstrip()
        parts: list[str] = []
        # Join continuation lines as buildah does: the escape (and blanks after it) goes,
        # the next line comes as it is; comment and blank lines in between are skipped.
        while match := continued.search(line):
            parts.append(line[: match.start()])
            i += 1
            while i < len(lines) and (not lines[i].strip() or _COMMENT.match(lines[i])):
                i += 1
            if i >= len(lines):
                line = ""
                break
            line = lines[i]
        parts.append(line)
        i += 1
        text = "".join(parts).strip()
        if text:
            out.append(_instruction(text, file, first + 1, escape))
    return out


def _instruction(text: str, file: str, line: int, escape: str) -> Instruction:
    match = _KEYWORD.match(text)
    if not match:
        raise BuildError(f"{file}:{line}: malformed line {text[:60]!r}: expected an instruction")
    keyword = match.group(1).upper()
    if keyword not in KNOWN:
        raise BuildError(f"{file}:{line}: unknown instruction {match.group(1)}")
    rest = text[match.end() :].strip()
    flags: list[tuple[str, str | None]] = []
    allowed = FLAGS.get(keyword, frozenset())
    while rest.startswith("--"):
        word, _, remainder = rest.partition(" ")
        name, sep, value = word[2:].partition("=")
        if name not in allowed:
            raise BuildError(f"{file}:{line}: {keyword}: unknown flag --{name}")
        flags.append((name, value if sep else None))
        rest = remainder.strip()
    exec_form = _json_array(rest)
    instruction = Instruction(keyword, rest, tuple(flags), exec_form, text, file, line, escape)
    _check_arguments(instruction, escape)
    return instruction


def _json_array(text: str) -> tuple[str, ...] | None:
    """The arguments as a JSON array of strings, or ``None`` for the shell form (Docker
    falls back to the shell form when the text is not such an array)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _check_arguments(ins: Instruction, escape: str) -> None:
    """Reject instructions whose arguments cannot mean anything, before any work starts."""
    needs_args = ins.keyword not in {"CMD", "ENTRYPOINT", "SHELL"}
    if needs_args and not ins.args:
        raise ins.error("needs at least one argument")
    if ins.keyword in {"COPY", "ADD"}:
        count = len(ins.exec_form) if ins.exec_form is not None else len(split_fields(ins.args))
        if count < 2:
            raise ins.error("needs a source and a destination")
    try:
        words = split_raw_words(ins.args, escape) if ins.keyword in {"ENV", "LABEL", "ARG"} else []
    except BuildError as exc:
        raise ins.error(str(exc)) from None
    if ins.keyword in {"ENV", "LABEL"}:
        if "=" in words[0]:
            for word in words:
                key, sep, _ = word.partition("=")
                if not sep or not key:
                    raise ins.error(f"expected KEY=VALUE, got {word!r}")
        elif len(split_first_field(ins.args)) < 2:
            # The old form, `ENV NAME value...`, needs the value.
            raise ins.error(f"{words[0]} needs a value")
    if ins.keyword == "ARG":
        for word in words:
            if not word.partition("=")[0]:
                raise ins.error(f"expected NAME[=DEFAULT], got {word!r}")
    if ins.keyword in {"WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"} and ins.exec_form is not None:
        raise ins.error("takes a plain value, not a JSON array")
    if ins.keyword == "FROM":
        words = ins.args.split()
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise ins.error("expected FROM IMAGE [AS NAME]")
    # Quoting and substitution errors do not depend on the values: found now, with no
    # variables set, rather than when the step runs (after the images were cached).
    if ins.keyword in {"ENV", "LABEL", "ARG"}:
        key_values(ins, {})
    elif ins.keyword in {"COPY", "ADD", "VOLUME", "EXPOSE", "FROM"}:
        expand_words(ins, {})
    elif ins.keyword in {"WORKDIR", "USER", "STOPSIGNAL"}:
        expand_word(ins, {})


# --- expansion, per instruction ------------------------------------------------------------


def key_values(ins: Instruction, env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``KEY=VALUE ...`` pairs of ENV, LABEL or ARG, processed with the environment
    *before* the instruction; ENV's and LABEL's old form ``KEY value...`` takes the rest
    of the line as the value. An ARG word is processed whole and then split at its first
    ``=`` (``None``: no default), as buildah does."""
    try:
        words = split_raw_words(ins.args, ins.escape)
        if ins.keyword == "ARG":
            out: list[tuple[str, str | None]] = []
            for word in words:
                name, sep, default = process_word(word, env).partition("=")
                out.append((name, default if sep else None))
            return out
        if "=" not in words[0]:
            key, value = split_first_field(ins.args)
            return [(process_word(key, env), process_word(value, env))]
        pairs: list[tuple[str, str | None]] = []
        for word in words:
            key, _, value = word.partition("=")
            pairs.append((process_word(key, env), process_word(value, env)))
        return pairs
    except BuildError as exc:
        raise ins.error(str(exc)) from None


def expand_words(ins: Instruction, env: Mapping[str, str]) -> list[str]:
    """The arguments as words with variables expanded: the exec form's elements one by
    one; else each blank-separated field (quotes do not group: buildah's rule), which only
    EXPOSE splits again after expansion."""
    try:
        if ins.exec_form is not None:
            return [process_word(w, env) for w in ins.exec_form]
        if ins.keyword == "EXPOSE":
            return [w for field in split_fields(ins.args) for w in process_words(field, env)]
        return [process_word(field, env) for field in split_fields(ins.args)]
    except BuildError as exc:
        raise ins.error(str(exc)) from None


def expand_word(ins: Instruction, env: Mapping[str, str]) -> str:
    try:
        return process_word(ins.args, env)
    except BuildError as exc:
        raise ins.error(str(exc)) from None


def expand_flag(ins: Instruction, name: str, env: Mapping[str, str]) -> str | None:
    value = ins.flag(name)
    if value is None:
        return None
    try:
        return process_word(value, env)
    except BuildError as exc:
        raise ins.error(str(exc)) from None
