"""The registry HTTP API v2 client and the remote ends of the copy engine.

:class:`RegistryClient` speaks to any number of registries; it is thread-safe and meant to
be shared by all the images of one run. :class:`RemoteRepository` is one repository seen
through it: an image source for the copy engine (manifests, tags, blobs; mirrors first);
:class:`RemotePushDestination` is a repository as a copy destination (uploads, mounts).

The HTTP layer underneath is :mod:`sealpy.core.transport.http`: the session and TLS
policy, the scheme of each host, authentication (Basic, Bearer tokens), and the retry
policy. Every operation here is one retry loop around "send the request, read the body":
connection errors, timeouts, truncated bodies, 5xx and 429 are retried with jittered
exponential backoff (``Retry-After`` honoured), bounded in attempts and in the time spent
failing since the last progress (no wait ever sleeps past it). A blob download resumes
with ``Range`` from what is already written. Docker Hub's API is reached at
``registry-1.docker.io``; loopback registries are never reached through a proxy.

Authentication happens inside a request: a 401 carries a challenge; Basic sends the
credential, Bearer fetches a token (narrowest scope, cached per registry and scope until
it expires) and the request is sent again, once. Credentials are looked up per request
from the :class:`~sealpy.core.auth.CredentialProvider` — never stored on the session — and
the ``Authorization`` header is not sent to another host after a redirect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, BinaryIO, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3

from sealpy.core.auth import AnonymousCredentials, CredentialProvider
from sealpy.core.errors import (
    AuthenticationError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from sealpy.core.hosts import HostPolicy
from sealpy.core.image.media import ACCEPT, Descriptor, Manifest
from sealpy.core.mirrors import EndpointLog, mirror_policy
from sealpy.core.model import RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import Endpoint, RegistriesConfig
from sealpy.core.transport.copy import BlobOpener
from sealpy.core.transport.fallback import try_endpoints
from sealpy.core.transport.http.auth import Authenticator, TokenCache
from sealpy.core.transport.http.body import (
    MAX_MANIFEST_BYTES,
    arriving,
    expect_success,
    read_limited,
)
from sealpy.core.transport.http.retry import Retrier, TransientError
from sealpy.core.transport.http.scheme import ResolvedHost, SchemeResolver
from sealpy.core.transport.http.session import HttpTransport, RequestBody, short_cause

if TYPE_CHECKING:
    from sealpy.core.transport.blobio import BlobWriter

T = TypeVar("T")


class RegistryClient:
    """A thread-safe client for the registry HTTP API v2, shared by a whole run.

    Get one from :meth:`TransportOptions.client <sealpy.core.hosts.TransportOptions.client>`.
    Public parts besides the operations: :attr:`hosts` (the host policy it follows),
    :attr:`session` (the ``requests.Session``),
    :attr:`retrier` (the retry policy in action; :attr:`mirror_retrier` for a mirror's
    manifests), :attr:`endpoints` (which endpoint served each image, which mirrors failed:
    :class:`~sealpy.core.mirrors.EndpointLog`), :attr:`tokens` (the Bearer tokens
    cached so far), :meth:`resolve` (how a host is reached) and :attr:`requests_sent`."""

    def __init__(
        self,
        *,
        hosts: HostPolicy | None = None,
        credentials: CredentialProvider | None = None,
        tls_verify: bool = True,
        registries: RegistriesConfig | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
        endpoints: EndpointLog | None = None,
    ) -> None:
        # ``hosts`` is the host policy (what TransportOptions.client passes); the three
        # keywords it bundles stay for callers that build a client from parts.
        if hosts is None:
            hosts = HostPolicy(
                registries=registries or RegistriesConfig(),
                tls_verify=tls_verify,
                credentials=credentials or AnonymousCredentials(),
            )
        elif credentials is not None or registries is not None or not tls_verify:
            raise TypeError("give either hosts or credentials/tls_verify/registries")
        self.hosts = hosts
        self.retry = retry or RetryPolicy()
        self.transport = HttpTransport(
            hosts=hosts, retry=self.retry, max_connections=max_connections
        )
        self.session = self.transport.session
        self.retrier = Retrier(self.retry)
        # Manifest requests to a mirror: fewer, quicker tries (core.mirrors).
        self.mirror_retrier = Retrier(mirror_policy(self.retry), for_mirror=True)
        self.endpoints = endpoints or EndpointLog()
        self._schemes = SchemeResolver(self.transport)
        self._auth = Authenticator(self.transport, hosts)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far, token requests and retries included."""
        return self.transport.requests_sent

    @property
    def tokens(self) -> TokenCache:
        """The Bearer tokens this client holds, by (registry host, service, scope)."""
        return self._auth.tokens

    def resolve(self, endpoint: Endpoint) -> ResolvedHost:
        """The URL prefix and TLS verification this client reaches ``endpoint``'s host
        with, decided once per host (probing loopback and insecure hosts)."""
        return self._schemes.resolve(endpoint)

    def repository(self, ref: ImageReference) -> RemoteRepository:
        return RemoteRepository(self, ref)

    def send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        stream: bool = False,
        data: RequestBody = None,
        params: dict[str, str] | None = None,
        url: str | None = None,
        also_pull: str | None = None,
    ) -> requests.Response:
        """Send one request (authenticating on a 401, once); raise for errors.

        ``also_pull`` names another repository the token must cover for pulling (a
        cross-repository mount reads from it). Returns a 2xx response (or 3xx when the
        caller follows redirects itself). Transient failures raise :class:`TransientError`
        for the operation's retry loop.
        """
        base = self.resolve(endpoint)
        target = url or f"{base.url}{path}"
        # Several scopes travel space-separated, as OAuth2 writes them (and as the cache
        # key); a GET to the token server sends them as repeated ``scope`` parameters.
        scope = f"repository:{endpoint.repository}:{actions}"
        if also_pull and also_pull != endpoint.repository:
            scope += f" repository:{also_pull}:pull"
        for attempt in range(2):
            auth = self._auth.authorization(endpoint, scope, refresh=attempt > 0)
            response = self.transport.exchange(
                method,
                target,
                verify=base.verify,
                headers=headers,
                authorization=auth,
                stream=stream,
                data=data,
                params=params,
            )
            if response.status_code != 401:
                return self.transport.check(response, endpoint)
            response.close()
            challenge = self._auth.challenged(endpoint, response)
            # Worth one more try: a (new) token, or Basic credentials we have not sent yet.
            can_retry = challenge.scheme == "bearer" or (
                challenge.scheme == "basic"
                and auth is None
                and self._auth.credential(endpoint) is not None
            )
            if attempt > 0 or not can_retry:
                break
            if hasattr(data, "seek"):
                data.seek(0)  # type: ignore[union-attr]
        who = "the credentials were" if self._auth.credential(endpoint) else "anonymous access was"
        raise AuthenticationError(
            f"{endpoint.host}: authentication failed ({who} refused for {endpoint.repository})"
        )

    def get_elsewhere(
        self, endpoint: Endpoint, url: str, headers: dict[str, str]
    ) -> requests.Response:
        """Follow a redirect to another host (object storage): never with our credentials."""
        verify = self.hosts.verifies_tls(endpoint)
        response = self.transport.exchange("GET", url, verify=verify, headers=headers, stream=True)
        return self.transport.check(response, endpoint)


class RemoteRepository:
    """One repository in a registry, reached through its mirrors first (registries.conf).

    An image source for the copy engine; once a manifest was fetched from an endpoint,
    the blobs of that image come from the same endpoint.
    """

    def __init__(self, client: RegistryClient, ref: ImageReference) -> None:
        self.client = client
        self.ref = ref
        self.endpoints = client.hosts.endpoints(ref)
        self._served_by: Endpoint | None = None

    def __str__(self) -> str:
        return self.ref.name

    @property
    def _endpoint(self) -> Endpoint:
        return self._served_by or self.endpoints[-1]

    def _over_endpoints(self, operation: Callable[[Endpoint, Retrier], T]) -> T:
        """Try each endpoint, mirrors first; the first that succeeds serves the image
        (the rule for mirrors: :mod:`sealpy.core.transport.fallback`)."""
        client = self.client
        endpoint, result = try_endpoints(
            self.endpoints,
            operation,
            chosen=self._served_by,
            log=client.endpoints,
            retrier=client.retrier,
            mirror_retrier=client.mirror_retrier,
        )
        self._served_by = endpoint
        client.endpoints.served(str(self.ref), endpoint)
        return result

    # --- reading -------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> Manifest:
        """The manifest or index for a tag or digest; verified when the digest is known."""
        what = f"manifest {reference}"
        pinned = reference if reference.startswith("sha256:") else None

        def fetch(endpoint: Endpoint, retrier: Retrier) -> Manifest:
            for attempt in retrier.attempts(what):
                with attempt:
                    response = self.client.send(
                        endpoint,
                        "GET",
                        f"/v2/{endpoint.repository}/manifests/{reference}",
                        headers={"Accept": ACCEPT},
                        stream=True,
                    )
                    expect_success(response, endpoint, what)
                    data = read_limited(response, MAX_MANIFEST_BYTES, what, endpoint.host)
                    served = response.headers.get("Docker-Content-Digest")
                    expected = pinned or (
                        served if served and served.startswith("sha256:") else None
                    )
                    try:
                        return Manifest.parse(
                            data,
                            response.headers.get("Content-Type"),
                            expected_digest=expected,
                            what=what,
                        )
                    except DigestMismatchError as exc:
                        # Wrong bytes in transit are retried; a source that keeps lying fails.
                        raise TransientError.of(exc) from None
            raise AssertionError("unreachable")

        return self._over_endpoints(fetch)

    def head_manifest(self, reference: str) -> Descriptor | None:
        """The digest a tag points to now, without fetching the manifest (None if absent)."""
        what = f"manifest {reference}"

        def head(endpoint: Endpoint, retrier: Retrier) -> Descriptor | None:
            for attempt in retrier.attempts(what):
                with attempt:
                    try:
                        response = self.client.send(
                            endpoint,
                            "HEAD",
                            f"/v2/{endpoint.repository}/manifests/{reference}",
                            headers={"Accept": ACCEPT},
                        )
                    except NotFoundError:
                        if endpoint.mirror and self._served_by is None:
                            raise  # not on this mirror: the next endpoint may have it
                        return None
                    expect_success(response, endpoint, what)
                    digest = response.headers.get("Docker-Content-Digest", "")
                    if not digest.startswith("sha256:"):
                        return None
                    return Descriptor(
                        response.headers.get("Content-Type", ""),
                        digest,
                        int(response.headers.get("Content-Length") or 0),
                    )
            raise AssertionError("unreachable")

        return self._over_endpoints(head)

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``writer``, resuming from ``writer.offset`` after a break, and
        verify it: wrong content is fetched again from zero, and fails once retries run out."""
        endpoint = self._endpoint
        what = f"blob {descriptor.digest}"
        path = f"/v2/{endpoint.repository}/blobs/{descriptor.digest}"
        budget = self.client.retrier.budget()
        for attempt in self.client.retrier.attempts(what, budget):
            with attempt:
                if writer.offset and writer.offset == descriptor.size:
                    try:
                        writer.verify()
                        return
                    except DigestMismatchError as exc:
                        writer.reset()
                        raise TransientError.of(exc) from None
                # Identity encoding: Range offsets count the blob's own bytes, which a
                # proxy compressing the answer would change.
                headers = {"Accept-Encoding": "identity"}
                if writer.offset:
                    headers["Range"] = f"bytes={writer.offset}-"
                try:
                    response = self._get_following_redirects(endpoint, path, headers)
                except RegistryError as exc:  # not retried: say which blob it was about
                    raise exc.about(what) from exc.cause
                with response:
                    if response.status_code == 416:
                        writer.reset()
                        raise TransientError("range not satisfiable; starting again")
                    if writer.offset and response.status_code != 206:
                        writer.reset()  # the server ignored Range: take it all from zero
                    try:
                        for chunk in arriving(response):
                            writer.write(chunk)
                            budget.progress()
                            if on_bytes:
                                on_bytes(len(chunk))
                    except DigestMismatchError as exc:
                        writer.reset()
                        raise TransientError.of(exc) from None
                    except (
                        requests.exceptions.RequestException,
                        urllib3.exceptions.HTTPError,
                        OSError,
                    ) as exc:
                        raise TransientError(f"download interrupted: {short_cause(exc)}") from None
                if writer.offset != descriptor.size:
                    raise TransientError(
                        f"body ended after {writer.offset} of {descriptor.size} bytes"
                    )
                try:
                    writer.verify()
                except DigestMismatchError as exc:
                    writer.reset()
                    raise TransientError.of(exc) from None
                return

    def _get_following_redirects(
        self, endpoint: Endpoint, path: str, headers: dict[str, str]
    ) -> requests.Response:
        response = self.client.send(endpoint, "GET", path, headers=headers, stream=True)
        for _hop in range(5):
            if not response.is_redirect:
                return response
            location = urljoin(response.url, response.headers["Location"])
            same_host = urlsplit(location).netloc == urlsplit(response.url).netloc
            response.close()
            if same_host:
                response = self.client.send(
                    endpoint, "GET", "", headers=headers, stream=True, url=location
                )
            else:
                response = self.client.get_elsewhere(endpoint, location, headers)
        raise RegistryError(f"{endpoint.host}: too many redirects")

    def blob_exists(self, digest: str, *, actions: str = "pull") -> bool:
        endpoint = self._endpoint
        for attempt in self.client.retrier.attempts(f"blob {digest}"):
            with attempt:
                try:
                    self.client.send(
                        endpoint,
                        "HEAD",
                        f"/v2/{endpoint.repository}/blobs/{digest}",
                        actions=actions,
                    ).close()
                    return True
                except NotFoundError:
                    return False
        raise AssertionError("unreachable")

    # --- writing (push) ------------------------------------------------------------------

    def _push_endpoint(self) -> Endpoint:
        # Pushes go to the registry itself, never to a mirror.
        return self.endpoints[-1]

    def push_blob(
        self,
        descriptor: Descriptor,
        open_blob: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
    ) -> bool:
        """Upload a blob unless the registry has it; ``True`` if bytes were sent.

        With ``mount_from`` (another repository on the same registry) a cross-repository
        mount is tried first, so the bytes are not sent again."""
        endpoint = self._push_endpoint()
        what = f"push blob {descriptor.digest}"
        if self.blob_exists(descriptor.digest, actions="pull,push"):
            return False
        uploads = f"/v2/{endpoint.repository}/blobs/uploads/"
        for attempt in self.client.retrier.attempts(what):
            with attempt:
                params = {"mount": descriptor.digest, "from": mount_from} if mount_from else None
                response = self.client.send(
                    endpoint,
                    "POST",
                    uploads,
                    actions="pull,push",
                    params=params,
                    also_pull=mount_from,
                )
                response.close()
                if response.status_code == 201:
                    return False
                location = urljoin(response.url, response.headers["Location"])
                separator = "&" if "?" in location else "?"
                with open_blob() as stream:
                    response = self.client.send(
                        endpoint,
                        "PUT",
                        "",
                        actions="pull,push",
                        url=f"{location}{separator}{urlencode({'digest': descriptor.digest})}",
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(descriptor.size),
                        },
                        data=stream,
                    )
                response.close()
                return True
        raise AssertionError("unreachable")

    def put_manifest(self, reference: str, manifest: Manifest) -> None:
        endpoint = self._push_endpoint()
        self.client.retrier.call(
            f"push manifest {reference}",
            lambda: self.client.send(
                endpoint,
                "PUT",
                f"/v2/{endpoint.repository}/manifests/{reference}",
                actions="pull,push",
                headers={"Content-Type": manifest.media_type},
                data=manifest.data,
            ).close(),
        )


class RemotePushDestination:
    """A remote repository as a copy destination: ``sealpy push`` and the test factory.

    Blobs the registry already has are skipped (HEAD). ``mounts`` maps a blob's digest to
    another repository of the same registry known to hold it: that blob is first mounted
    from there, so its bytes are not sent again. Manifests are put by digest, children
    first, and the tag last. The source must be a :class:`BlobOpener` (a local image).

    ``blobs_sent`` counts blobs uploaded; ``mounted`` the blobs that needed no upload
    after all (mounted, or found present when the upload began)."""

    def __init__(
        self, repository: RemoteRepository, *, mounts: Mapping[str, str] | None = None
    ) -> None:
        self.repository = repository
        self.mounts: Mapping[str, str] = mounts or {}
        self.blobs_sent = 0
        self.mounted = 0

    @property
    def blob_scope(self) -> tuple[str, str]:
        """Pushes to one repository share its blobs; two repositories do not, even on one
        registry (a blob must be uploaded or mounted into each)."""
        return ("registry", str(self.repository))

    def has_blob(self, digest: str) -> bool:
        return self.repository.blob_exists(digest, actions="pull,push")

    def receive_blob(
        self, descriptor: Descriptor, source: object, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        if not isinstance(source, BlobOpener):
            raise RegistryError(f"cannot push from {source}: it is not a local image")
        sent = self.repository.push_blob(
            descriptor,
            lambda: source.open_blob(descriptor),
            mount_from=self.mounts.get(descriptor.digest),
        )
        if sent:
            self.blobs_sent += 1
            if on_bytes:
                on_bytes(descriptor.size)
        else:
            self.mounted += 1

    def stored_manifest(self, digest: str) -> Manifest | None:
        return None

    def put_manifest(self, manifest: Manifest) -> None:
        self.repository.put_manifest(manifest.digest, manifest)

    def set_tag(self, tag: str, manifest: Manifest) -> None:
        self.repository.put_manifest(tag, manifest)
