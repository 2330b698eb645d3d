"""Image references in Kubernetes YAML text: shared by the manifests and charts sources.

Two passes over the same text, so that sealpy finds at least what Sealos finds and more:

* **The YAML pass** composes every document (PyYAML nodes keep their line numbers) and
  takes the string value of every key whose name ends in ``image`` in any case (``image``,
  ``sidecarImage``, ``foo_image``) at any depth, when it parses as a reference (a value
  that does not is a problem only under a key named exactly ``image``). It sees what a
  line scan cannot: values with trailing comments, quoted values, flow style
  (``{name: a, image: x}``), CRD keys.
* **Sealos's line scan** (``pkg/buildimage/manifests``): in each trimmed line that does
  not start with ``#``, the text after the first case-sensitive ``image:`` substring,
  trimmed and unquoted. It also sees ``image:`` inside strings (embedded configuration,
  scripts), which the YAML pass deliberately does not read.

On a line the YAML pass has explained (an image key and its value), the YAML pass wins: it
knows the value exactly, so ``image: nginx # pinned`` is ``nginx`` and ``image: null`` is
no image at all. Text that is not YAML (a templated ``.tmpl``) gets the line scan alone,
made a little more lenient (comments, quotes and flow punctuation are cut off) since there
is no parser to rely on. Whatever cannot be used becomes a problem with its line number:
the callers turn problems into warnings, never silently dropping a line (the one exception:
values of keys like ``pullImage: Always`` that merely end in ``image`` and name none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealpy.core.errors import InvalidReferenceError
from sealpy.core.reference import ImageReference

if TYPE_CHECKING:  # imported when a text is parsed: a context may have no YAML at all
    import yaml

_SEALOS_MARKER = "image:"
SEALOS_KEY = "image"
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
# Plain scalars YAML reads as numbers are still written as a reference would be (``image:
# 1234``); null and booleans (``image: null``, ``image: ~``) never name an image.
_REFERENCE_TAGS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
# YAML's line breaks (libyaml's and PyYAML's), so line numbers agree with node marks;
# str.splitlines() would also split at form feeds and other separators.
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass
class TextImages:
    """What one text holds: references and problems, each with its 1-based line."""

    found: list[tuple[int, ImageReference]] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)
    # Why the text is not YAML (the parser's first complaint), or None when it parsed.
    yaml_error: str | None = None

    def problem(self, line: int, message: str) -> None:
        self.problems.setdefault(line, message)


def text_lines(text: str) -> list[str]:
    """``text`` split at line breaks as YAML (and an editor) counts them."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def is_image_key(key: str) -> bool:
    """``image``, ``sidecarImage``, ``initImage``, ``foo_image``: any key ending in image."""
    return key.lower().endswith("image")


def trim_quotes(text: str) -> str:
    """Remove one pair of matching surrounding quotes, as Sealos's ``TrimQuotes`` does."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def sealos_line_value(line: str) -> str | None:
    """The value Sealos's line scan takes from ``line``, or None when it takes nothing."""
    text = line.strip()
    if text.startswith("#"):
        return None
    index = text.find(_SEALOS_MARKER)
    if index < 0:
        return None
    value = trim_quotes(text[index + len(_SEALOS_MARKER) :].strip())
    return value or None


def lenient_value(value: str) -> str:
    """``value`` without what cannot belong to a reference in un-parsed YAML: a trailing
    `` # comment``, surrounding quotes, and the rest of a flow mapping or sequence."""
    value = _TRAILING_COMMENT.sub("", value).strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        return value[1:end] if end > 0 else value[1:]
    return value.split(",", 1)[0].rstrip("}] \t")


def _parse(text: str) -> tuple[ImageReference | None, str | None]:
    try:
        return ImageReference.parse(text), None
    except InvalidReferenceError as exc:
        return None, str(exc)


def _walk_yaml(text: str, out: TextImages) -> set[int] | None:
    """The YAML pass: add findings and problems to ``out``; return the lines explained by
    an image key, or None when ``text`` is not YAML."""
    import yaml

    # The C loader is ten times faster; fall back to the pure-Python one where it is missing.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    explained: set[int] = set()
    try:
        documents = list(yaml.compose_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        out.yaml_error = _yaml_problem(exc)
        return None
    seen: set[int] = set()
    stack: list[yaml.Node] = [d for d in documents if d is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes, and may even form cycles
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and is_image_key(key.value):
                    _take_image_value(key, value, out, explained)
                else:
                    stack.append(key)
                stack.append(value)
    return explained


def _take_image_value(
    key: yaml.ScalarNode, node: yaml.Node, out: TextImages, explained: set[int]
) -> None:
    """The value of an image key: a scalar, or a list of scalars (``images``-like CRDs).

    A mapping value is left to the line scan of the key's line: ``image:`` over a block
    mapping gives it nothing, while ``image: {{ .Values.image }}`` (a template that happens
    to parse as a flow mapping) is reported there instead of passing silently.

    Only a key named exactly ``image`` (the one Sealos reads) reports a value that is not
    a reference; other keys ending in ``image`` count only when the value parses as one,
    since ``pullImage: Always`` or ``previewImage: https://…`` name no image at all and
    would otherwise break ``--strict`` for nothing."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        if node.tag == _NULL and not node.value:
            # Nothing after the key: the line scan finds nothing there either, unless the
            # "key" is part of a template, as ``.Values.image`` in ``{{ .Values.image }}``.
            return
        scalars = [node]
    elif isinstance(node, yaml.SequenceNode):
        scalars = [n for n in node.value if isinstance(n, yaml.ScalarNode)]
    else:
        return
    explained.add(key.start_mark.line + 1)
    for scalar in scalars:
        line = scalar.start_mark.line + 1
        explained.add(line)
        if scalar.tag not in _REFERENCE_TAGS or not scalar.value.strip():
            continue
        reference, error = _parse(scalar.value)
        if reference is not None:
            out.found.append((line, reference))
        elif error is not None and key.value == SEALOS_KEY:
            out.problem(line, error)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark is not None else problem


def images_in_text(text: str) -> TextImages:
    """Every image reference in ``text`` (YAML, possibly multi-document, or not YAML at
    all), with the line each was found on, and the lines that named an image unusably."""
    out = TextImages()
    explained = _walk_yaml(text, out)
    for number, line in enumerate(text_lines(text), 1):
        if explained is not None and number in explained:
            continue
        value = sealos_line_value(line)
        if value is None:
            continue
        reference, error = _parse(value)
        if reference is None and explained is None:
            reference, _ = _parse(lenient_value(value))
        if reference is not None:
            out.found.append((number, reference))
        elif error is not None:
            out.problem(number, error)
    return out
