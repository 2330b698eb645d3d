"""Supply chain: cosign-style signatures, keys, and the containers signature policy.

- :mod:`.cosign` — the simple-signing payload, the ``sha256-<hex>.sig/.att/.sbom`` tags, and
  signature manifests (what in-cluster verifiers read);
- :mod:`.keys` — ECDSA public keys (``cosign.pub``), sigstore's encrypted private keys;
- :mod:`.policy` — containers-policy.json(5): scopes, requirements, verdicts (fail-closed
  for what sealpy does not implement); :mod:`.identity` — scope lookup and signedIdentity;
- :mod:`.sign` — signature manifests as cosign writes them; :mod:`.publish` — reading and
  pushing them with sealpy's own client and copy engine.
"""

from sealpy.core.supplychain.cosign import (
    SignatureCandidate,
    SimpleSigningPayload,
    attestation_tag,
    candidates,
    referrers_tag,
    sbom_tag,
    signature_tag,
)
from sealpy.core.supplychain.errors import (
    PolicyFileError,
    PolicyRejectedError,
    SignatureFormatError,
    SigningKeyError,
)
from sealpy.core.supplychain.policy import Policy, Scope, Verdict
from sealpy.core.supplychain.publish import (
    fetch_attachment,
    push_attachment,
    read_attachment,
    read_signatures,
)
from sealpy.core.supplychain.sign import AttachmentImage, signature_image

__all__ = [
    "AttachmentImage",
    "Policy",
    "PolicyFileError",
    "PolicyRejectedError",
    "Scope",
    "SignatureCandidate",
    "SignatureFormatError",
    "SigningKeyError",
    "SimpleSigningPayload",
    "Verdict",
    "attestation_tag",
    "candidates",
    "fetch_attachment",
    "push_attachment",
    "read_attachment",
    "read_signatures",
    "referrers_tag",
    "sbom_tag",
    "signature_image",
    "signature_tag",
]
