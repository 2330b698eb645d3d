"""manifests/: Sealos's line scan, plus the images it misses (YAML pass)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from discovery_kit import DIGEST, found, make_context, scan, warnings_at

from sealpy.core.discovery.yamlimages import images_in_text, lenient_value, sealos_line_value
from sealpy.core.errors import InvalidReferenceError
from sealpy.core.model import Location
from sealpy.core.reference import ImageReference


def refs(text: str) -> dict[str, list[int]]:
    """Reference → lines, for one text."""
    out: dict[str, list[int]] = {}
    for line, reference in images_in_text(text).found:
        out.setdefault(str(reference), []).append(line)
    return {k: sorted(set(v)) for k, v in out.items()}


# --- the YAML text rules ------------------------------------------------------------------


def test_multi_document_manifest_finds_every_document_with_lines() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: web
          image: nginx:1.25
---
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: cache
      image: redis:7
---
# an empty document follows
---
apiVersion: v1
kind: Pod
spec:
  ephemeralContainers:
    - name: debug
      image: busybox:1.36
"""
    assert refs(text) == {
        "docker.io/library/nginx:1.25": [8],
        "docker.io/library/redis:7": [15],
        "docker.io/library/busybox:1.36": [24],
    }


def test_cronjob_and_init_containers() -> None:
    text = """\
apiVersion: batch/v1
kind: CronJob
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          initContainers:
            - name: migrate
              image: registry.example.com:5000/tools/migrate:2.0
          containers:
            - name: job
              image: alpine:3.19
"""
    assert refs(text) == {
        "registry.example.com:5000/tools/migrate:2.0": [11],
        "docker.io/library/alpine:3.19": [14],
    }


def test_crd_keys_ending_in_image_in_any_case_at_any_depth() -> None:
    text = """\
apiVersion: operator.example.com/v1
kind: Cluster
spec:
  sidecarImage: quay.io/example/sidecar:1.0
  initImage: "ghcr.io/example/init:2.0"
  backup:
    foo_image: example/backup:3
    EXPORTER_IMAGE: example/exporter:4
  components:
    - name: a
      proxyImage: example/proxy:5
    - images_list: not-an-image-key
  images:
    - not/an-image-key:6
  imagePullPolicy: Always
  imagePullSecrets: [{name: creds}]
"""
    assert refs(text) == {
        "quay.io/example/sidecar:1.0": [4],
        "ghcr.io/example/init:2.0": [5],
        "docker.io/example/backup:3": [7],
        "docker.io/example/exporter:4": [8],
        "docker.io/example/proxy:5": [11],
    }


def test_sealos_misses_trailing_comments_flow_style_and_quotes_but_sealpy_does_not() -> None:
    text = """\
spec:
  containers:
    - name: a
      image: nginx:1.25 # pinned for CVE-2023-1234
    - {name: b, image: redis:7}
    - {name: c, image: "memcached:1.6", args: [x]}
    - name: d
      image: 'postgres:16'
    - name: e
      image: "mysql:8"   # quoted and commented
  sidecars: [{image: envoyproxy/envoy:v1.29}]
"""
    assert refs(text) == {
        "docker.io/library/nginx:1.25": [4],
        "docker.io/library/redis:7": [5],
        "docker.io/library/memcached:1.6": [6],
        "docker.io/library/postgres:16": [8],
        "docker.io/library/mysql:8": [10],
        "docker.io/envoyproxy/envoy:v1.29": [11],
    }
    # ... and none of those lines is reported: the YAML pass explained them.
    assert images_in_text(text).problems == {}


def test_name_tag_digest_keeps_both() -> None:
    text = f"image: registry.k8s.io/ingress-nginx/controller:v1.9.4@{DIGEST}\n"
    assert refs(text) == {f"registry.k8s.io/ingress-nginx/controller:v1.9.4@{DIGEST}": [1]}


def test_line_scan_also_reads_image_inside_strings_as_sealos_does() -> None:
    # A HelmChart CR (k3s) embeds values: Sealos's line scan finds this image, and so must we.
    text = """\
apiVersion: helm.cattle.io/v1
kind: HelmChart
spec:
  valuesContent: |-
    controller:
      image: rancher/mirrored-controller:v1.2
"""
    assert refs(text) == {"docker.io/rancher/mirrored-controller:v1.2": [6]}


def test_null_and_boolean_image_values_are_no_images_and_no_warnings() -> None:
    text = "a:\n  image: null\nb:\n  image: ~\nc:\n  image:\nd:\n  sidecarImage: false\n"
    scanned = images_in_text(text)
    assert scanned.found == []
    assert scanned.problems == {}


def test_structured_image_values_are_walked_not_reported() -> None:
    text = """\
image:
  repository: nginx
  tag: "1.25"
nested:
  image: {sidecarImage: envoy:1}
"""
    scanned = images_in_text(text)
    assert [str(r) for _, r in scanned.found] == ["docker.io/library/envoy:1"]
    assert scanned.problems == {}


def test_aliases_are_read_once_and_cycles_terminate() -> None:
    text = """\
base: &base
  image: nginx:1.25
copy: *base
loop: &loop [*loop]
"""
    scanned = images_in_text(text)
    assert [(line, str(r)) for line, r in scanned.found] == [(2, "docker.io/library/nginx:1.25")]


def test_invalid_references_are_problems_with_their_line() -> None:
    text = """\
spec:
  containers:
    - image: Nginx:1.25
    - image: ""
    - image: redis:7
  sidecarImage: "not a reference"
  note: "this image: is not a reference either"
  previewImage: "https://example.com/preview.png"
  pullImage: Always
  foo_image: "-bad-"
  initImage: busybox:1.36
"""
    scanned = images_in_text(text)
    assert sorted((line, str(r)) for line, r in scanned.found) == [
        (5, "docker.io/library/redis:7"),
        (11, "docker.io/library/busybox:1.36"),
    ]
    # A key named exactly `image` (what Sealos reads) and the line scan (line 7: `image:`
    # inside a string) report what is not a reference; other *Image keys whose values are
    # not references (URLs, pull policies) name no image and are skipped without a word.
    assert sorted(scanned.problems) == [3, 7]
    assert "Nginx:1.25" in scanned.problems[3]


def test_templated_text_falls_back_to_a_lenient_line_scan() -> None:
    text = """\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: a
      image: {{ .Values.registry }}/app:{{ .Values.tag }}
    - name: b
      image: nginx:1.25 # {{ .Comment }}
    - {name: c, image: "redis:7", {{ .Extra }}}
    - name: d
      image: '{{ .Image }}'
{{- if .Sidecar }}
    - image: envoyproxy/envoy:v1.29
{{- end }}
# image: commented/out:1
"""
    scanned = images_in_text(text)
    assert scanned.yaml_error is not None
    assert {str(r): line for line, r in scanned.found} == {
        "docker.io/library/nginx:1.25": 8,
        "docker.io/library/redis:7": 9,
        "docker.io/envoyproxy/envoy:v1.29": 13,
    }
    assert sorted(scanned.problems) == [6, 11]
    assert "{{ .Values.registry }}" in scanned.problems[6]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("    image: nginx", "nginx"),
        ('- image: "nginx:1"', "nginx:1"),
        ("image: 'a'", "a"),
        ("foo_image: x", "x"),
        ("sidecarImage: x", None),  # case-sensitive "image:"
        ("# image: x", None),
        ("   #image: x", None),
        ("image:", None),
        ('image: ""', None),
        ("image: x # c", "x # c"),  # Sealos keeps the comment
        ("{name: a, image: x}", "x}"),
        ("note: an image: y image: z", "y image: z"),  # the first "image:" only
    ],
)
def test_sealos_line_value_reproduces_sealos(line: str, value: str | None) -> None:
    assert sealos_line_value(line) == value


@pytest.mark.parametrize(
    ("value", "clean"),
    [
        ("x # c", "x"),
        ('"x" # c', "x"),
        ("'x', other: 1}", "x"),
        ("x}", "x"),
        ("x, b: 1}]", "x"),
        ("{{ .Values.x }}", "{{ .Values.x"),
    ],
)
def test_lenient_value_cuts_what_cannot_be_a_reference(value: str, clean: str) -> None:
    assert lenient_value(value) == clean


def _independent_sealos_scan(text: str) -> set[str]:
    """Sealos's ParseImages, written again here from its Go source (not sealpy's code)."""
    out: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or "image:" not in line:
            continue
        value = line[line.index("image:") + len("image:") :].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not value:
            continue
        # Sealos then drops a digest that follows a tag; sealpy keeps it (same image).
        with contextlib.suppress(InvalidReferenceError):
            out.add(str(ImageReference.parse(value)))
    return out


@pytest.mark.parametrize(
    "text",
    [
        "spec:\n  containers:\n  - image: nginx\n  - image: 'redis:7'\n",
        "x:\n  foo_image: a/b:1\n  y: 'see image: c/d:2'\n",
        "a: b # image: commented/after:1\n",
        "list:\n- image: quay.io/x/y@" + DIGEST + "\n",
        "cm:\n  data: |\n    image: inside/block:3\n    other: 1\n",
    ],
)
def test_finds_at_least_what_sealos_finds_in_valid_yaml(text: str) -> None:
    sealos = _independent_sealos_scan(text)
    ours = set(refs(text))
    assert sealos, "the sample should give Sealos something to find"
    assert sealos <= ours


# --- the plugin over a context -------------------------------------------------------------


def test_manifests_directory_recursive_suffixes_any_case(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "manifests/app.yaml": "image: a/app:1\n",
            "manifests/deep/er/x.YML": "image: a/yml:1\n",
            "manifests/deep/y.Yaml": "image: a/yaml-case:1\n",
            "manifests/t.TMPL": "image: a/tmpl:1\n",
            "manifests/notes.txt": "image: a/txt:1\n",
            "manifests/data.json": '{"image": "a/json:1"}\n',
            "elsewhere/ignored.yaml": "image: a/elsewhere:1\n",
        },
    )
    assert found(scan(ctx)) == {
        "docker.io/a/app:1": (Location("manifests/app.yaml", 1),),
        "docker.io/a/tmpl:1": (Location("manifests/t.TMPL", 1),),
        "docker.io/a/yaml-case:1": (Location("manifests/deep/y.Yaml", 1),),
        "docker.io/a/yml:1": (Location("manifests/deep/er/x.YML", 1),),
    }


def test_manifest_warnings_carry_file_and_line_and_do_not_fail(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "manifests/app.yaml": "spec:\n  containers:\n  - image: Nginx:1\n  - image: ok:1\n",
            "manifests/t.tmpl": "x: {{ .X }}\nimage: {{ .Values.image }}\n",
        },
    )
    result = scan(ctx)
    assert list(found(result)) == ["docker.io/library/ok:1"]
    assert warnings_at(result) == [("manifests/app.yaml", 3), ("manifests/t.tmpl", 2)]
    assert all("invalid image reference" in w.message for w in result.images.warnings)


def test_yaml_file_that_does_not_parse_is_line_scanned_and_reported(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {"manifests/broken.yaml": "a: [unclosed\nimage: nginx:1.25\n\tsidecarImage: x:1\n"},
    )
    result = scan(ctx)
    assert found(result) == {
        "docker.io/library/nginx:1.25": (Location("manifests/broken.yaml", 2),)
    }
    (warning,) = result.images.warnings
    assert warning.file == "manifests/broken.yaml"
    assert "not valid YAML" in warning.message


def test_no_manifests_directory_is_fine(tmp_path: Path) -> None:
    result = scan(make_context(tmp_path / "ctx"))
    assert result.images.images == ()
    assert result.images.warnings == ()


def test_template_that_happens_to_parse_as_yaml_is_still_reported() -> None:
    # "{{ .Values.image }}" is a YAML flow mapping: the line must not pass unreported.
    scanned = images_in_text("kind: Pod\nimage: {{ .Values.image }}\n")
    assert scanned.yaml_error is None
    assert scanned.found == []
    assert list(scanned.problems) == [2]


def test_line_numbers_count_line_breaks_as_yaml_does() -> None:
    # A form feed inside a string is no line break for YAML (nor for an editor).
    text = 'a: "page\x0cbreak"\nb:\r\n  image: nginx:1.25\r\nc: {image: redis:7}\n'
    assert refs(text) == {"docker.io/library/nginx:1.25": [3], "docker.io/library/redis:7": [4]}
    templated = "x: {{ bad\x0c }}\nimage: nginx:1.25 # c\n"
    assert refs(templated) == {"docker.io/library/nginx:1.25": [2]}
