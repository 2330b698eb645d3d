"""Per-host policy and the transport options every registry user of a run receives.

:class:`HostPolicy` is the one place that decides, for a registry host or an image
reference, what regclient keeps in its per-host configuration: the endpoints to try
(registries.conf and ``--registry-mirror`` mirrors first, then the registry itself), the
scheme (plain HTTP only for loopback hosts — ``localhost``, 127.0.0.0/8, ``::1`` — and
hosts marked insecure), whether TLS certificates are verified (``--tls-verify=false`` or
an insecure mark turns that off) and the credentials for the host. The registry client,
the ``sync`` strategy's skopeo configuration and the buildah builder all ask it instead of
deciding for themselves.

:class:`TransportOptions` is that policy with the retry policy, the parallelism and the
progress reporter: the value strategies, builders and store commands receive, and the one
way to get a :class:`~sealpy.core.transport.remote.RegistryClient`
(:meth:`TransportOptions.client`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sealpy.core.auth import AnonymousCredentials, Credential, CredentialProvider
from sealpy.core.model import DEFAULT_MAX_PARALLEL, RetryPolicy
from sealpy.core.progress import ProgressReporter, SilentProgress
from sealpy.core.reference import ImageReference

if TYPE_CHECKING:
    from sealpy.core.mirrors import EndpointLog
    from sealpy.core.registries import Endpoint, RegistriesConfig
    from sealpy.core.transport.blobcache import BlobCache
    from sealpy.core.transport.http.retry import Retrier
    from sealpy.core.transport.remote import RegistryClient

Scheme = Literal["http", "https"]


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ``::1``, with or without a port (``[::1]:5000``)."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_of(location: str) -> str:
    """The host (with port) of a registries.conf location (``host:5000/path``)."""
    return location.split("/", 1)[0]


def _no_registries() -> RegistriesConfig:
    from sealpy.core.registries import RegistriesConfig

    return RegistriesConfig()


@dataclass(frozen=True)
class HostPolicy:
    """How every registry host of a run is reached; frozen, shared by all threads.

    ``registries`` holds the mirrors and insecure marks (registries.conf plus
    ``--registry-mirror``), ``tls_verify=False`` is ``--tls-verify=false`` (no
    certificate verified, plain HTTP allowed everywhere), ``credentials`` answers which
    credential goes to which host and repository."""

    registries: RegistriesConfig = field(default_factory=_no_registries)
    tls_verify: bool = True
    credentials: CredentialProvider = field(default_factory=AnonymousCredentials)

    def endpoints(self, ref: ImageReference) -> list[Endpoint]:
        """Where to fetch ``ref`` from, in order: its mirrors, then its own registry."""
        return self.registries.endpoints(ref)

    def marked_insecure(self, host: str) -> bool:
        """Whether the user marked ``host`` insecure (registries.conf, an ``http://``
        mirror): plain HTTP and unverified TLS allowed for it."""
        return self.registries.is_insecure(host)

    def verifies_tls(self, endpoint: Endpoint) -> bool:
        """Whether TLS certificates are verified for ``endpoint``: not with
        ``--tls-verify=false``, nor for an endpoint or host marked insecure."""
        return self.tls_verify and not endpoint.insecure and not self.marked_insecure(endpoint.host)

    def plain_http_allowed(self, host: str, *, marked: bool | None = None) -> bool:
        """Whether ``host`` may be reached over plain HTTP (or TLS unverified): a loopback
        host, ``--tls-verify=false``, or an insecure mark. ``marked`` replaces the lookup
        of the mark when the caller holds one registries.conf entry's own flag
        (containers/image keeps ``insecure`` per entry, not per host)."""
        if marked is None:
            marked = self.marked_insecure(host)
        return is_loopback(host) or not self.tls_verify or marked

    def scheme(self, endpoint: Endpoint) -> Scheme | None:
        """The scheme for ``endpoint`` when the policy alone decides it: the one the user
        wrote (an ``http://`` mirror), HTTPS where plain HTTP is not allowed; ``None``
        where either is allowed and the host's answer decides (a probe of ``/v2/``)."""
        if endpoint.scheme == "http":
            return "http"
        if endpoint.scheme == "https" or (
            self.verifies_tls(endpoint) and not is_loopback(endpoint.host)
        ):
            return "https"
        return None

    def credentials_for(self, host: str, repository: str = "") -> Credential | None:
        """The credential for ``host`` (and repository there), or ``None``: the
        :class:`~sealpy.core.auth.CredentialProvider` asked (Docker Hub's names are one
        registry to it). A policy is a credential provider itself."""
        return self.credentials.credentials_for(host, repository)


def _new_endpoint_log() -> EndpointLog:
    from sealpy.core.mirrors import EndpointLog

    return EndpointLog()


@dataclass(frozen=True)
class TransportOptions:
    """What every registry user of a run shares: the host policy, the retry policy, how
    many images and blobs move at once, where progress goes, and the machine-wide blob
    cache.

    ``endpoints`` is what the run learns as it goes (which endpoint served each image,
    which mirrors failed and are skipped): shared by every client made from these options
    (:mod:`sealpy.core.mirrors`)."""

    hosts: HostPolicy = field(default_factory=HostPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_parallel: int = DEFAULT_MAX_PARALLEL
    progress: ProgressReporter = field(default_factory=SilentProgress)
    blob_cache: BlobCache | None = None
    """The machine-wide blob cache that blobs and manifests come through (None: off)."""
    endpoints: EndpointLog = field(default_factory=_new_endpoint_log, compare=False, repr=False)

    def client(self, *, max_connections: int = 16) -> RegistryClient:
        """A new registry client following these options (close it, or use it as a
        context manager); ``max_connections`` bounds its connection pool."""
        from sealpy.core.transport.remote import RegistryClient

        return RegistryClient(
            hosts=self.hosts,
            retry=self.retry,
            max_connections=max_connections,
            endpoints=self.endpoints,
        )

    def retrier(self) -> Retrier:
        """The retry policy in action (the client's, and ``sync``'s for whole skopeo runs)."""
        from sealpy.core.transport.http.retry import Retrier

        return Retrier(self.retry)
