"""``sealpy registry verify DIR``: check a registry storage root, and optionally repair it.

Checks that every blob's content matches its digest, every link (layer, revision, tag)
holds a well-formed digest of a blob that exists, every tag resolves to a readable
manifest, and every stored image manifest has its config and layers (an index may be
sparse: only the children stored are checked). ``fix=True`` removes what is corrupt —
bad blobs, dangling links, incomplete manifests and the tags pointing at them — so that
a re-run of ``registry save``/``build`` fetches it again.

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
from sealpy.core.image.media import Manifest
from sealpy.core.image.walk import walk
from sealpy.core.transport.blobio import CHUNK
from sealpy.core.transport.confined import find_symlinks
from sealpy.core.transport.distribution import V2, DistributionLayout


class NotARegistryError(SealpyError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    repository: str | None
    digest: str | None
    message: str
    remove: tuple[Path, ...] = field(default=(), compare=False)

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
            return f"{head}: {len(self.problems)} problems, removed what was corrupt{left}"
        return f"{head}: {len(self.problems)} problems (run with --fix to remove what is corrupt)"


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
    repositories = layout.repositories()
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
    digest = layout.read_link(link)
    if digest is None:
        return Problem(
            repo, expected, f"{kind} link {link.name} is missing or malformed", (link.parent,)
        )
    if expected is not None and digest != expected:
        return Problem(
            repo, expected, f"{kind} link holds {digest}, not its own digest", (link.parent,)
        )
    if digest not in good_blobs:
        return Problem(
            repo, digest, f"{kind} link points to a missing or corrupt blob", (link.parent,)
        )
    return None


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
    for _ in range(3):  # removing a manifest can break the index or tag above it
        for problem in remaining:
            for path in problem.remove:
                # The path itself (a symlink is unlinked, not followed); one that can only
                # be reached through a symlink stays and is reported as remaining.
                with contextlib.suppress(OSError, SealpyError):
                    layout.confined.remove(path)
        remaining, _, _ = check(layout)
        found.extend(p for p in remaining if p not in found)
        if not remaining:
            break
    return VerifyResult(tuple(found), blobs, repositories, True, tuple(remaining))
