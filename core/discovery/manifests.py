"""Discovery source: ``manifests/``, as Sealos reads it, plus what Sealos misses.

Every file under ``manifests/`` (recursively) whose name ends in ``.yaml``, ``.yml`` or
``.tmpl`` in any case. Each is read as multi-document YAML where it parses and always
line-scanned as Sealos does (see :mod:`sealpy.core.discovery.yamlimages`). A ``.yaml`` file
that does not parse gets a warning, since keys like ``sidecarImage`` may then be missed;
a ``.tmpl`` that does not parse is expected (it is a template) and only its unusable
lines are reported.
"""

from __future__ import annotations

import os
from pathlib import Path

from sealpy.core.discovery.yamlimages import images_in_text
from sealpy.core.errors import ContextError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BuildContext, DiscoveryResult, Finding, Location, ScanWarning

MANIFESTS_DIR = "manifests"
SUFFIXES = (".yaml", ".yml", ".tmpl")
TEMPLATE_SUFFIX = ".tmpl"


def manifest_files(root: Path) -> list[Path]:
    """The manifest files under ``root``, sorted; directory symlinks are not followed
    (as Go's ``filepath.Walk`` in Sealos), so a link cycle cannot hang the scan."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in files:
            path = Path(directory, name)
            if name.lower().endswith(SUFFIXES) and path.is_file():
                found.append(path)
    return sorted(found)


def scan_file(path: Path, context: BuildContext) -> DiscoveryResult:
    """Findings and warnings of one manifest file, located relative to the context."""
    relative = context.relative(path)
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise ContextError(f"{relative}: cannot read: {exc.strerror or exc}") from None
    scanned = images_in_text(text)
    findings = tuple(Finding(ref, Location(relative, line)) for line, ref in scanned.found)
    warnings = [ScanWarning(relative, line, message) for line, message in scanned.problems.items()]
    if scanned.yaml_error and not path.name.lower().endswith(TEMPLATE_SUFFIX):
        warnings.append(
            ScanWarning(
                relative,
                None,
                f"not valid YAML ({scanned.yaml_error}); read with Sealos's line scan only",
            )
        )
    return DiscoveryResult(findings=findings, warnings=tuple(warnings))


@hookimpl
def sealpy_discover_images(context: BuildContext) -> DiscoveryResult | None:
    root = context.root / MANIFESTS_DIR
    if not root.is_dir():
        return None
    findings: list[Finding] = []
    warnings: list[ScanWarning] = []
    for path in manifest_files(root):
        result = scan_file(path, context)
        findings.extend(result.findings)
        warnings.extend(result.warnings)
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))
