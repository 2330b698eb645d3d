"""Image discovery: every image a build context needs, with where each was found.

Each source is a plugin on the ``sealpy_discover_images`` hook (``manifests``, ``charts``,
``shim``, ``archives`` are built in, registered through entry points like any third
party's). :func:`scan_context` finds the build files, calls every source, then merges:
references are normalised, de-duplicated (keeping every place each was found), filtered
by ``.sealignore`` and sorted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import pluggy

from sealpy.core.errors import ContextError, InvalidReferenceError
from sealpy.core.model import (
    BUILD_FILE_NAMES,
    COMMAND_LINE,
    ArchiveEntry,
    BuildContext,
    IgnoredImage,
    ImageSet,
    Location,
    RequiredImage,
    ScanResult,
    ScanWarning,
)
from sealpy.core.reference import ImageReference

SEALIGNORE = ".sealignore"


def find_build_files(root: Path, build_file: Path | None = None) -> tuple[Path, ...]:
    """``-f FILE`` (relative to the current directory, as buildah reads it), else every one
    of Sealfile, Kubefile, Dockerfile, Containerfile in the context root, in that order."""
    if build_file is not None:
        path = Path(build_file)
        if not path.is_file():
            raise ContextError(f"build file {build_file} does not exist")
        return (path.absolute(),)
    found = tuple(root / name for name in BUILD_FILE_NAMES if (root / name).is_file())
    if not found:
        raise ContextError(
            f"no build file in {root}: expected one of {', '.join(BUILD_FILE_NAMES)} (or use -f FILE)"
        )
    return found


def open_context(context_dir: Path, build_file: Path | None = None) -> BuildContext:
    root = Path(context_dir)
    if not root.exists():
        raise ContextError(f"build context {context_dir} does not exist")
    if not root.is_dir():
        raise ContextError(f"build context {context_dir} is not a directory")
    root = root.resolve()
    return BuildContext(root=root, build_files=find_build_files(root, build_file))


def read_sealignore(context: BuildContext) -> tuple[list[tuple[str, str]], list[ScanWarning]]:
    """``.sealignore`` rules as (pattern on the normalised reference, the line as written).

    A plain reference is normalised like any other (``nginx`` leaves out
    ``docker.io/library/nginx:latest``); a line with ``*``, ``?`` or ``[`` is a shell glob
    matched against normalised references (``quay.io/prometheus/*``)."""
    path = context.root / SEALIGNORE
    rules: list[tuple[str, str]] = []
    warnings: list[ScanWarning] = []
    if not path.is_file():
        return rules, warnings
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if any(ch in line for ch in "*?["):
            rules.append((line, line))
            continue
        try:
            rules.append((str(ImageReference.parse(line)), line))
        except InvalidReferenceError as exc:
            warnings.append(ScanWarning(SEALIGNORE, number, str(exc)))
    return rules, warnings


def _ignored_by(reference: ImageReference, rules: list[tuple[str, str]]) -> str | None:
    text = str(reference)
    for pattern, line in rules:
        if text == pattern or fnmatch.fnmatchcase(text, pattern):
            return line
        # A glob without a tag or digest also covers the tagged references.
        if fnmatch.fnmatchcase(reference.name, pattern):
            return line
    return None


def scan_context(
    context_dir: Path,
    *,
    build_file: Path | None = None,
    extra_images: Sequence[str] = (),
    manager: pluggy.PluginManager,
) -> ScanResult:
    context = open_context(context_dir, build_file)
    places: dict[ImageReference, list[Location]] = {}
    archives: list[ArchiveEntry] = []
    warnings: list[ScanWarning] = []
    for result in manager.hook.sealpy_discover_images(context=context):
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
