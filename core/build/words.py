"""Shell-word processing as buildah 1.28 does it — Sealos builds with buildah, whose
Dockerfile front end is openshift/imagebuilder, and a Kubefile must mean the same to sealpy.

Two steps, as there:

1. *Splitting* the instruction's text into raw words. ENV, LABEL and ARG split on unquoted
   whitespace with quotes and escapes kept (:func:`split_raw_words`; the escape character
   here is the build file's, ``\\`` or the ``# escape=`` one). COPY, ADD, VOLUME, EXPOSE
   and FROM split on *every* run of whitespace, quotes or not (:func:`split_fields`): so
   ``COPY "a b" /x`` is an error and ``COPY $SRC /x`` with ``SRC="a b"`` is one source.
2. *Processing* each word (:func:`process_word`): quotes removed, ``\\`` escapes (always the
   backslash, whatever ``# escape=`` says), and variables replaced. Only EXPOSE splits the
   result again into words (:func:`process_words`: what a ``$VAR`` expands to splits on
   whitespace, quoted text does not).

The rules of step 2, checked against buildah 1.28 itself (tests/test_build_buildah_compat.py):

- ``'...'`` is literal; ``"..."`` is literal except ``$`` expansions and ``\\"``, ``\\$``,
  ``\\\\`` (any other backslash stays); outside quotes ``\\x`` is ``x`` and a trailing
  ``\\`` disappears.
- ``$NAME`` (letters, digits, ``_``; a name starting with a digit is that one digit:
  ``$1x`` is ``$1`` then ``x``), ``${NAME}``, ``${NAME:-word}`` (word when NAME is unset or
  empty), ``${NAME:+word}`` (word when NAME is set and not empty). The word is processed by
  the same rules, recursively: quotes inside it are removed (``${A:-"x y"}`` is ``x y``),
  ``\\}`` is a brace, ``$`` expands.
- Unset and empty are the same. ``$`` not followed by a name or ``{`` is itself, so ``$$`` is
  ``$$`` (no escape) and ``$$A`` is ``$`` and A's value. ``${}`` and ``${:-w}`` use the
  empty name (unset).
- Everything else is an error in buildah 1.28, and so here: ``${A-w}``, ``${A+w}``,
  ``${A:?w}``, ``${A?w}``, ``${A#p}``, ``${A%p}``, ``${A/p/r}``, a missing ``}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sealpy.core.errors import BuildError

_FIELD_SEPARATOR = re.compile(r"[\t\v\f\r ]+")
_ACCEPTED = (
    "buildah 1.28 (Sealos's build engine) accepts only ${NAME}, ${NAME:-word}, ${NAME:+word}"
)


def split_fields(text: str) -> list[str]:
    """Split on every run of blanks, quotes or not (COPY, ADD, VOLUME, EXPOSE, FROM)."""
    return [f for f in _FIELD_SEPARATOR.split(text.strip()) if f]


def split_first_field(text: str) -> list[str]:
    """``[first field, rest]`` (the old ``ENV NAME value...`` form), or ``[text]``."""
    return _FIELD_SEPARATOR.split(text.strip(), maxsplit=1)


def split_raw_words(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words (ENV, LABEL,
    ARG). A quote left open runs to the end (an error only if processing the word finds it
    open: with a backtick escape directive the two steps see escapes differently). The escape
    character protects the next character, except inside single quotes; at the very end
    it is dropped."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'":
            if i + 1 == len(text):
                break
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
    if in_word:
        words.append("".join(current))
    return words


def process_word(text: str, env: Mapping[str, str]) -> str:
    """One word with quotes removed and variables replaced, never split (ENV and LABEL
    keys and values, ARG, WORKDIR, USER, STOPSIGNAL, each COPY/ADD/VOLUME/FROM field)."""
    return _Lexer(text, env).run()[0]


def process_words(text: str, env: Mapping[str, str]) -> list[str]:
    """The word processed and split: what unquoted expansions and plain text give splits
    on whitespace, quoted text and escaped characters do not (EXPOSE)."""
    return _Lexer(text, env).run()[1]


class _Words:
    """The words of :func:`process_words`, built character by character."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        """A character that may split: blanks end a non-empty word and are dropped."""
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word, self.in_word = "", False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        """Text that never splits (quoted, escaped)."""
        self.word += text
        self.in_word = True

    def add_expansion(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text = text
        self.env = env
        self.pos = 0

    def run(self) -> tuple[str, list[str]]:
        return self._until(None)

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def _error(self, detail: str) -> BuildError:
        return BuildError(f"bad substitution in {self.text!r}: {detail}")

    def _until(self, stop: str | None) -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or, when ``stop`` is None, the end. Returns
        the text and its words."""
        out: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == stop:
                self.pos += 1
                return "".join(out), words.result()
            if ch == "'":
                piece = self._single_quoted()
                words.add_raw(piece)
            elif ch == '"':
                piece = self._double_quoted()
                words.add_raw(piece)
            elif ch == "$":
                piece = self._dollar()
                words.add_expansion(piece)
            else:
                self.pos += 1
                if ch == "\\":
                    if self.pos >= len(self.text):
                        break  # a trailing backslash disappears
                    piece = self._next()
                    words.add_raw(piece)
                else:
                    piece = ch
                    words.add_char(ch)
            out.append(piece)
        if stop is not None:
            raise self._error(f"missing '{stop}'")
        return "".join(out), words.result()

    def _single_quoted(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise BuildError(f"unterminated ' quote in {self.text!r}")
        piece = self.text[self.pos : end]
        self.pos = end + 1
        return piece

    def _double_quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self._peek()
            if ch == "":
                raise BuildError(f'unterminated " quote in {self.text!r}')
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == "\\":
                following = self._peek()
                if not following:
                    continue  # the end of the text: reported as an open quote
                if following in '"$\\':
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        first = self._peek()
        if first and first.isdecimal():
            self.pos += 1
            return first
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        self.pos += 1  # the $
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        name = self._name()
        ch = self._peek()
        if ch == "}":
            self.pos += 1
            return self.env.get(name, "")
        if not ch:
            raise self._error("missing '}'")
        if ch != ":":
            raise self._error(_ACCEPTED)
        self.pos += 1
        modifier = self._next()
        word, _ = self._until("}")
        value = self.env.get(name, "")
        if modifier == "-":
            return value or word
        if modifier == "+":
            return word if value else ""
        raise self._error(_ACCEPTED)
