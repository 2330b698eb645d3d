"""Kubefile/Dockerfile parsing and Docker's word processing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpy.core.build.parser import (
    expand_words,
    key_values,
    parse_files,
    parse_text,
    process_word,
    process_words,
)
from sealpy.core.errors import BuildError


def test_continuations_comments_and_blank_lines_inside_an_instruction():
    text = (
        "# a comment\n"
        "\n"
        "from scratch\n"
        "LABEL a=1 \\\n"
        "# a comment inside the continuation is dropped\n"
        "\n"
        "      b=2\n"
        "COPY registry \\\n"
        "     ./registry\n"
    )
    instructions = parse_text(text, "Kubefile")
    assert [(i.keyword, i.line) for i in instructions] == [("FROM", 3), ("LABEL", 4), ("COPY", 8)]
    # buildah appends each continuation line as it is (its indentation kept)
    assert instructions[1].args == "a=1       b=2"
    assert key_values(instructions[1], {}) == [("a", "1"), ("b", "2")]
    assert instructions[2].original == "COPY registry      ./registry"


def test_escape_directive_changes_the_continuation_character():
    instructions = parse_text("# escape=`\nFROM scratch\nLABEL a=x `\n  b=y\n")
    assert instructions[1].args == "a=x   b=y"


def test_exec_form_is_a_json_array_and_anything_else_is_shell_form():
    cmd, entry, bad = parse_text(
        'CMD ["kubectl apply -f manifests/", "b"]\nENTRYPOINT run --it\nCMD [oops\n'
    )
    assert cmd.exec_form == ("kubectl apply -f manifests/", "b")
    assert entry.exec_form is None and entry.args == "run --it"
    assert bad.exec_form is None and bad.args == "[oops"


def test_flags_are_parsed_and_unknown_flags_are_errors():
    (copy,) = parse_text("COPY --from=base --chmod=0644 a b\n")
    assert copy.flag("from") == "base" and copy.flag("chmod") == "0644" and copy.args == "a b"
    with pytest.raises(BuildError, match=r"Dockerfile:1: COPY: unknown flag --frm"):
        parse_text("COPY --frm=base a b\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM scratch\nFOO bar\n", r"^Kubefile:2: unknown instruction FOO$"),
        ("FROM scratch\nCOPY onlyone\n", r"^Kubefile:2: COPY: needs a source and a destination$"),
        ("FROM scratch\nLABEL novalue\n", r"^Kubefile:2: LABEL: novalue needs a value$"),
        ("FROM scratch\nLABEL a=1 b\n", r"^Kubefile:2: LABEL: expected KEY=VALUE, got 'b'$"),
        ("FROM scratch\nENV A\n", r"^Kubefile:2: ENV: A needs a value$"),
        ('FROM scratch\nENV A="x\n', r"^Kubefile:2: ENV: unterminated \" quote in '\"x'$"),
        ("FROM\n", r"^Kubefile:1: FROM: needs at least one argument$"),
        ("FROM a b c d\n", r"^Kubefile:1: FROM: expected FROM IMAGE \[AS NAME\]$"),
        ('FROM scratch\n"COPY" a b\n', r"^Kubefile:2: malformed line"),
    ],
)
def test_unknown_and_malformed_instructions_name_file_and_line(text, message):
    with pytest.raises(BuildError, match=message):
        parse_text(text, "Kubefile")


def test_several_files_parse_as_one_keeping_each_file_name(tmp_path: Path):
    (tmp_path / "Sealfile").write_text("FROM scratch\n")
    (tmp_path / "Kubefile").write_text("\nBOGUS x\n")
    with pytest.raises(BuildError, match=r"^Kubefile:2: unknown instruction BOGUS$"):
        parse_files([tmp_path / "Sealfile", tmp_path / "Kubefile"], root=tmp_path)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "1"),
        ("${A}x", "1x"),
        ("${MISSING:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${:-dflt}", "dflt"),
        ("${}", ""),
        ("$$", "$$"),
        ("$$A", "$1"),
        ("$1x", "x"),
        ("a\\", "a"),
        ('"a\\qb"', "a\\qb"),
        ("a\\qb", "aqb"),
        ('${MISSING:-"x y"}', "x y"),
        ("${MISSING:-'q'}", "q"),
        ("\"${MISSING:-'q'}\"", "q"),
        ("${MISSING:-a\\}b}", "a}b"),
        ("${A:+alt}", "alt"),
        ("${MISSING:+alt}", ""),
        ("${MISSING:-$A}", "1"),
        ("'$A'", "$A"),
        ('"$A b"', "1 b"),
        ("\\$A", "$A"),
        ("$", "$"),
        ("a$-b", "a$-b"),
        ("$(VAR)", "$(VAR)"),
    ],
)
def test_variable_substitution_follows_docker(word, expected):
    assert process_word(word, {"A": "1", "EMPTY": ""}) == expected


def test_unquoted_expansions_split_into_words_and_quoted_ones_do_not():
    env = {"SRC": "a b"}
    assert process_words("$SRC dest", env) == ["a", "b", "dest"]
    assert process_words('"$SRC" dest', env) == ["a b", "dest"]


@pytest.mark.parametrize(
    "word", ["${", "${A", "${A:x}", "${A:-x", "${A-x}", "${A+x}", "${A:?x}", "${A#x}", "${A/x/y}"]
)
def test_bad_substitutions_are_errors(word):
    with pytest.raises(BuildError, match="bad substitution"):
        process_word(word, {"A": "1"})


def test_env_values_see_the_environment_before_the_instruction():
    (env,) = parse_text('ENV A=2 B=$A C="with space"\n')
    assert key_values(env, {"A": "1"}) == [("A", "2"), ("B", "1"), ("C", "with space")]


def test_old_env_form_takes_the_rest_of_the_line():
    (env,) = parse_text("ENV GREETING hello   big world\n")
    assert key_values(env, {}) == [("GREETING", "hello   big world")]


def test_exec_form_elements_are_expanded_one_by_one():
    (copy,) = parse_text('COPY ["$DIR/a b", "/dst/"]\n')
    assert expand_words(copy, {"DIR": "x"}) == ["x/a b", "/dst/"]
