"""Kubefile words mean what they mean to buildah 1.28 (Sealos's build engine): the same
Kubefiles go through real ``buildah bud`` and ``sealpy build``, and the configs must agree.

Each table is one Kubefile (buildah runs once per table, so the test stays fast); the
cases are its lines. A failing comparison names the variable or label that differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _buildah_support import Buildah, sealpy_build, sealpy_image

# `${…}` forms buildah accepts, quoting and escapes, and ENV/LABEL/ARG forms. A=1 and
# EMPTY= are set first; NOPE is never set.
VARIABLE_TABLE = r"""
ARG GLOBAL=${NOPE:-"global default"}
FROM scratch
ARG GLOBAL
ENV A=1 EMPTY= G=$GLOBAL
ENV D1=${NOPE:-"x y"} D2=${NOPE:-'q'} D3="${NOPE:-z}" D4=${A:-"x y"} D5=${EMPTY:-dflt}
ENV P1=${A:+"alt v"} P2=${NOPE:+alt} P3=${EMPTY:+alt} P4=${A:+"$A and $A"} P5=${A:+}y
ENV Q1="${NOPE:-'sq'}" Q2=${NOPE:-\$A} Q3=${NOPE:-"\$A"} Q4=${NOPE:-'$A'} Q5=${NOPE:-a\}b}
ENV Q6=${NOPE:-'}'} Q7=${A:-"x"}y${NOPE:-"z"} Q8=${A:-}x Q9=${A:-x}}
ENV N1=${NOPE:-${NOPE2:-${A}}} N2=${A:-${B}} N3=${}x N4=${:-empty}
ENV S1=$$ S2=$$A S3=$1x S4=$ S5="$" S6=a$-b S7=$A_x S8=${A}${A} S9=$(VAR)
ENV E1=a\ b E2='$A' E3="\$A" E4="a\qb" E5=a\qb E6="a\"b" E7=a\\b E8='a\b' E9="it's"
ENV E10='say "hi"' E11="tab	inside"
ENV OLD1 ${NOPE:-"q r"}  s
ENV OLD2 "quoted value"
ENV "K1"=k Y${A}=y
ENV C1="1 \
   2"   C2=3
ARG R1=${A:-"r1 v"}
ARG R2="${NOPE:-'r2'}" R3
ENV R=$R1/$R2/$R3
LABEL l1=${NOPE:-"x y"} l2="${NOPE:-'sq'}" l3=${NOPE:-"a b"}c "k l"=v ${A}k=${NOPE:-"lv"}
LABEL l4 old form ${A:-"x"}
LABEL l5="p \
  q"
ENTRYPOINT echo ${A:-"x"} \
    "$A"
CMD helm upgrade -i x \
  # a comment inside the continuation
    --set a=${A:-"b"}\

  --namespace   y
"""

ESCAPE_TABLE = """# escape=`
FROM scratch
ENV A=a\\b B="x\\"y" C=a`b E=${NOPE:-"q"}
LABEL x=a\\ b=1
"""

FIELDS_TABLE = """FROM scratch
ENV AB="a b" P="80 81"
COPY $AB /single/
COPY a\\ b /multi/
VOLUME $AB "${NOPE:-/v2}"
EXPOSE $P "${NOPE:-90}"
WORKDIR "/w $AB"
USER "u ${NOPE:-"x"}"
STOPSIGNAL "${NOPE:-"SIGKILL"}"
"""


def _pair(tmp_path: Path, capsys, text: str, files: dict[str, str] | None = None, *flags: str):
    context = tmp_path / "ctx"
    context.mkdir()
    for name, content in (files or {}).items():
        (context / name).write_text(content)
    kubefile = tmp_path / "Kubefile"
    kubefile.write_text(text)
    buildah = Buildah(tmp_path / "buildah")
    theirs = buildah.build(context, kubefile, "--timestamp", "0", *flags)
    store = tmp_path / "store"
    code, _, err = sealpy_build(capsys, context, kubefile, store, *flags)
    assert code == 0, err
    return theirs, sealpy_image(store)


def _env(image) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in image.body.get("Env") or [])


def test_variable_forms_quotes_and_continuations_match_buildah(tmp_path: Path, capsys):
    theirs, ours = _pair(tmp_path, capsys, VARIABLE_TABLE)
    # The facts that started this (issue 12): quotes inside the default word go.
    assert (_env(theirs)["D1"], _env(theirs)["D2"], _env(theirs)["D3"]) == ("x y", "q", "z")
    assert _env(theirs)["S1"] == "$$"  # not an escape in buildah
    for name, value in _env(theirs).items():
        assert _env(ours).get(name) == value, name
    assert list(_env(ours)) == list(_env(theirs))  # same variables, same order
    for name, value in theirs.labels().items():
        assert ours.labels().get(name) == value, name
    assert ours.labels() == theirs.labels()
    assert ours.body.get("Cmd") == theirs.body.get("Cmd")
    assert ours.body.get("Entrypoint") == theirs.body.get("Entrypoint")
    assert ours.config["created"] == theirs.config["created"]


def test_escape_directive_splits_words_but_values_keep_the_backslash_rules(tmp_path: Path, capsys):
    theirs, ours = _pair(tmp_path, capsys, ESCAPE_TABLE)
    assert _env(ours) == _env(theirs)
    assert ours.labels() == theirs.labels()


def test_copy_volume_expose_split_fields_before_expanding_as_buildah_does(tmp_path: Path, capsys):
    files = {"a": "1", "b": "2", "a b": "3"}
    theirs, ours = _pair(tmp_path, capsys, FIELDS_TABLE, files)
    for key in ("Volumes", "ExposedPorts", "WorkingDir", "User", "StopSignal"):
        assert ours.body.get(key) == theirs.body.get(key), key
    assert sorted(ours.files()) == sorted(theirs.files())
    assert "single/a b" in ours.files()  # $AB is one source, not two


@pytest.mark.parametrize(
    "line",
    [
        "ENV X=${A-x}",
        "ENV X=${A+x}",
        "ENV X=${NOPE:?x}",
        "ENV X=${A?x}",
        "ENV X=${A#x}",
        "ENV X=${A%x}",
        "ENV X=${A/x/y}",
        "ENV X=${A:x}",
        "ENV X=${A:}",
        "ENV X=${A",
        "LABEL X=${A:-x",
        'ENV R="${NOPE:-"in \\"quotes\\""}"',
        'COPY "a b" /x',
        "ARG X=${A-x}",
    ],
)
def test_forms_buildah_rejects_are_errors(tmp_path: Path, capsys, line: str):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a b").write_text("x")
    kubefile = tmp_path / "Kubefile"
    kubefile.write_text(f"FROM scratch\nENV A=1\n{line}\n")
    done = Buildah(tmp_path / "buildah").bud(context, kubefile)
    assert done.returncode != 0, f"buildah accepted {line!r}"
    code, out, err = sealpy_build(capsys, context, kubefile, tmp_path / "store")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "Kubefile:3: " in err and err.count("\n") == 1, err
