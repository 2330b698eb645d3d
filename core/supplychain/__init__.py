"""Supply chain: cosign-style signatures, keys, and the containers signature policy.

- :mod:`.cosign` — the simple-signing payload, the ``sha256-<hex>.sig/.att/.sbom`` tags, and
  signature manifests (what in-cluster verifiers read);
- :mod:`.keys` — ECDSA public keys (``cosign.pub``), sigstore's encrypted private keys;
- :mod:`.policy` — containers-policy.json(5): scopes, requirements, verdicts (fail-closed
  for what sealpy does not implement); :mod:`.identity` — scope lookup and signedIdentity;
- :mod:`.sign` — signature manifests as cosign writes them; :mod:`.publish` — reading and
  pushing them with sealpy's own client and copy engine.

Import from the modules themselves: this package imports nothing, so that loading a
policy (every ``registry save`` and ``build`` does) does not pull in the registry client.
"""
