"""Image references and platforms: parsing, normalising and matching.

References follow the grammar of distribution's ``reference`` package, normalised the way
Docker, skopeo and Sealos do: ``nginx`` is ``docker.io/library/nginx:latest``; a first path
component containing ``.`` or ``:``, equal to ``localhost`` or holding an upper-case letter
is a registry host; repository paths must be lowercase.

Platforms are matched the way containers/image does: operating system and architecture
must be equal, and the variant is compared after normalising the defaults (``arm64`` is
``v8``, ``arm`` is ``v7``), falling back to older compatible variants, then to none.
"""

from __future__ import annotations

import platform as _host
import re
from dataclasses import dataclass

from sealpy.core.errors import InvalidPlatformError, InvalidReferenceError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Hosts that are all one registry for credentials and API requests.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Hosts that names are normalised from, as distribution's splitDockerDomain does: only the
# legacy index name. "registry-1.docker.io/x" stays a repository "x" on that host, as
# containerd and Sealos read it, so it is cached where the cluster asks for it.
_NAME_ALIASES = frozenset({"docker.io", "index.docker.io"})

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
# ASCII only: Python's \w would also accept letters such as "é".
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Anchored with \Z, not $: "$" also matches before a trailing newline ("v1\n").
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}\Z")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
# name = [host[:port]/]path; only a component followed by "/" may carry a port.
_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:(?:\[[0-9a-fA-F:]+\]|[^/:@]+)(?::[0-9]+)?/)?[^:@]+)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?\Z"
)
_TAG_RE = re.compile(rf"^{_TAG}\Z")
SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_NAME_MAX = 255


def _split_domain(name: str) -> tuple[str, str]:
    """Split ``name`` into (registry, repository) as distribution's splitDockerDomain does."""
    first, slash, rest = name.partition("/")
    is_host = slash and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not is_host:
        domain, remainder = DEFAULT_REGISTRY, name
    else:
        domain, remainder = first, rest
    if domain in _NAME_ALIASES:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a sha256 digest (the only algorithm registries use)."""
    if not SHA256_RE.match(digest):
        raise InvalidReferenceError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


@dataclass(frozen=True, order=True)
class ImageReference:
    """A normalised image reference: registry, repository, and a tag and/or a digest.

    ``str()`` gives the fully qualified form, ``docker.io/library/nginx:1.25``; a reference
    with both keeps both, ``name:tag@digest``, and the digest pins the content.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> ImageReference:
        """Parse and normalise ``text``; ``latest`` is added when there is neither tag nor digest."""
        original = text
        text = text.strip()
        if not text:
            raise InvalidReferenceError("invalid image reference '': empty")
        match = _REFERENCE_RE.match(text)
        if not match:
            raise InvalidReferenceError(f"invalid image reference {original!r}")
        name, tag, digest = match.group("name"), match.group("tag"), match.group("digest")
        registry, repository = _split_domain(name)
        # Measured on the normalised name, as distribution does (it parses
        # "docker.io/library/..."): else a name could be accepted once and its own
        # normalised form refused when read back.
        if len(registry) + 1 + len(repository) > _NAME_MAX:
            raise InvalidReferenceError(
                f"invalid image reference {original!r}: name longer than {_NAME_MAX} characters"
            )
        if not _DOMAIN_RE.match(registry):
            raise InvalidReferenceError(f"invalid image reference {original!r}: bad registry host")
        if repository.lower() != repository and _PATH_RE.match(repository.lower()):
            raise InvalidReferenceError(
                f"invalid image reference {original!r}: repository name must be lowercase"
            )
        if not _PATH_RE.match(repository):
            raise InvalidReferenceError(f"invalid image reference {original!r}")
        if digest is not None:
            if not digest.startswith("sha256:"):
                raise InvalidReferenceError(
                    f"invalid image reference {original!r}: only sha256 digests are supported"
                )
            try:
                validate_digest(digest)
            except InvalidReferenceError:
                raise InvalidReferenceError(
                    f"invalid image reference {original!r}: bad digest"
                ) from None
        if tag is None and digest is None and default_tag:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str | None) -> ImageReference:
        if tag is not None and not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r}")
        return ImageReference(self.registry, self.repository, tag, self.digest)

    def with_digest(self, digest: str | None) -> ImageReference:
        if digest is not None:
            validate_digest(digest)
        return ImageReference(self.registry, self.repository, self.tag, digest)

    @property
    def cache_repository(self) -> str:
        """The repository inside ``<context>/registry``: the source registry is dropped,
        as Sealos does, so a cluster's registry mirror finds ``library/nginx`` for any host."""
        return self.repository


# --- platforms ---------------------------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
# Older variants each variant can run, most compatible first (containers/image's table).
_VARIANT_FALLBACKS = {
    "arm": ("v8", "v7", "v6", "v5"),
    "arm64": ("v8",),
}
_DEFAULT_VARIANT = {"arm": "v7", "arm64": "v8"}
# uname machines that name a variant too (``armv6l`` is not the default arm/v7).
_MACHINES = {
    "armv5l": ("arm", "v5"),
    "armv5tel": ("arm", "v5"),
    "armv6l": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "armv8l": ("arm", "v8"),  # a 32-bit userland on a 64-bit CPU
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
}
_PLATFORM_PART = re.compile(r"^[a-z0-9_.-]+$")


@dataclass(frozen=True, order=True)
class Platform:
    """An ``os/architecture[/variant]`` triple, normalised (``aarch64`` → ``arm64``, ``arm64/v8``)."""

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "os", self.os.lower())
        if not self.variant and arch in _DEFAULT_VARIANT:
            object.__setattr__(self, "variant", _DEFAULT_VARIANT[arch])
        if arch == "amd64" and self.variant == "v1":
            object.__setattr__(self, "variant", "")

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART.match(p) for p in parts):
            raise InvalidPlatformError(
                f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64"
            )
        return cls(*parts)

    @classmethod
    def from_oci(cls, data: dict) -> Platform:
        """From an OCI/Docker ``platform`` object or an image config."""
        return cls(
            str(data.get("os", "")), str(data.get("architecture", "")), str(data.get("variant", ""))
        )

    @classmethod
    def host(cls) -> Platform:
        machine = _host.machine().lower()
        return cls("linux", *_MACHINES.get(machine, (machine, "")))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def candidates(self) -> tuple[tuple[str, str, str], ...]:
        """(os, arch, variant) an image may declare to run here, most compatible first.

        An empty variant means "an image that declares no variant".
        """
        fallbacks = _VARIANT_FALLBACKS.get(self.architecture, ())
        if self.variant in fallbacks:
            variants = fallbacks[fallbacks.index(self.variant) :]
        else:
            variants = (self.variant,) if self.variant else ()
        return (
            *((self.os, self.architecture, v) for v in variants),
            (self.os, self.architecture, ""),
        )


def _as_declared(data: dict) -> tuple[str, str, str]:
    """A manifest's platform as written (no default variant filled in), aliases resolved."""
    arch = str(data.get("architecture", ""))
    arch = _ARCH_ALIASES.get(arch, arch)
    variant = str(data.get("variant", ""))
    if arch == "amd64" and variant == "v1":
        variant = ""
    return (str(data.get("os", "")).lower(), arch, variant)


def select_platform(wanted: Platform, available: list[dict]) -> int | None:
    """Index of the entry of ``available`` (OCI ``platform`` objects) best matching ``wanted``.

    Operating system and architecture must match exactly; variants are tried from the
    wanted one down to older compatible ones, then an entry without a variant. ``None``
    when nothing matches: never a partial match (an OS-only match would pick the wrong CPU).
    """
    declared = [_as_declared(p) for p in available]
    for candidate in wanted.candidates():
        for i, entry in enumerate(declared):
            if entry == candidate:
                return i
    return None


def parse_platforms(values: list[str] | tuple[str, ...]) -> tuple[Platform, ...]:
    """Parse repeatable, comma-separated ``--platform`` values, keeping order, no duplicates."""
    out: list[Platform] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise InvalidPlatformError(f"invalid platform {value!r}: empty entry")
            p = Platform.parse(item)
            if p not in out:
                out.append(p)
    return tuple(out)
