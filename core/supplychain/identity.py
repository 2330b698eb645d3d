"""Which policy scopes an image falls in, and which signed identities a policy accepts.

Both follow containers-policy.json(5) and containers/image's implementation:

- Scopes of the ``docker`` transport, most specific first: the image itself
  (``registry/repo:tag`` or ``registry/repo@digest``, fully expanded), the repository, each
  parent namespace, the registry host (with its port), then ``*.domain`` wildcards for each
  parent domain (without the port). The transport default ``""`` and the global ``default``
  come after, in the policy.
- ``signedIdentity`` rules compare the reference a signature claims (parsed and normalised:
  cosign writes ``index.docker.io/…`` for Docker Hub) with the image's own reference — the
  one the user asked for, never a mirror it was fetched from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealpy.core.errors import InvalidReferenceError
from sealpy.core.reference import DEFAULT_TAG, ImageReference


def parse_signed_reference(text: str) -> ImageReference | None:
    """A reference as a signature or policy states it, normalised, with no tag added;
    ``None`` when it does not parse."""
    try:
        return ImageReference.parse(text, default_tag=False)
    except InvalidReferenceError:
        return None


def _name_only(ref: ImageReference) -> bool:
    return ref.tag is None and ref.digest is None


def pinned(image: ImageReference) -> ImageReference:
    """The image with ``latest`` added when it names neither tag nor digest (what a copy
    fetches then)."""
    return image.with_tag(DEFAULT_TAG) if _name_only(image) else image


def scope_candidates(image: ImageReference) -> list[str]:
    """The ``docker`` transport scopes that can apply to ``image``, most specific first
    (the transport default ``""`` excluded). A reference with both a tag and a digest
    (which containers/image cannot express) is looked up by tag, then by digest."""
    image = pinned(image)
    found = []
    if image.tag:
        found.append(f"{image.name}:{image.tag}")
    if image.digest:
        found.append(f"{image.name}@{image.digest}")
    name = image.name
    while True:
        found.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    host = name.split(":", 1)[0]
    while "." in host:
        host = host.split(".", 1)[1]
        found.append(f"*.{host}")
    return found


def _repo_digest_or_exact(intended: ImageReference, signed: ImageReference) -> bool:
    if _name_only(signed):
        return False
    if intended.tag:  # tag, or tag and digest: the whole reference must match
        return str(signed) == str(intended)
    return signed.name == intended.name  # by digest: the repository (the digest is checked apart)


class IdentityRule:
    """A ``signedIdentity`` rule: does the identity a signature claims fit the image?"""

    kind = ""

    def matches(self, image: ImageReference, signed: str) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class MatchRepoDigestOrExact(IdentityRule):
    """The default: a tagged image needs a signature for exactly that reference; an image
    by digest one for its repository (with any tag). cosign's own signatures name only the
    repository, so they never match it: use ``matchRepository`` for them."""

    kind = "matchRepoDigestOrExact"

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        return ref is not None and _repo_digest_or_exact(pinned(image), ref)


@dataclass(frozen=True)
class MatchExact(IdentityRule):
    kind = "matchExact"

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        return ref is not None and not _name_only(ref) and str(ref) == str(pinned(image))


@dataclass(frozen=True)
class MatchRepository(IdentityRule):
    kind = "matchRepository"

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        return ref is not None and ref.name == image.name


@dataclass(frozen=True)
class ExactReference(IdentityRule):
    kind = "exactReference"
    reference: ImageReference

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        return ref is not None and not _name_only(ref) and str(ref) == str(self.reference)

    def describe(self) -> str:
        return f"exactReference {self.reference}"


@dataclass(frozen=True)
class ExactRepository(IdentityRule):
    kind = "exactRepository"
    repository: ImageReference

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        return ref is not None and ref.name == self.repository.name

    def describe(self) -> str:
        return f"exactRepository {self.repository.name}"


_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PREFIX_RE = re.compile(rf"^(?:{_HOST}|\[[0-9a-fA-F:]+\])(?::[0-9]+)?(?:/{_COMPONENT})*\Z")


def valid_remap_prefix(prefix: str) -> bool:
    """A ``remapIdentity`` prefix: a ``host[:port]``, or a namespace or repository under a
    host that is one (contains ``.`` or ``:``, or is ``localhost``), with no tag or digest."""
    if not _PREFIX_RE.match(prefix):
        return False
    if "/" not in prefix:
        return True
    host = prefix.split("/", 1)[0]
    return "." in host or ":" in host or host == "localhost"


@dataclass(frozen=True)
class RemapIdentity(IdentityRule):
    """If the image's repository is ``prefix`` or under it, that prefix is replaced by
    ``signed_prefix`` before ``matchRepoDigestOrExact`` applies (a mirror of a signed
    upstream: the signatures name the upstream)."""

    kind = "remapIdentity"
    prefix: str
    signed_prefix: str

    def remapped(self, image: ImageReference) -> ImageReference | None:
        image = pinned(image)
        name = image.name
        if not (name == self.prefix or name.startswith(self.prefix + "/")):
            return image
        text = str(image).replace(self.prefix, self.signed_prefix, 1)
        ref = parse_signed_reference(text)
        # As containers/image's ParseNamed: the result must already be fully expanded.
        return ref if ref is not None and str(ref) == text else None

    def matches(self, image: ImageReference, signed: str) -> bool:
        ref = parse_signed_reference(signed)
        intended = self.remapped(image)
        return ref is not None and intended is not None and _repo_digest_or_exact(intended, ref)

    def describe(self) -> str:
        return f"remapIdentity {self.prefix} -> {self.signed_prefix}"
