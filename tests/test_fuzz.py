"""Property-based fuzzing of every parser that reads untrusted input.

Invariant: a parser either gives a usable result or raises a :class:`SealpyError` (which
the CLI prints as one line) — never another exception, which would be a traceback.

By default each test runs a few hundred derandomized examples (the same ones every run,
no example database: CI is reproducible and the whole file takes well under 30 s). For a
long hunt, explore at random and keep failures in ``.hypothesis/`` (git-ignored)::

    SEALPY_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py

A failure prints the smallest input that fails; add it as a regression test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import string
import tarfile
import tempfile
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sealpy.core.build import parser
from sealpy.core.build.words import split_fields, split_raw_words
from sealpy.core.discovery import IgnoreRule, read_sealignore
from sealpy.core.discovery.archives import parse_line
from sealpy.core.discovery.archives import sealpy_discover_images as discover_archives
from sealpy.core.discovery.shim import sealpy_discover_images as discover_shim
from sealpy.core.errors import AuthenticationError, SealpyError
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.model import BuildContext, Location
from sealpy.core.reference import ImageReference, Platform, parse_platforms
from sealpy.core.registries import Endpoint
from sealpy.core.transport.archive import DockerArchiveSource, OCIArchiveSource, _LayoutSink
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.http.auth import _read_token
from sealpy.core.transport.http.session import error_detail

_LONG = os.environ.get("SEALPY_FUZZ_EXAMPLES")
settings.register_profile(
    "sealpy-ci",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "sealpy-long",
    max_examples=int(_LONG or 0) or 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(settings.get_profile("sealpy-long" if _LONG else "sealpy-ci"))
# Tests that write a file per example take fewer in CI.
FUZZ_FILES = settings(FUZZ, max_examples=max(FUZZ.max_examples // 3, 50))

SHA = "sha256:" + "a" * 64

# --- building blocks -----------------------------------------------------------------------

# Characters references are made of, plus the ones that break them.
_REF_ALPHABET = string.ascii_letters + string.digits + "._-:/@[]" + "+ \t\n\x00é"
ref_text = st.one_of(
    st.text(alphabet=_REF_ALPHABET, max_size=80),
    st.builds(
        lambda host, path, tag, digest: host + path + tag + digest,
        st.sampled_from(["", "docker.io/", "localhost:5000/", "[::1]:5000/", "Quay.IO/", "a:b/"]),
        st.from_regex(
            r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*){0,3}", fullmatch=True
        ),
        st.sampled_from(["", ":1", ":latest", ":v1.2_3-x", ":" + "t" * 130, ":-bad"]),
        st.sampled_from(["", "@" + SHA, "@sha512:" + "b" * 128, "@sha256:abc", "@md5:" + "c" * 32]),
    ),
    st.text(max_size=40),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def _descriptor_like(draw_values=json_values):
    """Descriptors that are sometimes right: the fields a parser looks at, each maybe wrong."""
    return st.fixed_dictionaries(
        {},
        optional={
            "mediaType": st.one_of(
                st.sampled_from(
                    [
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    ]
                ),
                draw_values,
            ),
            "digest": st.one_of(st.just(SHA), st.sampled_from(["sha256:../../x", ""]), draw_values),
            "size": st.one_of(st.integers(min_value=-5, max_value=10**20), draw_values),
            "platform": st.one_of(
                st.fixed_dictionaries(
                    {"os": st.text(max_size=8), "architecture": st.text(max_size=8)}
                ),
                draw_values,
            ),
        },
    )


manifest_docs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "schemaVersion": st.one_of(st.sampled_from([1, 2]), json_values),
            "mediaType": st.one_of(
                st.sampled_from(
                    [
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws",
                    ]
                ),
                json_values,
            ),
            "config": st.one_of(_descriptor_like(), json_values),
            "layers": st.one_of(st.lists(_descriptor_like(), max_size=3), json_values),
            "manifests": st.one_of(st.lists(_descriptor_like(), max_size=3), json_values),
        },
    ),
)
media_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
            "application/vnd.docker.distribution.manifest.v1+json",
            "text/html",
        ]
    ),
    st.text(max_size=20),
)


def _json_bytes(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _deep_text(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# JSON nested from a little to far past what Python's parser takes (about 1000 levels).
deep_json_text = st.builds(
    _deep_text,
    st.one_of(st.integers(1, 64), st.integers(900, 1100), st.integers(1000, 300_000)),
    st.sampled_from(["list", "object"]),
)
_HOLE = r"\u0000deep\u0000"  # how json.dumps writes the placeholder


def _with_deep_value(doc, key: str, deep: str) -> bytes:
    """``doc`` (an object, else an empty one) with ``key`` holding the deep text."""
    holder = dict(doc) if isinstance(doc, dict) else {}
    holder[key] = "\x00deep\x00"
    return json.dumps(holder, allow_nan=True).replace(f'"{_HOLE}"', deep).encode()


deep_documents = st.builds(
    _with_deep_value,
    st.one_of(st.just({}), st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    st.sampled_from(["config", "layers", "manifests", "annotations", "platform", "Config"]),
    deep_json_text,
)


# --- image references and platforms ----------------------------------------------------


@FUZZ
@given(ref_text)
@example("localhost/app")
@example("LOCALHOST:5000/app")
def test_reference_parse_gives_a_reference_or_a_sealpy_error(text: str):
    try:
        ref = ImageReference.parse(text)
    except SealpyError:
        return
    # A valid result reads back as itself: the cache writes str(ref) and reads it again.
    assert ImageReference.parse(str(ref)) == ref
    assert ref.reference
    assert "/" in ref.name


@FUZZ
@given(
    st.lists(
        st.text(alphabet=string.ascii_lowercase + string.digits + "/,_-. ", max_size=20), max_size=3
    )
)
def test_platform_parse_gives_platforms_or_a_sealpy_error(values: list[str]):
    try:
        platforms = parse_platforms(values)
    except SealpyError:
        return
    for platform in platforms:
        assert Platform.parse(str(platform)) == platform


# --- manifests and indexes -------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        manifest_docs.map(_json_bytes),
        st.binary(max_size=200),
        deep_documents,
        deep_json_text.map(str.encode),
    ),
    media_types,
)
@example(_deep_text(200_000, "list").encode(), None)
def test_manifest_parse_gives_a_manifest_or_a_sealpy_error(data: bytes, media_type: str | None):
    try:
        manifest = Manifest.parse(data, media_type)
    except SealpyError:
        return
    # Everything a copy reads from a manifest it accepted must be readable.
    if manifest.is_index:
        for child in manifest.children:
            assert child.digest.startswith("sha256:") and child.size >= 0
    else:
        assert all(b.size >= 0 for b in manifest.blobs)
    assert manifest.digest.startswith("sha256:")


@FUZZ
@given(json_values)
def test_descriptor_from_json_gives_a_descriptor_or_a_sealpy_error(value):
    try:
        descriptor = Descriptor.from_json(value)
    except SealpyError:
        return
    assert descriptor.to_json()["digest"] == descriptor.digest


# --- tar.txt, images/shim, .sealignore ----------------------------------------------------


@pytest.fixture(scope="module")
def context_dir() -> BuildContext:
    """A context with a few real archives for tar.txt lines to name."""
    root = Path(tempfile.mkdtemp(prefix="sealpy-fuzz-")).resolve()
    (root / "images" / "skopeo" / "sub").mkdir(parents=True)
    (root / "images" / "shim").mkdir(parents=True)
    (root / "images" / "skopeo" / "app.tar").write_bytes(b"x")
    (root / "images" / "skopeo" / "sub" / "b.tar").write_bytes(b"x")
    (root / "outside.tar").write_bytes(b"x")
    return BuildContext(root=root, build_files=())


tar_txt_lines = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda transport, path, at, dest: f"{transport}{path}{at}{dest}",
        st.sampled_from(["docker-archive:", "oci-archive:", "docker:", "", "oci-archive::"]),
        st.one_of(
            st.sampled_from(
                ["app.tar", "sub/b.tar", "../../outside.tar", "/abs.tar", "sub", "a@b.tar", ".", ""]
            ),
            st.text(alphabet="ab./@:\\\x00 ", max_size=15),
        ),
        st.sampled_from(["@", "@@", ""]),
        st.one_of(ref_text, st.sampled_from(["my/app:1", f"my/app@{SHA}", f"a:1@{SHA}"])),
    ),
)


@FUZZ
@given(tar_txt_lines)
def test_tar_txt_line_gives_an_entry_or_a_sealpy_error(context_dir: BuildContext, line: str):
    try:
        entry = parse_line(line, context_dir.root, Location("images/skopeo/tar.txt", 1))
    except SealpyError:
        return
    assert entry.path.is_file()
    assert entry.path.resolve().is_relative_to(context_dir.root)


@FUZZ_FILES
@given(st.lists(tar_txt_lines, max_size=4).map("\n".join), st.sampled_from(["\n", "\r\n"]))
def test_tar_txt_file_is_read_or_refused_with_a_sealpy_error(
    context_dir: BuildContext, text: str, newline: str
):
    (context_dir.root / "images" / "skopeo" / "tar.txt").write_bytes(
        text.replace("\n", newline).encode("utf-8", "surrogatepass")
    )
    with contextlib.suppress(SealpyError):
        discover_archives(context=context_dir)


@FUZZ_FILES
@given(
    st.one_of(
        st.binary(max_size=200), st.lists(ref_text, max_size=5).map("\n".join).map(str.encode)
    )
)
def test_shim_file_gives_findings_and_warnings_never_a_crash(
    context_dir: BuildContext, data: bytes
):
    (context_dir.root / "images" / "shim" / "list.txt").write_bytes(data)
    result = discover_shim(context=context_dir)
    assert result is not None
    for finding in result.findings:
        assert ImageReference.parse(str(finding.reference)) == finding.reference


@FUZZ_FILES
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.one_of(ref_text, st.text(alphabet="*?[]!^-\\ab/:#", max_size=12)), max_size=5)
        .map("\n".join)
        .map(str.encode),
    ),
    st.lists(ref_text, max_size=3),
)
def test_sealignore_gives_rules_that_match_without_crashing(
    context_dir: BuildContext, data: bytes, candidates: list[str]
):
    (context_dir.root / ".sealignore").write_bytes(data)
    rules, _warnings = read_sealignore(context_dir)
    references = []
    for text in [*candidates, "nginx:1"]:
        with contextlib.suppress(SealpyError):
            references.append(ImageReference.parse(text))
    for rule in rules:
        assert isinstance(rule, IgnoreRule)
        for reference in references:
            rule.matches(reference)


# --- the Kubefile parser and its variable expansion -------------------------------------------

_KUBEFILE_WORDS = [
    "FROM scratch",
    "FROM --platform=$P alpine AS b",
    "COPY --from=b . .",
    'COPY ["a", "b"]',
    'ENV A=1 B="two words" C=${A:-x}',
    "ARG X",
    "LABEL a=b",
    'CMD ["x"]',
    "ENTRYPOINT run",
    "WORKDIR /w",
    "RUN true",
    "# escape=`",
    "# comment",
    "\\",
    "`",
    "",
]
kubefiles = st.one_of(
    st.text(max_size=120),
    st.lists(
        st.one_of(
            st.sampled_from(_KUBEFILE_WORDS),
            st.text(alphabet="ABCFROMENVCOPY$ {}[]\"'\\`#=-:+?\n", max_size=20),
        ),
        max_size=8,
    ).map("\n".join),
)


@FUZZ
@given(kubefiles)
def test_kubefile_parse_gives_instructions_or_a_sealpy_error(text: str):
    try:
        instructions = parser.parse_text(text, "Kubefile")
    except SealpyError:
        return
    for ins in instructions:
        assert ins.where


environments = st.dictionaries(
    st.sampled_from(["a", "b", "A", "ab"]), st.text(alphabet="ab $\"'{}\\", max_size=6), max_size=3
)

_ARG_ALPHABET = "ab =$:{}[]-+?\"'\\`\t,/."
instruction_lines = st.builds(
    lambda keyword, flags, args: " ".join([keyword, *flags, args]),
    st.sampled_from(
        [
            "FROM",
            "COPY",
            "ADD",
            "ENV",
            "ARG",
            "LABEL",
            "CMD",
            "ENTRYPOINT",
            "WORKDIR",
            "USER",
            "EXPOSE",
            "env",
            "Copy",
            "RUN",
            "SHELL",
            "STOPSIGNAL",
            "VOLUME",
            "ONBUILD",
            "HEALTHCHECK",
        ]
    ),
    st.lists(
        st.sampled_from(
            ["--from=b", "--chown=$U:${G}", "--chmod=0755", "--platform=", "--", "--x"]
        ),
        max_size=2,
    ),
    st.one_of(
        st.text(alphabet=_ARG_ALPHABET, max_size=30),
        st.lists(st.text(alphabet=_ARG_ALPHABET, max_size=6), max_size=3).map(json.dumps),
    ),
)


@FUZZ
@given(
    st.lists(
        st.one_of(instruction_lines, st.sampled_from(["# escape=`", "# x", "\\", ""])), max_size=6
    ),
    environments,
)
def test_parsed_instructions_expand_or_give_a_sealpy_error(lines: list[str], env: dict):
    """What the native builder does with each instruction's words, after parsing."""
    try:
        instructions = parser.parse_text("\n".join(lines), "Kubefile")
    except SealpyError:
        return
    for ins in instructions:
        try:
            if ins.keyword in ("ENV", "LABEL", "ARG"):
                parser.key_values(ins, env)
            else:
                parser.expand_words(ins, env)
                parser.expand_word(ins, env)
            for name, _value in ins.flags:
                parser.expand_flag(ins, name, env)
        except SealpyError:
            pass


words = st.text(alphabet="ab$ {}:-+?=\"'\\`\t\n", max_size=40)


@FUZZ
@given(words, environments, st.sampled_from(["\\", "`"]))
def test_word_expansion_gives_text_or_a_sealpy_error(text: str, env: dict, escape: str):
    """Splitting takes the build file's escape character; processing always uses ``\\``,
    as buildah does (core/build/words.py)."""
    for raw in [text, *split_raw_words(text, escape), *split_fields(text)]:
        for expand in (parser.process_word, parser.process_words):
            with contextlib.suppress(SealpyError):
                expand(raw, env)


# --- docker-archive manifest.json and oci-archive index.json ------------------------------


def _archive(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


archive_entry = st.fixed_dictionaries(
    {},
    optional={
        "Config": st.one_of(
            st.sampled_from(["config.json", "missing.json", "../x", ""]), json_values
        ),
        "RepoTags": st.one_of(st.lists(st.text(max_size=10), max_size=2), json_values),
        "Layers": st.one_of(
            st.lists(
                st.one_of(st.sampled_from(["layer.tar", "nope.tar"]), json_values), max_size=3
            ),
            json_values,
        ),
    },
)


@FUZZ_FILES
@given(
    st.one_of(
        st.lists(archive_entry, max_size=2).map(_json_bytes),
        json_values.map(_json_bytes),
        deep_json_text.map(str.encode),
        deep_documents.map(lambda doc: b"[" + doc + b"]"),
    )
)
@example(_deep_text(200_000, "list").encode())
@example(b'[{"Config": "config.json", "Layers": ["layer.tar"], "RepoTags": 5}]')
def test_docker_archive_manifest_json_is_used_or_refused_with_a_sealpy_error(
    tmp_path_factory: pytest.TempPathFactory, manifest_json: bytes
):
    scratch = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = scratch / "image.tar"
    path.write_bytes(
        _archive(
            {
                "manifest.json": manifest_json,
                "config.json": b'{"architecture": "amd64", "os": "linux"}',
                "layer.tar": _archive({"file": b"content"}),
            }
        )
    )
    layout = DistributionLayout(scratch / "registry", durable=False)
    try:
        source = DockerArchiveSource(path, _LayoutSink(layout, "fuzz/app"))
        manifest = source.get_manifest("")
    except SealpyError:
        return
    assert not manifest.is_index and all(layout.has_blob(b.digest) for b in manifest.blobs)
    # `sealpy load` names the image from RepoTags: accepted means usable.
    tags = source.entry.get("RepoTags")
    assert tags is None or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))


@FUZZ_FILES
@given(
    st.one_of(
        st.fixed_dictionaries(
            {"manifests": st.lists(_descriptor_like(), max_size=2)},
            optional={"schemaVersion": json_values},
        ).map(_json_bytes),
        json_values.map(_json_bytes),
        deep_json_text.map(str.encode),
        deep_documents,
    ),
    st.sampled_from(["", "1", SHA]),
)
@example(_deep_text(200_000, "object").encode(), "")
def test_oci_archive_index_json_is_used_or_refused_with_a_sealpy_error(
    tmp_path_factory: pytest.TempPathFactory, index_json: bytes, reference: str
):
    scratch = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = scratch / "image.tar"
    path.write_bytes(_archive({"index.json": index_json, "oci-layout": b"{}"}))
    try:
        OCIArchiveSource(path).get_manifest(reference)
    except SealpyError:
        return


# --- a registry's answers read whole: error bodies and token answers ----------------------


def _answer(status: int, body: bytes) -> requests.Response:
    """A response as the client holds it once the body is read (bounded)."""
    response = requests.Response()
    response.status_code = status
    response._content = body
    response._content_consumed = True
    response.url = "http://registry.example/v2/app/manifests/1"
    return response


_texts = st.one_of(st.text(max_size=30), st.sampled_from(["abc.def", "a\r\nb", "x y", ""]))
answer_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_json_bytes),
    st.fixed_dictionaries(
        {},
        optional={
            "errors": st.one_of(
                st.lists(
                    st.one_of(
                        st.fixed_dictionaries({}, optional={"code": _texts, "message": _texts}),
                        json_values,
                    ),
                    max_size=2,
                ),
                json_values,
            ),
            "token": st.one_of(_texts, json_values),
            "access_token": st.one_of(_texts, json_values),
            "expires_in": st.one_of(st.sampled_from([300, "300", 0, -1, 1e308]), json_values),
        },
    ).map(_json_bytes),
    deep_json_text.map(str.encode),
    deep_documents,
)


@FUZZ
@given(answer_bodies)
@example(b'{"errors": 5}')
@example(_deep_text(200_000, "list").encode())
def test_an_error_body_gives_one_short_printable_line(body: bytes):
    detail = error_detail(_answer(400, body))
    assert detail.isprintable() and len(detail) <= 200


@FUZZ
@given(answer_bodies)
@example(b'{"token": "a\\r\\nX: 1"}')
@example(_deep_text(200_000, "object").encode())
def test_a_token_answer_gives_a_usable_token_or_an_authentication_error(body: bytes):
    endpoint = Endpoint("registry.example", "app")
    try:
        token, lifetime = _read_token(endpoint, "https://auth.example/t", _answer(200, body), None)
    except AuthenticationError:
        return
    assert token and token.isprintable() and " " not in token
    assert 0 < lifetime <= 86400


# --- what the fuzzers found (each failed with another exception before its fix) -----------


@pytest.mark.parametrize(
    "data",
    [
        b'{"mediaType": []}',  # TypeError: unhashable type
        b'{"mediaType": {"a": 1}, "manifests": []}',
        # OverflowError: int(inf)
        b'{"config": {"digest": "' + SHA.encode() + b'", "size": Infinity}, "layers": []}',
        # a platform that is not an object (select_platform would call .get on it)
        b'{"manifests": [{"digest": "' + SHA.encode() + b'", "size": 1, "platform": "linux"}]}',
    ],
)
def test_malformed_manifests_found_by_fuzzing_are_manifest_errors(data: bytes):
    with pytest.raises(SealpyError):
        Manifest.parse(data)


def _write_archive(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "image.tar"
    path.write_bytes(_archive(members))
    return path


@pytest.mark.parametrize(
    ("manifest_json", "complaint"),
    [
        (b"[{}]", "names no Config file"),  # KeyError: 'Config'
        (b"[1]", "names no Config file"),  # TypeError
        (b'[{"Config": ["config.json"]}]', "names no Config file"),
        (b'[{"Config": "config.json", "Layers": "layer.tar"}]', "Layers is not a list"),
        (b'[{"Config": "config.json", "Layers": [1]}]', "Layers is not a list"),
    ],
)
def test_malformed_docker_archive_entries_found_by_fuzzing_are_context_errors(
    tmp_path: Path, manifest_json: bytes, complaint: str
):
    path = _write_archive(
        tmp_path, {"manifest.json": manifest_json, "config.json": b"{}", "layer.tar": b""}
    )
    layout = DistributionLayout(tmp_path / "registry", durable=False)
    with pytest.raises(SealpyError) as failure:
        DockerArchiveSource(path, _LayoutSink(layout, "fuzz/app")).get_manifest("")
    assert complaint in str(failure.value)


@pytest.mark.parametrize(
    ("index_json", "reference"),
    [
        (b"null", ""),  # AttributeError: 'NoneType' object has no attribute 'get'
        (b"[]", ""),
        (b'{"manifests": [1]}', "1"),  # AttributeError on an entry
        (b'{"manifests": [{"annotations": "x"}]}', "1"),  # AttributeError on annotations
    ],
)
def test_malformed_oci_archive_indexes_found_by_fuzzing_are_context_errors(
    tmp_path: Path, index_json: bytes, reference: str
):
    path = _write_archive(tmp_path, {"index.json": index_json})
    with pytest.raises(SealpyError):
        OCIArchiveSource(path).get_manifest(reference)


def test_a_reference_whose_normalised_name_is_too_long_is_refused_at_once():
    # Found by the shim fuzzer: 253 characters parsed, but "docker.io/" + them did not
    # read back. distribution measures the normalised name.
    name = "0" * 230 + "/" + "0" * 10 + "/" + "0" * 11
    assert len(name) <= 255 < len("docker.io/" + name)
    with pytest.raises(SealpyError, match="name longer than 255"):
        ImageReference.parse(name)
    assert len(ImageReference.parse("0" * 237).name) == 255  # docker.io/library/ + 237
    with pytest.raises(SealpyError, match="name longer than 255"):
        ImageReference.parse("0" * 238)
