"""``CONTEXT/sealpy.lock``: every image a context needs, pinned to a manifest digest.

``sealpy lock`` writes it (:mod:`sealpy.core.lockresolve` asks the registries);
``sealpy build`` and ``sealpy registry save`` read it when it exists and fetch exactly the
locked digests, stored under their tags as without a lock. A context whose scan no longer
matches the lock — images added or removed, or other inputs that decide what the scan
finds — is an error listing what changed, so a build never half-follows a stale lock.

The file is JSON with sorted keys, two-space indentation and a final newline; images are
sorted by reference, so writing the same lock twice gives the same bytes. Schema (version
1; README "Lock file")::

    {
      "version": 1,
      "inputs": {                        what decides what the scan finds and caches
        "kube_version": "v1.20.0",       --kube-version (charts' .Capabilities.KubeVersion)
        "api_versions": [],              --api-versions, sorted
        "images": [],                    --images, normalised and sorted
        "platforms": ["linux/amd64"],    the platforms cached (--platform, else the host's), sorted
        "all_platforms": false           --all
      },
      "images": [{
        "reference": "docker.io/library/nginx:1.25",   as the scan normalised it
        "digest": "sha256:…",            the manifest (the index, for a multi-platform image)
        "media_type": "…",               that manifest's media type
        "platforms": [{"platform": "linux/amd64", "digest": "sha256:…"}],
                                         the index children cached (empty: single-platform)
        "sources": [{"file": "manifests/a.yaml", "line": 3}],   where the scan found it
        "signatures": ["sha256:…"]       the cosign signature manifests (sha256-<hex>.sig)
                                         of the manifest and each platform manifest
      }],
      "archives": [{"transport": "docker-archive", "path": "images/skopeo/a.tar",
                    "destination": "docker.io/library/a:1"}]    tar.txt entries (files in
                                                                the context: not pinned)
    }

``signatures`` lists the signature manifests found when the image was locked (what a
reviewer of the lock sees changing when an image is re-signed); they are not enforced on
their own — a ``--signature-policy`` decides what is accepted. ``sources`` is informational: an image found
elsewhere than the lock says is still the same image (``sealpy lock`` refreshes it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sealpy.core.errors import SealpyError, UsageError
from sealpy.core.model import (
    COMMAND_LINE,
    CacheOptions,
    ImageSet,
    Location,
    RenderOptions,
    ScanResult,
)
from sealpy.core.reference import ImageReference, validate_digest

if TYPE_CHECKING:
    from sealpy.core.cache.strategy import CacheStrategy

LOCK_NAME = "sealpy.lock"
LOCK_VERSION = 1


class LockError(SealpyError):
    """The lock file cannot be read or used (malformed, wrong version, missing with
    ``--locked``, or a context that no longer matches it)."""


def lock_path(context: Path) -> Path:
    return Path(context) / LOCK_NAME


@dataclass(frozen=True)
class LockInputs:
    """The inputs that decide which images a scan finds and which platforms are cached."""

    kube_version: str
    api_versions: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False

    @classmethod
    def of(cls, scanned: ScanResult, options: CacheOptions) -> LockInputs:
        """The inputs of a scan (``--images`` are the images it found on the command
        line) and of the cache options (platforms, ``--all``)."""
        render: RenderOptions = scanned.context.render
        extra = (
            str(i.reference)
            for i in scanned.images.images
            if any(s.file == COMMAND_LINE for s in i.sources)
        )
        return cls(
            kube_version=render.kube_version,
            api_versions=tuple(sorted(render.api_versions)),
            images=tuple(sorted(extra)),
            platforms=tuple(sorted({str(p) for p in options.platforms})),
            all_platforms=options.all_platforms,
        )

    def to_json(self) -> dict:
        return {
            "kube_version": self.kube_version,
            "api_versions": list(self.api_versions),
            "images": list(self.images),
            "platforms": list(self.platforms),
            "all_platforms": self.all_platforms,
        }

    @classmethod
    def from_json(cls, data: dict) -> LockInputs:
        return cls(
            kube_version=_text(data, "kube_version"),
            api_versions=_texts(data, "api_versions"),
            images=_texts(data, "images"),
            platforms=_texts(data, "platforms"),
            all_platforms=_flag(data, "all_platforms"),
        )

    def changes(self, now: LockInputs) -> list[str]:
        """One line per input that differs: ``--flag: locked → now``."""
        out = []
        for flag, locked, current in (
            ("--kube-version", self.kube_version, now.kube_version),
            ("--api-versions", _show(self.api_versions), _show(now.api_versions)),
            ("--images", _show(self.images), _show(now.images)),
            ("--platform", _show(self.platforms), _show(now.platforms)),
            ("--all", str(self.all_platforms).lower(), str(now.all_platforms).lower()),
        ):
            if locked != current:
                out.append(f"{flag}: {locked} (locked) -> {current}")
        return out

    def same_platforms(self, other: LockInputs) -> bool:
        return (self.platforms, self.all_platforms) == (other.platforms, other.all_platforms)


@dataclass(frozen=True)
class LockedPlatform:
    platform: str
    digest: str

    def to_json(self) -> dict:
        return {"platform": self.platform, "digest": self.digest}


@dataclass(frozen=True)
class LockedImage:
    """One image: its reference, the manifest digest it is pinned to, the platform
    manifests cached from it, where it was found and its signatures' digests."""

    reference: str
    digest: str
    media_type: str = ""
    platforms: tuple[LockedPlatform, ...] = ()
    sources: tuple[Location, ...] = ()
    signatures: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "media_type": self.media_type,
            "platforms": [p.to_json() for p in self.platforms],
            "sources": [s.to_json() for s in self.sources],
            "signatures": list(self.signatures),
        }

    @classmethod
    def from_json(cls, data: object) -> LockedImage:
        if not isinstance(data, dict):
            raise LockError("an entry of images is not an object")
        reference = _text(data, "reference")
        try:
            ImageReference.parse(reference)
            digest = validate_digest(_text(data, "digest"))
            platforms = tuple(
                LockedPlatform(_text(p, "platform"), validate_digest(_text(p, "digest")))
                for p in _objects(data, "platforms")
            )
            signatures = tuple(validate_digest(s) for s in _texts(data, "signatures"))
        except SealpyError as exc:
            raise LockError(f"image {reference}: {exc}") from None
        sources = tuple(
            Location(_text(s, "file"), s.get("line"), s.get("detail"))
            for s in _objects(data, "sources")
        )
        return cls(
            reference, digest, str(data.get("media_type") or ""), platforms, sources, signatures
        )


@dataclass(frozen=True)
class LockedArchive:
    """A ``tar.txt`` entry: listed so that adding or removing one is a change; a file in
    the context, so nothing to pin."""

    transport: str
    path: str
    destination: str

    def to_json(self) -> dict:
        return {"transport": self.transport, "path": self.path, "destination": self.destination}


@dataclass(frozen=True)
class LockFile:
    inputs: LockInputs
    images: tuple[LockedImage, ...] = ()
    archives: tuple[LockedArchive, ...] = ()
    version: int = LOCK_VERSION

    def by_reference(self) -> dict[str, LockedImage]:
        return {i.reference: i for i in self.images}

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "inputs": self.inputs.to_json(),
            "images": [i.to_json() for i in sorted(self.images, key=lambda i: i.reference)],
            "archives": [
                a.to_json()
                for a in sorted(self.archives, key=lambda a: (a.path, a.destination, a.transport))
            ],
        }

    def dumps(self) -> str:
        """The file's text: sorted keys and images, so equal locks are equal bytes."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str, where: str = LOCK_NAME) -> LockFile:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LockError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise LockError(f"{where}: not a JSON object")
        version = data.get("version")
        if version != LOCK_VERSION:
            raise LockError(
                f"{where}: lock file version {version!r} is not supported "
                f"(this sealpy reads version {LOCK_VERSION}); run `sealpy lock --update`"
            )
        try:
            inputs = data.get("inputs")
            if not isinstance(inputs, dict):
                raise LockError("inputs is missing")
            images = tuple(LockedImage.from_json(i) for i in _list(data, "images"))
            archives = tuple(
                LockedArchive(_text(a, "transport"), _text(a, "path"), _text(a, "destination"))
                for a in _objects(data, "archives")
            )
            return cls(LockInputs.from_json(inputs), images, archives)
        except LockError as exc:
            raise LockError(f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: Path) -> LockFile | None:
        """The lock at ``path``, or ``None`` when there is none."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise LockError(
                f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        return cls.loads(text, str(path))

    def write(self, path: Path) -> bool:
        """Write the lock atomically (a reader never sees half a file); False when the
        file already holds exactly these bytes (then it is left untouched)."""
        path = Path(path)
        text = self.dumps()
        try:
            if path.read_text(encoding="utf-8") == text:
                return False
        except (OSError, UnicodeDecodeError):
            pass
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


def archives_of(scanned: ScanResult) -> tuple[LockedArchive, ...]:
    context = scanned.context
    return tuple(
        LockedArchive(a.transport, context.relative(a.path), str(a.destination))
        for a in scanned.images.archives
    )


# --- using a lock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LockDiff:
    """How a scan differs from a lock: images and archives added and removed, inputs changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    archives_added: tuple[str, ...] = ()
    archives_removed: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)  # added reference -> where found

    def __bool__(self) -> bool:
        return bool(
            self.added
            or self.removed
            or self.inputs
            or self.archives_added
            or self.archives_removed
        )

    def lines(self) -> list[str]:
        out = [f"  changed {line}" for line in self.inputs]
        out += [
            f"  added   {r}" + (f" ({self.details[r]})" if r in self.details else "")
            for r in self.added
        ]
        out += [f"  removed {r}" for r in self.removed]
        out += [f"  added   archive {a}" for a in self.archives_added]
        out += [f"  removed archive {a}" for a in self.archives_removed]
        return out

    def summary(self) -> str:
        parts = []
        if self.added or self.archives_added:
            parts.append(f"{len(self.added) + len(self.archives_added)} added")
        if self.removed or self.archives_removed:
            parts.append(f"{len(self.removed) + len(self.archives_removed)} removed")
        if self.inputs:
            parts.append(f"{len(self.inputs)} input(s) changed")
        return ", ".join(parts)


def compare(lock: LockFile, scanned: ScanResult, options: CacheOptions) -> LockDiff:
    """What changed between ``lock`` and the context as scanned now with ``options``."""
    locked = lock.by_reference()
    found = {str(i.reference): i for i in scanned.images.images}
    archives_now = {_archive_text(a) for a in archives_of(scanned)}
    archives_locked = {_archive_text(a) for a in lock.archives}
    added = tuple(sorted(set(found) - set(locked)))
    return LockDiff(
        added=added,
        removed=tuple(sorted(set(locked) - set(found))),
        inputs=tuple(lock.inputs.changes(LockInputs.of(scanned, options))),
        archives_added=tuple(sorted(archives_now - archives_locked)),
        archives_removed=tuple(sorted(archives_locked - archives_now)),
        details={r: ", ".join(str(s) for s in found[r].sources) for r in added},
    )


def mismatch_error(diff: LockDiff, path: Path) -> LockError:
    """One summary line, then the changes, one per line."""
    head = (
        f"the context no longer matches {path} ({diff.summary()}); "
        "run `sealpy lock` to update it, or undo the change:"
    )
    return LockError("\n".join([head, *diff.lines()]))


def pin(images: ImageSet, lock: LockFile) -> ImageSet:
    """``images`` with each one pinned to its locked digest (they must match: :func:`compare`)."""
    locked = lock.by_reference()
    return replace(
        images,
        images=tuple(replace(i, pinned=locked[str(i.reference)].digest) for i in images.images),
    )


def apply_lock(
    scanned: ScanResult, options: CacheOptions, *, locked: bool = False, offline: bool = False
) -> ScanResult:
    """The scan with every image pinned by ``CONTEXT/sealpy.lock`` when the lock exists;
    the scan as it is when it does not (unless ``locked`` or ``offline``: then that is an
    error). A scan that no longer matches the lock is an error listing what changed."""
    path = lock_path(scanned.context.root)
    lock = LockFile.read(path)
    if lock is None:
        if locked or offline:
            flag = "--offline" if offline else "--locked"
            raise LockError(f"{flag}: {path} does not exist; create it with `sealpy lock`")
        return scanned
    diff = compare(lock, scanned, options)
    if diff:
        raise mismatch_error(diff, path)
    return replace(scanned, images=pin(scanned.images, lock))


def check_flags(*, offline: bool, strategy: str, blob_cache: object | None) -> None:
    """``--offline`` needs the proxy strategy and the machine-wide blob cache."""
    if not offline:
        return
    if strategy != "proxy":
        raise UsageError(
            f"--offline needs the proxy strategy: {strategy} copies through a local "
            "registry with skopeo, which reads the source registries"
        )
    if blob_cache is None:
        raise UsageError("--offline takes everything from the blob cache: do not turn it off")


# --- JSON field readers (a malformed lock is a one-line error, never a traceback) -----------


def _text(data: object, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise LockError(f"{key} is missing or not a string")
    return value


def _texts(data: dict, key: str) -> tuple[str, ...]:
    values = _list(data, key)
    if not all(isinstance(v, str) for v in values):
        raise LockError(f"{key} must list strings")
    return tuple(values)


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise LockError(f"{key} must be true or false")
    return value


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise LockError(f"{key} must be a list")
    return value


def _objects(data: object, key: str) -> list[dict]:
    values = _list(data, key) if isinstance(data, dict) else []
    if not all(isinstance(v, dict) for v in values):
        raise LockError(f"{key} must list objects")
    return values


def _show(values: Sequence[str]) -> str:
    return ",".join(values) if values else "(none)"


def _archive_text(archive: LockedArchive) -> str:
    return f"{archive.transport}:{archive.path} -> {archive.destination}"


def use_lock(
    scanned: ScanResult,
    strategy: type[CacheStrategy],
    options: CacheOptions,
    *,
    locked: bool = False,
    offline: bool = False,
) -> tuple[ScanResult, type[CacheStrategy]]:
    """The cache stage's images and strategy under the lock: the scan pinned by
    ``sealpy.lock`` (:func:`apply_lock`), and for ``offline`` the proxy strategy reading
    only the blob cache (:mod:`sealpy.core.cache.offline`)."""
    check_flags(offline=offline, strategy=strategy.name, blob_cache=options.blob_cache)
    pinned = apply_lock(scanned, options, locked=locked, offline=offline)
    if pinned is scanned:
        return scanned, strategy  # no lock
    scanned = pinned
    if not offline:
        from sealpy.core.lockresolve import locked_strategy

        strategy = locked_strategy(strategy)
    if offline:
        from sealpy.core.cache.offline import OfflineProxyStrategy

        strategy = OfflineProxyStrategy
    return scanned, strategy
