"""Image discovery: every image a build context needs, with where each was found.

Each source is a plugin on the ``sealpy_discover_images`` hook (``manifests``, ``charts``,
``shim``, ``archives`` are built in, registered through entry points like any third
party's). :func:`scan_context` finds the build files, calls every source, then merges:
references are normalised, de-duplicated (keeping every place each was found), filtered
by ``.sealignore`` and sorted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pluggy

from sealpy.core import plugins
from sealpy.core.errors import ContextError, InvalidReferenceError
from sealpy.core.model import (
    BUILD_FILE_NAMES,
    COMMAND_LINE,
    ArchiveEntry,
    BuildContext,
    IgnoredImage,
    ImageSet,
    Location,
    RenderOptions,
    RequiredImage,
    ScanResult,
    ScanWarning,
)
from sealpy.core.reference import ImageReference

SEALIGNORE = ".sealignore"
_COMMENT = re.compile(r"\s#.*$")


def find_build_files(
    root: Path, build_file: Path | None = None, *, required: bool = True
) -> tuple[Path, ...]:
    """``-f FILE``, else every one of Sealfile, Kubefile, Dockerfile, Containerfile in the
    context root, in that order. ``-f`` is read as buildah reads it: relative to the current
    directory, else relative to the context (``sealpy build -f Kubefile.prod ctx``).
    ``required=False``: no build file in the context is fine (an empty tuple)."""
    if build_file is not None:
        return (resolve_build_file(root, Path(build_file)),)
    found = tuple(root / name for name in BUILD_FILE_NAMES if (root / name).is_file())
    if not found and required:
        raise ContextError(
            f"no build file in {root}: expected one of {', '.join(BUILD_FILE_NAMES)}"
            " (or use -f FILE)"
        )
    return found


def resolve_build_file(root: Path, build_file: Path) -> Path:
    """The ``-f`` file: as given (relative to the current directory), else, for a relative
    path that does not exist there, the same path inside the context (buildah's fallback)."""
    candidates = [build_file]
    if not build_file.is_absolute():
        candidates.append(root / build_file)
    for candidate in candidates:
        if candidate.is_dir():
            raise ContextError(f"build file {build_file} is a directory, not a file")
        if candidate.is_file():
            return candidate.absolute()
    if not build_file.is_absolute():
        raise ContextError(
            f"build file {build_file} does not exist (looked in the current directory "
            f"and in the context {root})"
        )
    raise ContextError(f"build file {build_file} does not exist")


def open_context(
    context_dir: Path,
    build_file: Path | None = None,
    *,
    require_build_file: bool = True,
    render: RenderOptions | None = None,
) -> BuildContext:
    root = Path(context_dir)
    if not root.exists():
        raise ContextError(f"build context {context_dir} does not exist")
    if not root.is_dir():
        raise ContextError(f"build context {context_dir} is not a directory")
    root = root.resolve()
    files = find_build_files(root, build_file, required=require_build_file)
    return BuildContext(root=root, build_files=files, render=render or RenderOptions())


@dataclass(frozen=True)
class IgnoreRule:
    """One ``.sealignore`` line: a shell glob over normalised references, or a reference.

    A reference rule matches the same repository with the same tag and digest, where the
    rule names them: ``nginx`` (``docker.io/library/nginx:latest``) leaves out exactly that,
    ``nginx:1.25`` also leaves out ``nginx:1.25@sha256:…`` (the same tag, pinned), and
    ``nginx@sha256:…`` leaves out that content under any tag."""

    line: str
    glob: str | None = None
    reference: ImageReference | None = None

    def matches(self, reference: ImageReference) -> bool:
        if self.glob is not None:
            # A glob without a tag or digest also covers the tagged references.
            return fnmatch.fnmatchcase(str(reference), self.glob) or fnmatch.fnmatchcase(
                reference.name, self.glob
            )
        rule = self.reference
        if rule is None or rule.name != reference.name:
            return False
        if rule.digest is not None:
            return rule.digest == reference.digest and rule.tag in (None, reference.tag)
        return rule.tag == reference.tag


def read_sealignore(context: BuildContext) -> tuple[list[IgnoreRule], list[ScanWarning]]:
    """The ``.sealignore`` rules, and warnings for lines that are neither a reference nor a
    glob. A plain reference is normalised like any other (``nginx`` leaves out
    ``docker.io/library/nginx:latest``); a line with ``*``, ``?`` or ``[`` is a shell glob
    matched against normalised references (``quay.io/prometheus/*``)."""
    path = context.root / SEALIGNORE
    rules: list[IgnoreRule] = []
    warnings: list[ScanWarning] = []
    if not path.is_file():
        return rules, warnings
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise ContextError(f"{SEALIGNORE}: cannot read: {exc.strerror or exc}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line or line.startswith("#"):
            continue
        if any(ch in line for ch in "*?["):
            rules.append(IgnoreRule(line, glob=line))
            continue
        try:
            rules.append(IgnoreRule(line, reference=ImageReference.parse(line)))
        except InvalidReferenceError as exc:
            warnings.append(ScanWarning(SEALIGNORE, number, str(exc)))
    return rules, warnings


def _ignored_by(reference: ImageReference, rules: list[IgnoreRule]) -> str | None:
    """The first rule (as written) that leaves ``reference`` out, or None."""
    return next((rule.line for rule in rules if rule.matches(reference)), None)


def scan_context(
    context_dir: Path,
    *,
    build_file: Path | None = None,
    extra_images: Sequence[str] = (),
    require_build_file: bool = True,
    render: RenderOptions | None = None,
    manager: pluggy.PluginManager,
) -> ScanResult:
    context = open_context(
        context_dir, build_file, require_build_file=require_build_file, render=render
    )
    places: dict[ImageReference, list[Location]] = {}
    archives: list[ArchiveEntry] = []
    warnings: list[ScanWarning] = []
    for result in plugins.hook(manager, "sealpy_discover_images")(context=context):
        if result is None:
            continue
        for finding in result.findings:
            places.setdefault(finding.reference, []).append(finding.location)
        archives.extend(result.archives)
        warnings.extend(result.warnings)
    for text in extra_images:
        try:
            ref = ImageReference.parse(text)
        except InvalidReferenceError as exc:
            raise ContextError(f"--images: {exc}") from None
        places.setdefault(ref, []).append(Location(COMMAND_LINE))
    rules, rule_warnings = read_sealignore(context)
    warnings.extend(rule_warnings)
    kept: list[RequiredImage] = []
    ignored: list[IgnoredImage] = []
    for ref in sorted(places, key=str):
        rule = _ignored_by(ref, rules)
        if rule is not None:
            ignored.append(IgnoredImage(ref, rule))
        else:
            kept.append(RequiredImage(ref, tuple(sorted(set(places[ref]), key=_location_key))))
    images = ImageSet(
        images=tuple(kept),
        archives=tuple(sorted(archives, key=lambda a: (str(a.path), str(a.destination)))),
        ignored=tuple(ignored),
        warnings=tuple(sorted(set(warnings), key=lambda w: (w.file or "", w.line or 0, w.message))),
    )
    return ScanResult(context, images)


def _location_key(location: Location) -> tuple:
    return (location.file, location.line or 0, location.detail or "")
