"""Finding what is attached to manifests in a source repository: signatures, attestations,
SBOMs and OCI 1.1 referrers.

Two conventions put them in the image's own repository:

* cosign's tags: ``sha256-<hex>.sig``, ``.att`` and ``.sbom`` name the signature, the
  attestations and the SBOM of the manifest ``sha256:<hex>``;
* OCI 1.1 referrers: manifests whose ``subject`` is the manifest, listed by the referrers
  API (``GET /v2/<repo>/referrers/<digest>``, an index) where the registry answers it,
  else by the referrers tag ``sha256-<hex>`` (an index of them, kept up to date by the
  clients that push them).

:func:`find_attachments` asks one repository about a set of manifest digests: ONE tag
listing for the repository (``GET /v2/<repo>/tags/list``, following ``Link`` pages; a
registry without a tags API is asked a HEAD per candidate tag instead), and the referrers
API per digest — until a registry answers it with 404 (distribution v2.8 does: it has no
referrers API), which :class:`ReferrersSupport` remembers for the rest of the run, so a
registry without the API costs one request. Only one level: what is attached to an
attachment is not looked for.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urljoin

from sealpy.core.errors import ContentError, NotFoundError, RegistryError
from sealpy.core.image.compose import canonical_json
from sealpy.core.image.media import OCI_INDEX, Descriptor, Manifest, load_json
from sealpy.core.transport.http.body import expect_success, read_limited
from sealpy.core.transport.http.retry import TransientError

if TYPE_CHECKING:
    import requests

    from sealpy.core.registries import Endpoint
    from sealpy.core.transport.http.retry import Retrier
    from sealpy.core.transport.remote import RemoteRepository

T = TypeVar("T")

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
"""cosign's tag suffixes, after the referrers tag of the manifest they are attached to."""
MAX_LISTING_BYTES = 16 << 20  # one page of a tag listing or of referrers
_NOT_A_TAG_CHAR = re.compile(r"[^a-zA-Z0-9_.-]")


def referrers_tag(digest: str) -> str:
    """The referrers tag of ``digest`` (OCI distribution 1.1, "Referrers Tag Schema"): the
    algorithm cut to 32 characters, ``-``, the encoded part cut to 64, any character a tag
    cannot hold made ``-``. cosign's tags are this plus ``.sig``, ``.att``, ``.sbom``."""
    algorithm, _, encoded = digest.partition(":")
    return _NOT_A_TAG_CHAR.sub("-", f"{algorithm[:32]}-{encoded[:64]}")


@dataclass(frozen=True)
class Attachment:
    """One thing to copy for the manifest ``subject``: a cosign tag (``kind`` ``sig``,
    ``att`` or ``sbom``), the referrers tag (``referrers``: an index of referrers, the
    source's own, or ``listing``, the one sealpy writes for referrers the API listed), or
    one referrer by digest (``referrer``: listed by the API but missing from the source's
    referrers tag). ``reference`` is what the source is asked for, ``tag`` what the
    destination tags (``None``: stored by digest only); ``count`` the attached manifests
    it carries (a referrers index: its entries)."""

    subject: str
    kind: str
    reference: str
    tag: str | None
    count: int = 1
    listing: Manifest | None = None


class ReferrersSupport:
    """Which registries answer the referrers API, learnt once per run: the first request
    to a registry goes alone while others for it wait for the verdict, so one without the
    API (a 404, as distribution v2.8 answers) is asked once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, bool] = {}
        self._probing: dict[str, threading.Lock] = {}

    def answers(self, host: str) -> bool | None:
        """``True``/``False`` once known for ``host``; ``None`` before."""
        return self._answers.get(host)

    def ask(self, host: str, request: Callable[[], T | None]) -> T | None:
        """``request()`` (which returns ``None`` when the registry has no referrers API),
        unless ``host`` is known to lack it; the first answer decides for the run."""
        if self._answers.get(host) is False:
            return None
        if self._answers.get(host):
            return request()
        with self._lock:
            probe = self._probing.setdefault(host, threading.Lock())
        with probe:
            if self._answers.get(host) is False:
                return None
            result = request()
            self._answers[host] = result is not None
            return result


def find_attachments(
    repository: RemoteRepository,
    digests: Iterable[str],
    support: ReferrersSupport,
    *,
    tags: set[str] | Literal["list"] | None = "list",
) -> list[Attachment]:
    """What is attached to each of ``digests`` in ``repository`` (see the module).
    ``tags``: the repository's tags, when listed already (``None``: it lists none)."""
    if tags == "list":
        tags = list_tags(repository)
    found: list[Attachment] = []
    for digest in dict.fromkeys(digests):
        stem = referrers_tag(digest)
        for suffix in COSIGN_SUFFIXES:
            if _has_tag(repository, tags, stem + suffix):
                found.append(Attachment(digest, suffix[1:], stem + suffix, stem + suffix))
        listed = list_referrers(repository, digest, support) or []
        index = _referrers_index(repository, stem) if _has_tag(repository, tags, stem) else None
        if index is not None:
            found.append(Attachment(digest, "referrers", stem, stem, len(index.children)))
            in_tag = {child.digest for child in index.children}
            found.extend(
                Attachment(digest, "referrer", entry["digest"], None)
                for entry in listed
                if entry["digest"] not in in_tag
            )
        elif listed:
            listing = referrers_listing(listed)
            found.append(Attachment(digest, "listing", listing.digest, stem, len(listed), listing))
    return found


def referrers_listing(entries: Sequence[dict[str, Any]]) -> Manifest:
    """The referrers tag's index for referrers the API listed (as a client pushing to a
    registry without the API writes it): their descriptors as listed, ordered by digest so
    that the same referrers always give the same bytes."""
    manifests = sorted(entries, key=lambda e: str(e["digest"]))
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return Manifest.parse(canonical_json(document), OCI_INDEX, what="referrers listing")


def _has_tag(repository: RemoteRepository, tags: set[str] | None, tag: str) -> bool:
    if tags is not None:
        return tag in tags
    return repository.head_manifest(tag) is not None


def _referrers_index(repository: RemoteRepository, tag: str) -> Manifest | None:
    """The source's referrers tag, if it holds an index (anything else is no listing: the
    spec says to assume no referrers then)."""
    try:
        manifest = repository.get_manifest(tag)
    except (NotFoundError, ContentError):
        return None
    return manifest if manifest.is_index else None


def list_tags(repository: RemoteRepository) -> set[str] | None:
    """Every tag of ``repository`` (all ``Link`` pages), or ``None`` when the registry
    does not list them (404, a refusal, or an answer that is no tag list)."""

    def pages(endpoint: Endpoint, retrier: Retrier) -> set[str] | None:
        tags: set[str] = set()
        url: str | None = None
        path = f"/v2/{endpoint.repository}/tags/list"
        while True:
            try:
                document, url = _get_page(repository, endpoint, retrier, path, url, "tag list")
            except RegistryError:  # 404 (no tags API, or no tags), 401/403, 405...
                return None
            listed = document.get("tags") if isinstance(document, dict) else None
            if not isinstance(listed, list | None):
                return None
            tags.update(str(t) for t in listed or ())
            if url is None:
                return tags

    return repository._over_endpoints(pages)


def list_referrers(
    repository: RemoteRepository, digest: str, support: ReferrersSupport
) -> list[dict[str, Any]] | None:
    """The referrers API's descriptors for ``digest`` (all pages); ``None`` where the
    registry has no referrers API."""

    def pages(endpoint: Endpoint, retrier: Retrier) -> list[dict[str, Any]] | None:
        def request() -> list[dict[str, Any]] | None:
            entries: list[dict[str, Any]] = []
            url: str | None = None
            path = f"/v2/{endpoint.repository}/referrers/{digest}"
            while True:
                try:
                    document, url = _get_page(
                        repository, endpoint, retrier, path, url, f"referrers of {digest}"
                    )
                except NotFoundError:
                    return None  # the spec: a registry with the API never answers 404
                listed = document.get("manifests") if isinstance(document, dict) else None
                if not isinstance(listed, list):
                    return None
                for entry in listed:
                    if not isinstance(entry, dict):
                        raise ContentError(f"malformed referrer {str(entry)[:80]}")
                    Descriptor.from_json(entry)  # a digest, a size: or refused
                    entries.append(entry)
                if url is None:
                    return entries

        return support.ask(endpoint.host, request)

    return repository._over_endpoints(pages)


def _get_page(
    repository: RemoteRepository,
    endpoint: Endpoint,
    retrier: Retrier,
    path: str,
    url: str | None,
    what: str,
) -> tuple[Any, str | None]:
    """One page of a listing: its JSON and the next page's URL (``Link: <…>; rel=next``)."""
    for attempt in retrier.attempts(what):
        with attempt:
            response: requests.Response = repository.client.send(
                endpoint, "GET", path, headers={"Accept": OCI_INDEX}, stream=True, url=url
            )
            expect_success(response, endpoint, what)
            with response:
                data = read_limited(response, MAX_LISTING_BYTES, what, endpoint.host)
                following = response.links.get("next", {}).get("url")
                base = response.url
            try:
                document = load_json(data)
            except ValueError:  # no digest to check it by: damaged on the way, or broken
                raise TransientError(f"{what}: not valid JSON") from None
            return document, urljoin(base, following) if following else None
    raise AssertionError("unreachable")
