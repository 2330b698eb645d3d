"""The values that flow through the pipeline: context → image set → cache report.

These types are a public interface: discovery plugins return :class:`DiscoveryResult`,
strategies receive an :class:`ImageSet` and :class:`CacheOptions` and return a
:class:`CacheReport`. All are frozen dataclasses: pass them along, never mutate them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sealpy.core.reference import ImageReference, Platform

if TYPE_CHECKING:
    from sealpy.core.auth import CredentialProvider
    from sealpy.core.hosts import HostPolicy, TransportOptions
    from sealpy.core.progress import ProgressReporter
    from sealpy.core.registries import RegistriesConfig
    from sealpy.core.supplychain.policy import Policy
    from sealpy.core.transport.blobcache import BlobCache

BUILD_FILE_NAMES = ("Sealfile", "Kubefile", "Dockerfile", "Containerfile")
COMMAND_LINE = "<command line>"


@dataclass(frozen=True, order=True)
class Location:
    """Where something was found: a path relative to the context (posix), a line, a detail
    such as the chart template that produced it."""

    file: str
    line: int | None = None
    detail: str | None = None

    def __str__(self) -> str:
        text = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict:
        data: dict = {"file": self.file, "line": self.line}
        if self.detail:
            data["detail"] = self.detail
        return data


# Sealos renders charts with Helm 3.15's library defaults: Kubernetes v1.20.0.
DEFAULT_KUBE_VERSION = "v1.20.0"
# Release name Sealos renders with (``ReleaseOptions{Name: "dryrun"}``).
RELEASE_NAME = "dryrun"
DEFAULT_CHART_MEMORY = 2 << 30
DEFAULT_CHART_TIMEOUT = 60.0


@dataclass(frozen=True)
class RenderOptions:
    """How charts are rendered: the render context templates see, and the sandbox's bounds.

    Sealos renders with ``.Release.IsInstall`` and ``.Release.IsUpgrade`` both false, which
    the Helm SDK cannot do (it turns that into an install). So a chart is rendered as an
    upgrade (``IsInstall`` false, as in Sealos: a guard refusing ``helm install`` into the
    ``default`` namespace passes) and, if that fails, again as an install (``IsUpgrade``
    false, as in Sealos: bitnami's "you must provide your current passwords when
    upgrading" passes). Otherwise as Sealos: release ``dryrun``; namespace ``default``
    (the SDK's stand-in for Sealos's empty one); ``.Capabilities.KubeVersion``
    ``kube_version``; Helm's default API versions plus ``api_versions``. ``memory_limit``
    (bytes) and ``timeout`` (seconds, per chart) bound the process that renders."""

    kube_version: str = DEFAULT_KUBE_VERSION
    api_versions: tuple[str, ...] = ()
    memory_limit: int = DEFAULT_CHART_MEMORY
    timeout: float = DEFAULT_CHART_TIMEOUT

    release_name = RELEASE_NAME
    namespace = "default"

    def helm_options(self, *, as_install: bool = False) -> dict:
        """The options of the SDK's native render call (``helm_render``): an upgrade, or
        with ``as_install`` an install (the SDK's default when ``is_upgrade`` is false)."""
        options: dict = {
            "name": self.release_name,
            "namespace": self.namespace,
            "is_upgrade": not as_install,
            "kube_version": self.kube_version,
        }
        if self.api_versions:
            options["api_versions"] = list(self.api_versions)
        return options

    def to_json(self) -> dict:
        return {
            "release_name": self.release_name,
            "namespace": self.namespace,
            "is_install": False,
            "is_upgrade": True,
            "retry_as_install": True,
            "kube_version": self.kube_version,
            "api_versions": list(self.api_versions),
            "memory_limit": self.memory_limit,
            "timeout": self.timeout,
        }

    def describe(self) -> str:
        """One line for ``--debug``."""
        extra = f" + {', '.join(self.api_versions)}" if self.api_versions else ""
        return (
            f"release {self.release_name!r}, namespace {self.namespace!r}, as an upgrade "
            "(IsInstall false, IsUpgrade true), as an install if that fails, "
            f"KubeVersion {self.kube_version}, API versions: Helm's defaults{extra}; "
            f"render process limits: {self.memory_limit / (1 << 30):g} GiB of memory, "
            f"{self.timeout:g} s per chart"
        )


@dataclass(frozen=True)
class BuildContext:
    """A build context directory, the build files that belong to it, and how its charts
    are rendered."""

    root: Path
    build_files: tuple[Path, ...]
    render: RenderOptions = field(default_factory=RenderOptions)

    def relative(self, path: Path) -> str:
        """``path`` relative to the context root, posix-style, for messages and JSON."""
        try:
            return Path(os.path.relpath(path, self.root)).as_posix()
        except ValueError:
            return str(path)


@dataclass(frozen=True)
class Finding:
    """One image reference found at one place."""

    reference: ImageReference
    location: Location


ArchiveTransport = Literal["docker-archive", "oci-archive"]


@dataclass(frozen=True)
class ArchiveEntry:
    """An image archive listed in ``images/skopeo/tar.txt``, to be cached as ``destination``."""

    transport: ArchiveTransport
    path: Path
    destination: ImageReference
    location: Location

    def to_json(self, context: BuildContext) -> dict:
        return {
            "transport": self.transport,
            "path": context.relative(self.path),
            "destination": str(self.destination),
            "source": self.location.to_json(),
        }


@dataclass(frozen=True, order=True)
class ScanWarning:
    """Something the scan could not use; it does not fail the scan unless ``--strict``."""

    file: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.message}" if where else self.message

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class DiscoveryResult:
    """What one discovery source found. The results of every source are merged."""

    findings: tuple[Finding, ...] = ()
    archives: tuple[ArchiveEntry, ...] = ()
    warnings: tuple[ScanWarning, ...] = ()


@dataclass(frozen=True)
class RequiredImage:
    """An image the context needs, with every place it was found."""

    reference: ImageReference
    sources: tuple[Location, ...]
    pinned: str | None = None
    """The manifest digest ``sealpy.lock`` pins the image to (the index digest for a
    multi-platform image): fetched by that digest, stored under its tag."""

    def to_json(self) -> dict:
        return {"reference": str(self.reference), "sources": [s.to_json() for s in self.sources]}


@dataclass(frozen=True)
class IgnoredImage:
    """An image left out by a ``.sealignore`` rule."""

    reference: ImageReference
    rule: str


@dataclass(frozen=True)
class ImageSet:
    """Every image to cache: registry references and archive entries, normalised, sorted."""

    images: tuple[RequiredImage, ...] = ()
    archives: tuple[ArchiveEntry, ...] = ()
    ignored: tuple[IgnoredImage, ...] = ()
    warnings: tuple[ScanWarning, ...] = ()

    @classmethod
    def of(cls, references: Iterable[str | ImageReference]) -> ImageSet:
        """An image set from plain references (for scripts and tests)."""
        refs = {r if isinstance(r, ImageReference) else ImageReference.parse(r) for r in references}
        where = (Location(COMMAND_LINE),)
        return cls(images=tuple(RequiredImage(r, where) for r in sorted(refs, key=str)))

    @property
    def references(self) -> tuple[ImageReference, ...]:
        return tuple(i.reference for i in self.images)

    def __len__(self) -> int:
        return len(self.images) + len(self.archives)

    def to_json(self, context: BuildContext) -> dict:
        return {
            "images": [i.to_json() for i in self.images],
            "archives": [a.to_json(context) for a in self.archives],
            "ignored": [{"reference": str(i.reference), "rule": i.rule} for i in self.ignored],
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(frozen=True)
class ScanResult:
    """The first stage's output: the context (with its build files) and its images."""

    context: BuildContext
    images: ImageSet

    def to_json(self) -> dict:
        """The ``scan --json`` document (README: "sealpy scan --json")."""
        return {**self.images.to_json(self.context), "render": self.context.render.to_json()}


# --- caching -----------------------------------------------------------------------------


DEFAULT_MAX_PARALLEL = 8


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try each request: attempts, and ``max_seconds``, a bound on the time
    spent failing since the operation last made progress (bytes received), so a long
    download that breaks once is still resumed."""

    attempts: int = 6
    max_seconds: float = 120.0
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def _host_platforms() -> tuple[Platform, ...]:
    return (Platform.host(),)


def _default_credentials() -> CredentialProvider:
    from sealpy.core.auth import AnonymousCredentials

    return AnonymousCredentials()


def _default_registries() -> RegistriesConfig:
    from sealpy.core.registries import RegistriesConfig

    return RegistriesConfig()


def _default_progress() -> ProgressReporter:
    from sealpy.core.progress import SilentProgress

    return SilentProgress()


@dataclass(frozen=True)
class CacheOptions:
    """Everything a strategy needs besides the images and the destination directory.

    ``tls_verify=False`` allows plain HTTP and unverified TLS for every registry; loopback
    registries may use plain HTTP regardless, and ``registries`` can mark others insecure.
    A strategy reaches registries through :attr:`transport` (``options.transport.client()``
    for a registry client), which bundles ``credentials``, ``tls_verify``, ``registries``,
    ``retry``, ``max_parallel`` and ``progress``; :meth:`of` builds options from one.
    """

    platforms: tuple[Platform, ...] = field(default_factory=_host_platforms)
    all_platforms: bool = False
    max_parallel: int = DEFAULT_MAX_PARALLEL
    credentials: CredentialProvider = field(default_factory=_default_credentials)
    tls_verify: bool = True
    registries: RegistriesConfig = field(default_factory=_default_registries)
    progress: ProgressReporter = field(default_factory=_default_progress)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    blob_cache: BlobCache | None = None
    """The machine-wide blob cache (``--cache-dir``; None: off). The engine takes blobs
    and manifests from it and fetches through it (:func:`cache_with_engine` does so)."""
    signature_policy: Policy | None = None
    """The containers-policy.json in force (``--signature-policy``; None: every image
    accepted). Applied by :func:`sealpy.core.pipeline.cache` before the strategy runs."""
    copy_signatures: bool = True
    """Copy what is attached to every manifest cached (cosign's ``.sig``/``.att``/``.sbom``
    tags, OCI referrers) with it (``--copy-signatures``)."""

    @classmethod
    def of(
        cls,
        transport: TransportOptions,
        *,
        platforms: tuple[Platform, ...] | None = None,
        all_platforms: bool = False,
        copy_signatures: bool = True,
    ) -> CacheOptions:
        """Options reaching registries as ``transport`` says (``platforms`` default:
        this host's)."""
        hosts = transport.hosts
        return cls(
            platforms=platforms or _host_platforms(),
            all_platforms=all_platforms,
            max_parallel=transport.max_parallel,
            credentials=hosts.credentials,
            tls_verify=hosts.tls_verify,
            registries=hosts.registries,
            progress=transport.progress,
            retry=transport.retry,
            blob_cache=transport.blob_cache,
            copy_signatures=copy_signatures,
        )

    @cached_property
    def hosts(self) -> HostPolicy:
        """The host policy of these options: endpoints, scheme, TLS, credentials per host."""
        from sealpy.core.hosts import HostPolicy

        return HostPolicy(self.registries, self.tls_verify, self.credentials)

    @cached_property
    def transport(self) -> TransportOptions:
        """The transport options of these options: the host policy, retry policy,
        parallelism and progress, as registry clients and skopeo runs take them."""
        from sealpy.core.hosts import TransportOptions

        return TransportOptions(
            self.hosts, self.retry, self.max_parallel, self.progress, self.blob_cache
        )


@dataclass(frozen=True)
class CachedImage:
    """What a strategy stored for one source image. ``served_by``: the endpoint it was
    read from — host and path prefix (``harbor.example.com/dockerhub-proxy``), a mirror's
    or the registry's own — or ``None`` where that is not known (an archive, an image
    already cached, a ``sync`` copy skopeo chose a mirror for)."""

    source: str
    repository: str
    tag: str | None
    digest: str
    platforms: tuple[str, ...] = ()
    blobs_fetched: int = 0
    blobs_reused: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0
    served_by: str | None = None
    attachments: int = 0
    """Manifests attached to the image's manifests and copied with it: cosign's
    signatures, attestations and SBOMs, OCI referrers."""

    @property
    def stored_as(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class CacheReport:
    """A strategy's result. ``requests`` is the number of HTTP requests made, when known."""

    strategy: str
    images: tuple[CachedImage, ...] = ()
    seconds: float = 0.0
    requests: int | None = None

    @property
    def blobs_fetched(self) -> int:
        return sum(i.blobs_fetched for i in self.images)

    @property
    def blobs_reused(self) -> int:
        return sum(i.blobs_reused for i in self.images)

    @property
    def bytes_fetched(self) -> int:
        return sum(i.bytes_fetched for i in self.images)

    @property
    def attachments(self) -> int:
        return sum(i.attachments for i in self.images)

    def summary(self) -> str:
        mib = self.bytes_fetched / (1 << 20)
        # Attached: signatures, attestations, SBOMs and referrers copied with the images.
        attached = f"{self.attachments} attached, " if self.attachments else ""
        text = (
            f"{len(self.images)} images cached by {self.strategy}: "
            f"{self.blobs_fetched} blobs fetched ({mib:.1f} MiB), {self.blobs_reused} reused, "
            f"{attached}{self.seconds:.2f} s"
        )
        if self.requests is not None:
            text += f", {self.requests} requests"
        return text
