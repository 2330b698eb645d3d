"""Where to fetch a reference from: registries.conf mirrors and insecure registries.

Reads the containers ``registries.conf`` (v2 TOML) that skopeo and podman users already
have — ``CONTAINERS_REGISTRIES_CONF``, else ``~/.config/containers/registries.conf``, else
``/etc/containers/registries.conf``, plus ``*.conf`` drop-ins in the matching
``registries.conf.d`` directories — and ``--registry-mirror PREFIX=URL`` flags, which come
first. An image is fetched from the mirrors in order and then its own location; its name
in the cache is always the original one. The host policy
(:class:`~sealpy.core.hosts.HostPolicy`) decides from these what scheme, TLS verification
and credentials each host gets.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sealpy.core.errors import UsageError
from sealpy.core.reference import DEFAULT_REGISTRY, DOCKER_HUB_ALIASES, ImageReference

CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
SYSTEM_CONF = Path("/etc/containers/registries.conf")


# Docker Hub's registry API lives on its own host: docker.io answers /v2/ with a redirect to
# www.docker.com. containers/image makes the same substitution, for HTTP only.
DOCKER_HUB_API_HOST = "registry-1.docker.io"


def api_host(host: str) -> str:
    """The host to send registry API requests to for registry ``host`` (names, mirrors
    and credential keys keep ``docker.io``)."""
    return DOCKER_HUB_API_HOST if host in DOCKER_HUB_ALIASES else host


@dataclass(frozen=True)
class Endpoint:
    """One place to fetch a repository from: ``host`` (with port) and the repository path
    there. ``scheme`` is forced when the user wrote one (``http://`` in a mirror URL)."""

    host: str
    repository: str
    insecure: bool = False
    mirror: bool = False
    scheme: str | None = None
    # The registries.conf location it came from: host and path prefix (a Harbor proxy
    # project: ``harbor.example.com/dockerhub-proxy``); empty for a registry's own name.
    location: str = ""

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def label(self) -> str:
        """Host and path prefix, as a report names what served an image (never
        credentials: a location cannot carry any)."""
        return self.location or self.host


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    scheme: str | None = None
    pull_from_mirror: str = "all"  # all | digest-only | tag-only


@dataclass(frozen=True)
class RegistryEntry:
    """One ``[[registry]]`` table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()

    def matches(self, name: str) -> bool:
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0]
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix + "/")

    def specificity(self) -> int:
        return len(self.prefix) - (1000 if self.prefix.startswith("*.") else 0)


def _split_location(text: str) -> tuple[str, str | None]:
    """``http://127.0.0.1:5000/`` → (``127.0.0.1:5000``, ``http``); a path after the host
    stays (``harbor.example.com/dockerhub-proxy``: requests go to
    ``/v2/dockerhub-proxy/<repository>/…``, as containers/image sends them)."""
    scheme = None
    for candidate in ("http", "https"):
        if text.startswith(candidate + "://"):
            scheme, text = candidate, text[len(candidate) + 3 :]
    if "@" in text.split("/", 1)[0]:
        # user:password@host would end up in reports and errors; credentials have their
        # own places (auth files, --creds), keyed by the same host/path.
        raise UsageError(
            "a registry or mirror location must not carry credentials "
            "(put them in an auth file or --creds)"
        )
    return text.rstrip("/"), scheme


def _normalize_prefix(prefix: str) -> str:
    host, _, rest = prefix.partition("/")
    if host in DOCKER_HUB_ALIASES:
        host = DEFAULT_REGISTRY
    return f"{host}/{rest}" if rest else host


@dataclass(frozen=True)
class RegistriesConfig:
    """Mirrors and insecure registries. Empty by default: every reference is fetched from
    its own registry, over HTTPS (plain HTTP only for loopback)."""

    entries: tuple[RegistryEntry, ...] = ()
    sources: tuple[Path, ...] = field(default=(), compare=False)

    @classmethod
    def load(
        cls,
        *,
        mirrors: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
        paths: Sequence[Path] | None = None,
    ) -> RegistriesConfig:
        """The user's registries.conf files plus ``--registry-mirror`` flags (flags first)."""
        environ = os.environ if environ is None else environ
        files = list(paths) if paths is not None else default_conf_paths(environ)
        entries: list[RegistryEntry] = []
        for path in files:
            entries.extend(_read_conf(path))
        return cls(_merge_flags(mirrors, entries), tuple(files))

    def entry_for(self, name: str) -> RegistryEntry | None:
        """The most specific entry whose prefix matches ``name`` (registry/repository)."""
        best = None
        for entry in self.entries:
            if entry.matches(name) and (best is None or entry.specificity() > best.specificity()):
                best = entry
        return best

    def endpoints(self, ref: ImageReference) -> list[Endpoint]:
        """Where to fetch ``ref`` from, in order: mirrors, then its own location."""
        entry = self.entry_for(ref.name)
        if entry is None:
            return [Endpoint(ref.registry, ref.repository)]
        if entry.blocked:
            raise UsageError(f"registry {entry.prefix} is blocked in registries.conf")
        out: list[Endpoint] = []
        by_digest = ref.digest is not None
        for mirror in entry.mirrors:
            if mirror.pull_from_mirror == "digest-only" and not by_digest:
                continue
            if mirror.pull_from_mirror == "tag-only" and by_digest:
                continue
            out.append(
                _rewrite(ref, entry.prefix, mirror.location, mirror.insecure, True, mirror.scheme)
            )
        location, scheme = _split_location(entry.location)
        out.append(_rewrite(ref, entry.prefix, location, entry.insecure, False, scheme))
        return out

    def is_insecure(self, host: str) -> bool:
        """Whether registries.conf marks ``host`` (a registry or mirror location) insecure."""
        for entry in self.entries:
            if entry.location.split("/", 1)[0] == host and entry.insecure:
                return True
            for mirror in entry.mirrors:
                if mirror.location.split("/", 1)[0] == host and mirror.insecure:
                    return True
        return False


def _rewrite(
    ref: ImageReference,
    prefix: str,
    location: str,
    insecure: bool,
    mirror: bool,
    scheme: str | None,
) -> Endpoint:
    name = ref.name
    if prefix.startswith("*."):
        rest = name.split("/", 1)[1]
        new = f"{location}/{rest}" if location else name
    else:
        new = location + name[len(prefix) :]
    host, _, repository = new.partition("/")
    if host in DOCKER_HUB_ALIASES:
        host = DEFAULT_REGISTRY
    if host == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    _, _, path = location.partition("/")
    where = f"{host}/{path}" if path else host
    return Endpoint(
        host, repository, insecure=insecure, mirror=mirror, scheme=scheme, location=where
    )


def default_conf_paths(environ: Mapping[str, str]) -> list[Path]:
    """registries.conf and its drop-ins, as containers/image finds them."""
    if environ.get(CONF_ENV):
        return [Path(environ[CONF_ENV])]
    home = Path(environ.get("HOME") or Path.home())
    user = (
        Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "containers" / "registries.conf"
    )
    main = user if user.exists() else SYSTEM_CONF
    paths = [main] if main.exists() else []
    for directory in (SYSTEM_CONF.with_suffix(".conf.d"), user.with_suffix(".conf.d")):
        if directory.is_dir():
            paths.extend(sorted(directory.glob("*.conf")))
    return paths


def _mirror_flag(flag: str) -> tuple[str, Mirror]:
    prefix, sep, url = flag.partition("=")
    if not sep or not prefix.strip() or not url.strip():
        raise UsageError(
            f"invalid --registry-mirror {flag!r}: expected PREFIX=URL, "
            "e.g. docker.io=http://127.0.0.1:5000"
        )
    location, scheme = _split_location(url.strip())
    prefix = _normalize_prefix(prefix.strip())
    return prefix, Mirror(location, insecure=scheme == "http", scheme=scheme)


def _merge_flags(flags: Sequence[str], entries: list[RegistryEntry]) -> tuple[RegistryEntry, ...]:
    """Add ``--registry-mirror`` flags to the conf entries: a prefix's flag mirrors, in the
    order given, come ahead of the mirrors its conf entry lists (whose location, insecure
    and blocked stay); a prefix without an entry gets one of its own, ahead of the rest."""
    by_prefix: dict[str, list[Mirror]] = {}
    for flag in flags:
        prefix, mirror = _mirror_flag(flag)
        by_prefix.setdefault(prefix, []).append(mirror)
    merged = list(entries)
    added: list[RegistryEntry] = []
    for prefix, mirrors in by_prefix.items():
        # The first entry with this prefix is the one entry_for picks among equals.
        i = next((i for i, e in enumerate(merged) if e.prefix == prefix), None)
        if i is None:
            added.append(RegistryEntry(prefix=prefix, location=prefix, mirrors=tuple(mirrors)))
        else:
            merged[i] = replace(merged[i], mirrors=(*mirrors, *merged[i].mirrors))
    return (*added, *merged)


def _read_conf(path: Path) -> list[RegistryEntry]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read registries.conf {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid registries.conf {path}: {exc}") from None
    entries: list[RegistryEntry] = []
    for table in data.get("registry", []) or []:
        if not isinstance(table, dict):
            raise UsageError(f"invalid registries.conf {path}: [[registry]] must be a table")
        location = str(table.get("location", "")).rstrip("/")
        _split_location(location)  # refuses credentials in it now, not per image later
        prefix = _normalize_prefix(str(table.get("prefix") or location))
        if not prefix:
            raise UsageError(
                f"invalid registries.conf {path}: [[registry]] needs prefix or location"
            )
        mirrors = tuple(
            Mirror(
                location=_split_location(str(m.get("location", "")))[0],
                insecure=bool(m.get("insecure", False)),
                scheme=_split_location(str(m.get("location", "")))[1],
                pull_from_mirror=str(
                    m.get("pull-from-mirror")
                    or ("digest-only" if table.get("mirror-by-digest-only") else "all")
                ),
            )
            for m in table.get("mirror", []) or []
        )
        entries.append(
            RegistryEntry(
                prefix=prefix,
                location=location or prefix,
                insecure=bool(table.get("insecure", False)),
                blocked=bool(table.get("blocked", False)),
                mirrors=mirrors,
            )
        )
    # The v1 format's insecure list.
    for host in (data.get("registries", {}).get("insecure", {}) or {}).get("registries", []) or []:
        entries.append(RegistryEntry(prefix=_normalize_prefix(host), location=host, insecure=True))
    return entries
