"""The native builder's pre-check: what it can tell about a build file before any image
is downloaded, without writing anything (see :meth:`NativeBuilder.check
<sealpy.core.build.native.NativeBuilder.check>`).

It parses the build files, picks the stages up to ``--target`` (refusing instructions the
native builder cannot run, such as RUN), reads ``--ignorefile``, and checks each literal
COPY/ADD source: it exists inside the context and is not ignored. Sources with variables
(``$VAR``), ``--from`` sources and URLs are left to the build, which knows ``ARG`` and
``ENV``.
"""

from __future__ import annotations

import re
from pathlib import Path

from sealpy.core.build.context import IGNORE_FILES, IgnoreMatcher, Tree, has_glob
from sealpy.core.build.parser import Instruction, expand_words, parse_files
from sealpy.core.build.plan import split_stages
from sealpy.core.errors import BuildError
from sealpy.core.model import BuildContext

_URL_SOURCE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^git@")


def check_native(
    context: BuildContext,
    *,
    target: str | None = None,
    ignorefile: Path | None = None,
    registry_pending: bool = False,
) -> None:
    """Raise the :class:`BuildError` the native build would raise first for a wrong build
    file, missing ``--target`` or ``--ignorefile``, or a literal source that is missing,
    outside the context or ignored. ``registry_pending``: the cache stage is about to
    create ``registry/``, so sources under it are not checked yet."""
    instructions = parse_files(context.build_files, root=context.root)
    head, stages = split_stages(instructions, target)
    tree = Tree(context.root, ignore=IgnoreMatcher.for_context(context.root, ignorefile))
    for ins in [*head, *(i for stage in stages for i in stage)]:
        if ins.keyword not in ("COPY", "ADD") or ins.has_flag("from") or "$" in ins.args:
            continue
        for source in _literal_sources(ins):
            if registry_pending and _under_registry(source):
                continue
            try:
                _check_source(tree, source, ins.keyword)
            except BuildError as exc:
                raise ins.error(str(exc)) from None


def _literal_sources(ins: Instruction) -> list[str]:
    words = expand_words(ins, {})
    return [w for w in words[:-1] if not _URL_SOURCE.match(w)]


def _under_registry(source: str) -> bool:
    parts = [p for p in source.split("/") if p not in ("", ".")]
    return bool(parts) and parts[0] == "registry"


def _check_source(tree: Tree, source: str, keyword: str) -> None:
    """What the native builder's plan checks first for one source (missing, outside the
    context, excluded by .dockerignore), without walking directories."""
    if has_glob(source):
        if not tree.glob(source):
            raise BuildError(f"{keyword} {source}: no file in {tree.what} matches")
        return
    path = tree.resolve(source.lstrip("/"))
    rel = tree.relative(path)
    if tree.ignore and rel and tree.ignore.ignored(rel):
        raise BuildError(f"{keyword} {source}: excluded by {IGNORE_FILES[1]} or {IGNORE_FILES[0]}")
