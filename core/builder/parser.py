"""Kubefile / Dockerfile parsing, and the word processing Dockerfiles use.

Parsing follows Docker's rules: the escape character (``\\``, or the one a leading
``# escape=`` directive names) at the end of a line continues it; comment lines (``#``
first) and blank lines inside a continuation are dropped; an instruction is a keyword
(any case), optional ``--flags`` and arguments, which are *exec form* when they are a JSON
array of strings and *shell form* otherwise.

Variables are expanded later, step by step, because ``ENV`` and ``ARG`` change them as the
build goes: :func:`process_word` and :func:`process_words` do it as Docker's shell lexer
does — single quotes are literal, double quotes group and expand, the escape character
escapes, and ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``,
``${VAR+alt}``, ``${VAR:?message}`` are replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.errors import BuildError

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
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


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
        return BuildError(f"{self.where}: {self.keyword}: {message}")


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
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first = i
        parts: list[str] = []
        line = raw.rstrip()
        # Join continuation lines; comment and blank lines inside are dropped, as Docker does.
        while line.endswith(escape):
            parts.append(line[: -len(escape)])
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1
            if i >= len(lines):
                line = ""
                break
            line = lines[i].rstrip()
        parts.append(line)
        i += 1
        out.append(
            _instruction(" ".join(p.strip() for p in parts if p.strip()), file, first + 1, escape)
        )
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
        count = (
            len(ins.exec_form)
            if ins.exec_form is not None
            else len(split_raw_words(ins.args, escape, ins))
        )
        if count < 2:
            raise ins.error("needs a source and a destination")
    if ins.keyword in {"ENV", "LABEL"}:
        words = split_raw_words(ins.args, escape, ins)
        if ins.keyword == "LABEL" or "=" in words[0]:
            for word in words:
                key, sep, _ = word.partition("=")
                if not sep or not key:
                    raise ins.error(f"expected KEY=VALUE, got {word!r}")
        elif len(words) < 2:
            raise ins.error(f"{words[0]} needs a value")
    if ins.keyword == "ARG":
        for word in split_raw_words(ins.args, escape, ins):
            if not word.partition("=")[0]:
                raise ins.error(f"expected NAME[=DEFAULT], got {word!r}")
    if ins.keyword in {"WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"} and ins.exec_form is not None:
        raise ins.error("takes a plain value, not a JSON array")
    if ins.keyword == "FROM":
        words = ins.args.split()
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise ins.error("expected FROM IMAGE [AS NAME]")


# --- words ----------------------------------------------------------------------------------


def split_raw_words(text: str, escape: str = "\\", where: Instruction | None = None) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words (Docker's
    ``parseWords``, used for KEY=VALUE lists before each word is processed)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'" and i + 1 < len(text):
            current += [ch, text[i + 1]]
            in_word = True
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        current.append(ch)
        in_word = True
        i += 1
    if quote:
        message = f"unterminated {quote} quote"
        raise where.error(message) if where else BuildError(message)
    if in_word:
        words.append("".join(current))
    return words


class _Lexer:
    """Docker's shell-word processing: quotes, escapes and variable expansion."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, split: bool) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.split = split
        self.pos = 0
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def _end_word(self) -> None:
        if self.in_word:
            self.words.append("".join(self.current))
        self.current, self.in_word = [], False

    def _add(self, text: str) -> None:
        self.current.append(text)
        self.in_word = True

    def _add_unquoted_expansion(self, value: str) -> None:
        # Unquoted expansions are split into words, as a shell would.
        if not self.split:
            self._add(value)
            return
        pieces = re.split(r"(\s+)", value)
        for piece in pieces:
            if not piece:
                continue
            if piece.isspace():
                self._end_word()
            else:
                self._add(piece)

    def run(self) -> list[str]:
        while self.pos < len(self.text):
            ch = self._next()
            if ch == self.escape:
                nxt = self._next()
                self._add(nxt if nxt else ch)
            elif ch == "'":
                self._single_quoted()
            elif ch == '"':
                self._double_quoted()
            elif ch == "$":
                self._add_unquoted_expansion(self._dollar())
            elif ch.isspace() and self.split:
                self._end_word()
            else:
                self._add(ch)
        self._end_word()
        return self.words

    def _single_quoted(self) -> None:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise BuildError("unterminated ' quote")
        self._add(self.text[self.pos : end])
        self.pos = end + 1

    def _double_quoted(self) -> None:
        self.in_word = True
        while True:
            if self.pos >= len(self.text):
                raise BuildError('unterminated " quote')
            ch = self._next()
            if ch == '"':
                return
            if ch == self.escape and self._peek() in ('"', "$", self.escape):
                self._add(self._next())
            elif ch == "$":
                self._add(self._dollar())
            else:
                self._add(ch)

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _NAME_CHAR.match(self.text[self.pos]):
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        """Expand what follows a ``$`` (the ``$`` is consumed)."""
        ch = self._peek()
        if ch == "{":
            self.pos += 1
            return self._braced()
        if ch and (_NAME_START.match(ch) or ch.isdigit()):
            name = self._name()
            return self.env.get(name, "")
        return "$"

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise BuildError(f"bad substitution in {self.text!r}: missing variable name after ${{")
        ch = self._next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self._next()
        if ch not in ("-", "+", "?"):
            raise BuildError(
                f"bad substitution in {self.text!r}: unsupported modifier after ${{{name}"
            )
        word = self._until_brace()
        value = self.env.get(name)
        unset = value is None or (colon and value == "")
        if ch == "-":
            return word if unset else value  # type: ignore[return-value]
        if ch == "+":
            return "" if unset else word
        if unset:
            raise BuildError(f"{name}: {word or 'is not set'}")
        return value  # type: ignore[return-value]

    def _until_brace(self) -> str:
        """The word inside ``${NAME:-word}``, itself expanded, up to the closing brace."""
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise BuildError(f"bad substitution in {self.text!r}: missing '}}'")
            ch = self._next()
            if ch == "}":
                return "".join(out)
            if ch == self.escape and self._peek():
                out.append(self._next())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)


def process_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Quotes removed and variables expanded; never split (ENV values, WORKDIR, ...)."""
    words = _Lexer(text, env, escape, split=False).run()
    return words[0] if words else ""


def process_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Quotes removed, variables expanded, split into words (COPY sources, EXPOSE, ...)."""
    return _Lexer(text, env, escape, split=True).run()


def key_values(ins: Instruction, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """``KEY=VALUE ...`` pairs of ENV, LABEL or ARG (and ENV's old ``ENV KEY VALUE...``
    form), keys and values processed with the environment *before* the instruction."""
    try:
        words = split_raw_words(ins.args, ins.escape, ins)
        if ins.keyword == "ENV" and "=" not in words[0]:
            rest = ins.args[len(words[0]) :].strip()
            return [(process_word(words[0], env, ins.escape), process_word(rest, env, ins.escape))]
        pairs = []
        for word in words:
            key, sep, value = word.partition("=")
            pairs.append(
                (
                    process_word(key, env, ins.escape),
                    process_word(value, env, ins.escape) if sep else None,
                )
            )
        return pairs  # type: ignore[return-value]
    except BuildError as exc:
        if str(exc).startswith(ins.where):
            raise
        raise ins.error(str(exc)) from None


def expand_words(ins: Instruction, env: Mapping[str, str]) -> list[str]:
    """The arguments as words with variables expanded: the exec form's elements one by
    one, or the shell form split on whitespace."""
    try:
        if ins.exec_form is not None:
            return [process_word(w, env, ins.escape) for w in ins.exec_form]
        return process_words(ins.args, env, ins.escape)
    except BuildError as exc:
        raise ins.error(str(exc)) from None


def expand_word(ins: Instruction, env: Mapping[str, str]) -> str:
    try:
        return process_word(ins.args, env, ins.escape)
    except BuildError as exc:
        raise ins.error(str(exc)) from None


def expand_flag(ins: Instruction, name: str, env: Mapping[str, str]) -> str | None:
    value = ins.flag(name)
    if value is None:
        return None
    try:
        return process_word(value, env, ins.escape)
    except BuildError as exc:
        raise ins.error(str(exc)) from None
