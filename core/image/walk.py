"""Walking a manifest tree: an index, the indexes and image manifests under it.

The walk is given a *fetch* function (descriptor → manifest, or ``None`` for a child
that is not there), so the same code serves a remote source, the local store, a
distribution directory or an archive. Children come before their parents — the order
in which manifests must be stored, since a registry refuses an index whose children are
missing — and each manifest comes once, however many indexes list it.

Content-addressed trees cannot loop, but a fetch function may return what it likes, and
an endless chain of distinct indexes is possible: a cycle, or indexes nested deeper
than :data:`MAX_DEPTH`, is refused with a :class:`ManifestError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sealpy.core.errors import ManifestError
from sealpy.core.image.media import Descriptor, Manifest

# How many indexes may lead to an image manifest, the top one included. Real images nest
# at most one index in another (a Docker list in an OCI index), and containers/image
# follows no deeper; 4 leaves room for that and refuses a hostile chain after 4 fetches
# (each up to MAX_MANIFEST_BYTES, held while the walk is below it).
MAX_DEPTH = 4

Fetch = Callable[[Descriptor], Manifest | None]
Select = Callable[[Manifest], Sequence[Descriptor]]


@dataclass(frozen=True)
class Node:
    """A manifest reached by the walk, with the descriptor that pointed at it (the
    parent's index entry, platform included; the root's own descriptor for the root)."""

    descriptor: Descriptor
    manifest: Manifest
    depth: int


def all_children(index: Manifest) -> Sequence[Descriptor]:
    """Every entry of an index: the default selection."""
    return index.children


class _Incomplete(Exception):
    """A child manifest is missing: ends the walk of :func:`is_complete` at once."""


def is_complete(root: Manifest, fetch: Fetch, has_blob: Callable[[str], bool]) -> bool:
    """Whether every manifest under ``root`` can be fetched and every blob ``has_blob``.
    Stops at the first thing missing, fetching nothing after it."""

    def fetch_or_stop(child: Descriptor) -> Manifest:
        found = fetch(child)
        if found is None:
            raise _Incomplete
        return found

    try:
        return all(
            all(has_blob(blob.digest) for blob in node.manifest.blobs)
            for node in walk(root, fetch_or_stop)
        )
    except _Incomplete:
        return False


def walk(root: Manifest, fetch: Fetch, *, select: Select = all_children) -> Iterator[Node]:
    """Every manifest of the tree under ``root`` (``root`` included, last), children
    before parents, in the order the indexes list them, each digest once.

    ``select`` chooses which entries of an index to follow (a platform choice);
    ``fetch`` returns ``None`` for a child to leave out (not stored), or raises. The walk
    is lazy: a caller that stops early fetches nothing more."""
    seen: set[str] = set()
    yield from _visit(root.descriptor(), root, fetch, select, seen, (root.digest,))


def _visit(
    descriptor: Descriptor,
    manifest: Manifest,
    fetch: Fetch,
    select: Select,
    seen: set[str],
    path: tuple[str, ...],
) -> Iterator[Node]:
    if manifest.is_index:
        for child in select(manifest):
            if child.digest in path:
                raise ManifestError(
                    f"index {manifest.digest} refers to itself through {child.digest}"
                )
            if child.digest in seen:
                continue
            if len(path) > MAX_DEPTH:
                raise ManifestError(f"index {path[0]} nests indexes more than {MAX_DEPTH} deep")
            found = fetch(child)
            if found is None:
                continue
            yield from _visit(child, found, fetch, select, seen, (*path, child.digest))
    seen.add(descriptor.digest)
    yield Node(descriptor, manifest, len(path) - 1)
