"""Reference normalisation, by the distribution reference grammar (issue 3, "References")."""

from __future__ import annotations

import pytest

from sealpy.core.errors import InvalidReferenceError
from sealpy.core.reference import ImageReference, Platform, validate_digest

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
        # distribution normalises only the legacy index name; containerd and Sealos read
        # registry-1.docker.io/x as repository "x" on that host, not library/x.
        ("registry-1.docker.io/x/y:2", "registry-1.docker.io/x/y:2"),
        ("registry-1.docker.io/x", "registry-1.docker.io/x:latest"),
        ("quay.io/prometheus/node-exporter:v1.7.0", "quay.io/prometheus/node-exporter:v1.7.0"),
        ("  nginx:1.25  ", "docker.io/library/nginx:1.25"),
    ],
)
def test_references_are_normalised(text: str, expected: str) -> None:
    assert str(ImageReference.parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "registry", "repository"),
    [
        ("registry.example.com:5000/team/app:1", "registry.example.com:5000", "team/app"),
        ("myhost:5000/app", "myhost:5000", "app"),  # a port makes the first part a host
        ("localhost/app", "localhost", "app"),
        ("localhost:5000/app", "localhost:5000", "app"),
        ("[::1]:5000/app", "[::1]:5000", "app"),
        ("example.com/app", "example.com", "app"),
        # Without ".", ":" or "localhost" the first component is a path, not a host.
        ("myhost/app", "docker.io", "myhost/app"),
    ],
)
def test_first_component_is_a_host_when_it_looks_like_one(
    text: str, registry: str, repository: str
) -> None:
    reference = ImageReference.parse(text)
    assert (reference.registry, reference.repository) == (registry, repository)
    # A host needs no "library/" and keeps its port.
    assert str(reference).startswith(f"{registry}/{repository}")


def test_host_alone_is_a_name_with_a_tag() -> None:
    # "localhost:5000" has no "/": it is repository "localhost", tag "5000" (as in Docker).
    assert str(ImageReference.parse("localhost:5000")) == "docker.io/library/localhost:5000"


@pytest.mark.parametrize(
    "text",
    ["Nginx", "nginx/Web:1", "docker.io/Library/nginx", "quay.io/Org/app:1"],
)
def test_uppercase_repository_is_invalid(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="lowercase"):
        ImageReference.parse(text)


@pytest.mark.parametrize(
    "tag",
    ["1", "v1.2.3", "V1_Upper", "_underscore_first", "a" * 128, "1.25-alpine", "x.y-z_w"],
)
def test_valid_tags(tag: str) -> None:
    assert ImageReference.parse(f"nginx:{tag}").tag == tag


@pytest.mark.parametrize(
    "tag",
    ["a" * 129, ".dot-first", "-dash-first", "with space", "é", "1é", "a+b", "a/b:"],
)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageReference.parse(f"nginx:{tag}")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "nginx:",
        "nginx@",
        "-nginx",
        "a//b",
        "a/b/",
        "{{ .Values.image }}",
        "nginx:1.25 # comment",
        "nginx\n:1",
        "http://nginx",
        "x" * 256,
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageReference.parse(text)


def test_digest_pins_without_tag() -> None:
    reference = ImageReference.parse(f"nginx@{DIGEST}")
    assert reference.tag is None
    assert reference.digest == DIGEST
    assert str(reference) == f"docker.io/library/nginx@{DIGEST}"
    assert reference.reference == DIGEST


def test_name_tag_digest_keeps_both_and_the_digest_pins() -> None:
    reference = ImageReference.parse(f"registry.k8s.io/ingress-nginx/controller:v1.9.4@{DIGEST}")
    assert reference.tag == "v1.9.4"
    assert reference.digest == DIGEST
    assert str(reference) == f"registry.k8s.io/ingress-nginx/controller:v1.9.4@{DIGEST}"
    assert reference.reference == DIGEST  # what is fetched: the pinned content
    assert ImageReference.parse(str(reference)) == reference  # round trip


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "0" * 63,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha512:" + "0" * 128,
        "md5:" + "0" * 32,
    ],
)
def test_bad_digests_are_invalid(digest: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageReference.parse(f"nginx@{digest}")


def test_validate_digest_rejects_trailing_newline() -> None:
    assert validate_digest(DIGEST) == DIGEST
    with pytest.raises(InvalidReferenceError):
        validate_digest(DIGEST + "\n")


def test_with_tag_checks_the_tag_grammar() -> None:
    base = ImageReference.parse("nginx")
    assert str(base.with_tag("1.25")) == "docker.io/library/nginx:1.25"
    for bad in ("v1\n", "é", ".x"):
        with pytest.raises(InvalidReferenceError):
            base.with_tag(bad)


def test_references_compare_by_normalised_form() -> None:
    assert ImageReference.parse("nginx") == ImageReference.parse("docker.io/library/nginx:latest")
    assert ImageReference.parse("nginx:1") != ImageReference.parse(f"nginx:1@{DIGEST}")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("AMD64", "linux/amd64"),
    ],
)
def test_host_platform_from_the_machine_name(monkeypatch, machine: str, expected: str) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    assert str(Platform.host()) == expected
