"""Discovery source: ``images/shim/``, lists of image references.

Every file under ``images/shim/`` (recursively), one reference a line. Blank lines and lines
starting with ``#`` are skipped; a trailing `` # comment`` and one pair of surrounding
quotes are removed (Sealos strips the quotes but not the comment, so a commented line is
an invalid reference there). A line that is still not a reference is a warning.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sealpy.core.discovery.yamlimages import text_lines, trim_quotes
from sealpy.core.errors import ContextError, InvalidReferenceError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.model import BuildContext, DiscoveryResult, Finding, Location, ScanWarning
from sealpy.core.reference import ImageReference

SHIM_DIR = Path("images", "shim")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")


def shim_line_value(line: str) -> str | None:
    """The reference a shim line names, or None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    text = trim_quotes(_TRAILING_COMMENT.sub("", text).strip()).strip()
    return text or None


def shim_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted; directory symlinks are not followed."""
    found = [
        Path(directory, name) for directory, _subdirs, files in os.walk(root) for name in files
    ]
    return sorted(p for p in found if p.is_file())


@hookimpl
def sealpy_discover_images(context: BuildContext) -> DiscoveryResult | None:
    root = context.root / SHIM_DIR
    if not root.is_dir():
        return None
    findings: list[Finding] = []
    warnings: list[ScanWarning] = []
    for path in shim_files(root):
        relative = context.relative(path)
        try:
            text = path.read_bytes().decode("utf-8-sig", errors="replace")
        except OSError as exc:
            raise ContextError(f"{relative}: cannot read: {exc.strerror or exc}") from None
        for number, line in enumerate(text_lines(text), 1):
            value = shim_line_value(line)
            if value is None:
                continue
            try:
                findings.append(Finding(ImageReference.parse(value), Location(relative, number)))
            except InvalidReferenceError as exc:
                warnings.append(ScanWarning(relative, number, str(exc)))
    return DiscoveryResult(findings=tuple(findings), warnings=tuple(warnings))
