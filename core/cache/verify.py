"""``sealpy registry verify DIR``: check a registry storage root, and optionally repair it.

Checks that every blob's content matches its digest, every link (layer, revision, tag)
holds exactly a digest (``sha256:<64 hex>``, as the registry reads it) of a blob that
exists, every tag resolves to a readable manifest, and every stored image manifest has
its config and layers (an index may be sparse: only the children stored are checked).
Repositories a failed run left with layer links only are checked too. ``fix=True``
repairs a link whose path names a blob that is present and intact (an empty or garbled
link a registry left when the disk filled up) and removes the rest of what is corrupt —
bad blobs, dangling links, incomplete manifests and the tags pointing at them — so that
a re-run of ``registry save``/``build`` fetches it again. :func:`repair_links` is the
cheap part of that (links only, no blob hashed), for ``sync`` before it starts a registry
on the tree: that registry answers 500 to anything that needs an empty link.

Nothing outside the directory is read, written or removed: a stock registry never writes
a symlink, so every symlink in the tree is a problem of its own (whether it points
outside or inside), the checks never follow one, and ``fix`` removes the link itself,
never what it points to. Removal goes through :class:`ConfinedRoot` (directory file
descriptors, ``O_NOFOLLOW``), so a symlink swapped in during the run is not followed either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core.errors import SealpyError
from sealpy.core.image.media import Manifest, digest_hex
from sealpy.core.image.walk import walk
from sealpy.core.transport.blobio import CHUNK
from sealpy.core.transport.confined import find_symlinks
from sealpy.core.transport.distribution import V2, DistributionLayout

GARBLED = ("empty", "malformed")  # what DistributionLayout.check_link says of bad content


class NotARegistryError(SealpyError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    repository: str | None
    digest: str | None
    message: str
    remove: tuple[Path, ...] = field(default=(), compare=False)
    # A link file and the digest it should hold (its path names an intact blob): with
    # --fix it is rewritten instead of removed.
    rewrite: tuple[Path, str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.repository is None and self.digest is None:
            return self.message
        where = self.repository or "blobs"
        if self.digest:
            where += f"@{self.digest}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class VerifyResult:
    problems: tuple[Problem, ...]
    blobs: int
    repositories: int
    fixed: bool = False
    remaining: tuple[Problem, ...] = ()

    def summary(self) -> str:
        head = f"{self.blobs} blobs, {self.repositories} repositories checked"
        if not self.problems:
            return f"{head}: no problems"
        if self.fixed:
            left = (
                f"; {len(self.remaining)} remain"
                if self.remaining
                else "; a re-run fetches them again"
            )
            return (
                f"{head}: {len(self.problems)} problems, repaired or removed what was corrupt{left}"
            )
        return f"{head}: {len(self.problems)} problems (run with --fix to repair or remove what is corrupt)"


def _hash_blob(layout: DistributionLayout, digest: str) -> str:
    sha = hashlib.sha256()
    with layout.open_blob(digest) as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def symlink_problems(layout: DistributionLayout) -> list[Problem]:
    """Every symlink in the tree (from ``docker/`` down), each removable by itself."""
    problems = []
    for link in find_symlinks(layout.root, layout.root / V2):
        try:
            target = os.readlink(link)
        except OSError:
            target = "?"
        problems.append(
            Problem(
                None,
                None,
                f"{link.relative_to(layout.root)} is a symlink to {target} "
                "(a registry directory holds no symlinks)",
                (link,),
            )
        )
    return problems


def check(layout: DistributionLayout) -> tuple[list[Problem], int, int]:
    problems = symlink_problems(layout)
    good_blobs: set[str] = set()
    blobs = 0
    for digest in layout.blob_digests():
        blobs += 1
        path = layout.blob_path(digest)
        try:
            actual = _hash_blob(layout, digest)
        except SealpyError:  # gone since it was listed
            continue
        if actual == digest:
            good_blobs.add(digest)
        else:
            problems.append(Problem(None, digest, f"content has digest {actual}", (path.parent,)))
    repositories = layout.repositories(unfinished=True)
    for repo in repositories:
        problems.extend(_check_repository(layout, repo, good_blobs))
    return problems, blobs, len(repositories)


def _link_problem(
    layout: DistributionLayout,
    repo: str,
    link: Path,
    kind: str,
    good_blobs: set[str],
    expected: str | None,
) -> Problem | None:
    digest, why = layout.check_link(link)
    # Content a registry garbled is rewritten; a link that is missing, or unreadable (a
    # symlink, a directory), is removed as before.
    garbled = why in GARBLED or (digest is not None and digest != expected)
    rewrite = (link, expected) if garbled and expected in good_blobs else None
    if digest is None:
        return Problem(repo, expected, f"{kind} link is {why}", (link.parent,), rewrite)
    if expected is not None and digest != expected:
        return Problem(
            repo,
            expected,
            f"{kind} link holds {digest}, not its own digest",
            (link.parent,),
            rewrite,
        )
    if digest not in good_blobs:
        return Problem(
            repo, digest, f"{kind} link points to a missing or corrupt blob", (link.parent,)
        )
    return None


def _tag_index_links(layout: DistributionLayout, repo: str, tag: str) -> list[tuple[Path, str]]:
    """(link file, digest its path names) for every digest a tag has pointed to."""
    index = layout.tag_dir(repo, tag) / "index" / "sha256"
    return [(index / digest_hex(d) / "link", d) for d in layout.tag_history(repo, tag)]


def _malformed_tag_index_links(
    layout: DistributionLayout, repo: str, tag: str, good_blobs: set[str]
) -> list[Problem]:
    """Tag index links that hold no digest or another one. One pointing to a blob that
    is gone is history the registry never reads for serving: not a problem."""
    problems = []
    for link, expected in _tag_index_links(layout, repo, tag):
        problem = _link_problem(layout, repo, link, f"tag {tag} index", good_blobs, expected)
        if problem is not None and "missing or corrupt blob" not in problem.message:
            problems.append(problem)
    return problems


def _check_repository(layout: DistributionLayout, repo: str, good_blobs: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    repo_dir = layout.v2 / "repositories" / repo
    layers = set()
    for digest in layout.layer_links(repo):
        problem = _link_problem(
            layout, repo, layout.layer_link(repo, digest), "layer", good_blobs, digest
        )
        if problem:
            problems.append(problem)
        else:
            layers.add(digest)
    complete: set[str] = set()
    broken: set[str] = set()
    revisions = layout.revisions(repo)
    manifests: dict[str, Manifest] = {}
    for digest in revisions:
        link = layout.revision_link(repo, digest)
        problem = _link_problem(layout, repo, link, "manifest revision", good_blobs, digest)
        if problem:
            problems.append(problem)
            broken.add(digest)
            continue
        try:
            manifests[digest] = Manifest.parse(layout.read_blob(digest), expected_digest=digest)
        except SealpyError as exc:
            problems.append(
                Problem(repo, digest, f"stored manifest is unusable: {exc}", (link.parent,))
            )
            broken.add(digest)
    for digest, manifest in manifests.items():
        if manifest.is_index:
            continue
        missing = [b.digest for b in manifest.blobs if b.digest not in layers]
        if missing:
            problems.append(
                Problem(
                    repo,
                    digest,
                    f"image is incomplete: {len(missing)} of its blobs are missing "
                    f"(first {missing[0]})",
                    (layout.revision_link(repo, digest).parent,),
                )
            )
            broken.add(digest)
        else:
            complete.add(digest)
    for digest, manifest in _indexes_children_first(manifests):
        stored = [
            c.digest for c in manifest.children if c.digest in manifests or c.digest in broken
        ]
        bad = [c for c in stored if c in broken]
        if not stored:
            problems.append(
                Problem(
                    repo,
                    digest,
                    "index with none of its images stored",
                    (layout.revision_link(repo, digest).parent,),
                )
            )
            broken.add(digest)
        elif bad:
            problems.append(
                Problem(
                    repo,
                    digest,
                    f"index child {bad[0]} is incomplete",
                    (layout.revision_link(repo, digest).parent,),
                )
            )
            broken.add(digest)
    for tag in layout.tags(repo):
        tag_dir = layout.tag_dir(repo, tag)
        problems.extend(_malformed_tag_index_links(layout, repo, tag, good_blobs))
        current = layout.read_link(tag_dir / "current" / "link")
        if current is None:
            problems.append(Problem(repo, None, f"tag {tag} has no valid current link", (tag_dir,)))
        elif current in broken or current not in manifests:
            problems.append(
                Problem(
                    repo, current, f"tag {tag} points to a missing or broken manifest", (tag_dir,)
                )
            )
    for leftover in layout.temporary_files(repo_dir):
        problems.append(
            Problem(repo, None, f"unfinished write {leftover.relative_to(repo_dir)}", (leftover,))
        )
    return problems


def _indexes_children_first(manifests: dict[str, Manifest]) -> list[tuple[str, Manifest]]:
    """The stored indexes, each once, an index nested in another before it: judging the
    outer one needs the verdict on the inner one."""
    out: dict[str, Manifest] = {}
    for manifest in manifests.values():
        if manifest.is_index:
            for node in walk(manifest, lambda child: manifests.get(child.digest)):
                if node.manifest.is_index:
                    out.setdefault(node.manifest.digest, node.manifest)
    return list(out.items())


def verify_registry(directory: Path, *, fix: bool = False) -> VerifyResult:
    directory = Path(directory)
    layout = DistributionLayout(directory)
    if not layout.exists() and not symlink_problems(layout):
        raise NotARegistryError(
            f"{directory} is not a registry storage root (no docker/registry/v2 inside)"
        )
    problems, blobs, repositories = check(layout)
    if not fix or not problems:
        return VerifyResult(tuple(problems), blobs, repositories)
    found = list(problems)
    remaining = problems
    # Links are repaired first, alone: an image whose links were broken is whole again
    # then, and what only looked broken because of them (the image, its tag) stays.
    rounds = 0
    while remaining and rounds < 4:  # removing a manifest can break the index or tag above
        rounds += 1
        repairs = [p for p in remaining if p.rewrite is not None]
        for problem in repairs or remaining:
            if _rewritten(layout, problem):
                continue
            for path in problem.remove:
                # The path itself (a symlink is unlinked, not followed); one that can only
                # be reached through a symlink stays and is reported as remaining.
                with contextlib.suppress(OSError, SealpyError):
                    layout.confined.remove(path)
        remaining, _, _ = check(layout)
        found.extend(p for p in remaining if p not in found)
    return VerifyResult(tuple(found), blobs, repositories, True, tuple(remaining))


def _rewritten(layout: DistributionLayout, problem: Problem) -> bool:
    if problem.rewrite is None:
        return False
    try:
        layout.write_link(*problem.rewrite)
    except (OSError, SealpyError):
        return False  # e.g. a directory where the file should be: removed instead
    return True


def repair_links(layout: DistributionLayout) -> list[str]:
    """Repair the link files that hold no digest, or another than their path names —
    rewritten when that blob is present, else removed (a tag whose current link is
    broken goes whole) — before a stock registry serves the tree: it answers 500 to
    any request that reads such a link, so a re-run after a disk-full failure could never
    complete. Reads links only and hashes no blob (``verify`` does that). Returns one line
    per link changed. Links that hold a digest whose blob is missing are left: the
    registry treats them as absent, and the run fetches the blob again."""
    changed: list[str] = []
    for repo in layout.repositories(unfinished=True):
        links: list[tuple[str, Path, str | None, Path]] = [
            ("layer", layout.layer_link(repo, d), d, layout.layer_link(repo, d).parent)
            for d in layout.layer_links(repo)
        ]
        links += [
            ("manifest revision", link, d, link.parent)
            for d in layout.revisions(repo)
            for link in (layout.revision_link(repo, d),)
        ]
        for tag in layout.tags(repo):
            tag_dir = layout.tag_dir(repo, tag)
            links += [
                (f"tag {tag} index", lk, d, lk.parent)
                for lk, d in _tag_index_links(layout, repo, tag)
            ]
            links.append((f"tag {tag} current", tag_dir / "current" / "link", None, tag_dir))
        for kind, link, expected, owner in links:
            digest, why = layout.check_link(link)
            if why in ("missing", "unreadable"):
                continue  # served as absent; a symlink is refused when the registry starts
            if digest is not None and expected in (None, digest):
                continue
            why = why or f"holds {digest}"
            try:
                if expected is not None and layout.has_blob(expected):
                    layout.write_link(link, expected)
                    changed.append(f"{repo}: {kind} link was {why}: rewritten")
                    continue
            except (OSError, SealpyError):
                pass
            with contextlib.suppress(OSError, SealpyError):
                layout.confined.remove(owner)
            changed.append(f"{repo}: {kind} link was {why}: removed")
    return changed
