"""The one exception to "a COPY takes file modes from disk": registry blob files.

``<context>/registry`` holds blobs in Docker distribution's layout
(``docker/registry/v2/blobs/sha256/<2 hex>/<64 hex>/data``), and how such a file landed on
disk varies with nothing the user chose: downloaded by the ``proxy`` strategy or written by
``docker-registry`` (mode from the umask, usually 0644, one link), hard-linked from the
machine-wide blob cache (read-only 0444, several links, the cache file's times), or copied
read-only from a cache on another file system. The bytes are the same (the path names
their digest), so the layer must be too: in the build context such files enter a layer as
regular files of mode :data:`BLOB_FILE_MODE` (what a default-umask download gives), never
as tar hard links (to each other or anything else). ``--chmod`` still wins. Every other
file keeps its mode from disk, as buildah does; mtimes never matter (every entry gets the
build's timestamp).

And one directory stays out: a repository's ``_uploads``. It holds unfinished uploads
only — a registry serves nothing from it — and whether it exists depends on how blobs
arrived (a download leaves an empty one in the repository that fetched first, a blob
linked from the cache none, ``docker-registry`` one per repository pushed to), so a
cluster image would differ with the cache or with the order parallel downloads finished.
"""

from __future__ import annotations

import re

BLOB_FILE_MODE = 0o644
_BLOB_DATA = re.compile(
    r"(?:^|/)docker/registry/v2/blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})/data$"
)


_UPLOADS = re.compile(r"(?:^|/)docker/registry/v2/repositories/.+/_uploads$")


def is_uploads_dir(relpath: str) -> bool:
    """Whether ``relpath`` is a distribution repository's ``_uploads`` directory."""
    return _UPLOADS.search(relpath) is not None


def is_blob_file(relpath: str) -> bool:
    """Whether ``relpath`` (posix, relative to the tree's root) is a distribution blob's
    ``data`` file: the two-character directory must be the digest's first two."""
    match = _BLOB_DATA.search(relpath)
    return match is not None and match.group(2).startswith(match.group(1))
