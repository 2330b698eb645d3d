"""The signature policy on the way in, for every strategy.

Before a strategy caches anything, each image whose policy scope does not simply accept
everything (``insecureAcceptAnything``) is resolved to its manifest digest (the index
digest for a multi-platform image; the locked digest when a lock pins it), its cosign
signatures (``sha256-<hex>.sig`` in its repository) are read from its source, and the
policy decides — against the image's own reference, never the mirror that served it.

An accepted image is pinned to the digest that was verified, so the strategy — ``proxy``
or ``sync``, whose skopeo is built without sigstore on Debian — copies exactly the
content whose signature was checked, not whatever the tag points to a moment later. A
rejected image is not cached: its error names the image, the scope that applied and why.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from sealpy.core.errors import SealpyError
from sealpy.core.model import CacheOptions, ImageSet, RequiredImage
from sealpy.core.supplychain.policy import Policy
from sealpy.core.supplychain.publish import read_signatures
from sealpy.core.supplychain.requirements import AcceptAnything
from sealpy.core.transport.remote import RegistryClient


@dataclass(frozen=True)
class PolicyOutcome:
    """The images to cache (checked ones pinned to the digest verified) and the errors of
    those the policy rejected (each about its image)."""

    images: ImageSet
    rejected: tuple[SealpyError, ...] = ()
    checked: int = 0


def needs_check(policy: Policy, required: RequiredImage) -> bool:
    """Whether the image's scope asks anything more than ``insecureAcceptAnything``."""
    _scope, requirements = policy.requirements_for(required.reference)
    return not all(isinstance(r, AcceptAnything) for r in requirements)


def apply_policy(images: ImageSet, options: CacheOptions) -> PolicyOutcome:
    """Check every image against ``options.signature_policy`` (none: all accepted)."""
    policy = options.signature_policy
    if policy is None:
        return PolicyOutcome(images)
    to_check = [r for r in images.images if needs_check(policy, r)]
    if not to_check:
        return PolicyOutcome(images)
    transport = options.transport
    with (
        transport.client(max_connections=max(4, transport.max_parallel * 2)) as client,
        ThreadPoolExecutor(max_workers=max(1, transport.max_parallel)) as pool,
    ):
        outcomes = list(pool.map(lambda r: _check(policy, client, r), to_check))
    checked = {id(r): outcome for r, outcome in zip(to_check, outcomes, strict=True)}
    kept: list[RequiredImage] = []
    rejected: list[SealpyError] = []
    for required in images.images:
        outcome = checked.get(id(required), required)
        if isinstance(outcome, SealpyError):
            rejected.append(outcome)
        else:
            kept.append(outcome)
    return PolicyOutcome(replace(images, images=tuple(kept)), tuple(rejected), len(to_check))


def _check(
    policy: Policy, client: RegistryClient, required: RequiredImage
) -> RequiredImage | SealpyError:
    """The image pinned to its verified digest, or the error saying why it was rejected."""
    ref = required.reference
    label = str(ref)
    try:
        source = client.repository(ref)
        digest = required.pinned or source.get_manifest(ref.reference).digest
        signatures = read_signatures(source, digest, ref.name)
        policy.evaluate(ref, digest, signatures).check()
    except SealpyError as exc:
        return exc.about(label)
    return replace(required, pinned=digest)
