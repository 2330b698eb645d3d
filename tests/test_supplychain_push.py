"""The test signer against a real registry: signatures pushed under sha256-<hex>.sig with
sealpy's own client and engine, appended as cosign does, read back byte for byte."""

from __future__ import annotations

import json

from sealpy.core.image.media import Descriptor
from sealpy.core.reference import ImageReference
from sealpy.core.supplychain.cosign import (
    attestation_tag,
    referrers_tag,
    sbom_tag,
    signature_tag,
)
from sealpy.core.supplychain.policy import Policy
from sealpy.core.supplychain.publish import fetch_attachment, read_signatures
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer
from sealpy.core.testing.signing import (
    TestSigner,
    push_attachments,
    push_referrer,
    referrer_image,
    sbom_image,
)
from sealpy.core.transport.remote import RegistryClient


def test_signatures_pushed_appended_and_verified(
    image_factory: ImageFactory, plain_registry: RegistryServer
) -> None:
    host = plain_registry.host
    image = image_factory.image("signed-app", [512])
    image_factory.push(image, host, "supply/app", "1.0")
    signer, other = TestSigner(), TestSigner()
    identity = f"{host}/supply/app:1.0"
    first = other.push_signature(host, "supply/app", image.digest, identity)
    both = signer.push_signature(host, "supply/app", image.digest, identity)
    assert len(both.manifest.layers) == 2
    assert both.manifest.layers[0] == first.manifest.layers[0]

    ref = ImageReference.parse(f"{host}/supply/app:1.0")
    with RegistryClient() as client:
        stored = fetch_attachment(client, ref, signature_tag(image.digest))
        repo = client.repository(ref)
        served = repo.get_manifest(signature_tag(image.digest))
        assert fetch_attachment(client, ref, signature_tag("sha256:" + "0" * 64)) is None
        found = read_signatures(repo, image.digest, f"{host}/supply/app")
        assert read_signatures(repo, "sha256:" + "0" * 64, "x") == []
    assert stored == both  # every byte: manifest, config and payloads
    assert served.data == both.manifest.data

    rules = Policy.from_bytes(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {host: [{"type": "sigstoreSigned", "keyData": signer.key_data}]}
                },
            }
        ).encode()
    )
    assert [c.source for c in found] == [
        f"{host}/supply/app:{signature_tag(image.digest)} layer {i}" for i in (0, 1)
    ]
    assert rules.evaluate(ref, image.digest, found).accepted
    # Only the stranger's signature: rejected.
    assert not rules.evaluate(ref, image.digest, found[:1]).accepted


def test_attestation_sbom_and_referrer_pushed(
    image_factory: ImageFactory, plain_registry: RegistryServer
) -> None:
    host = plain_registry.host
    image = image_factory.image("attached-app", [256])
    image_factory.push(image, host, "supply/attached", "1")
    signer = TestSigner()
    attestation = signer.attestation(image.digest, f"{host}/supply/attached")
    sbom = sbom_image(b'{"spdxVersion":"SPDX-2.3","name":"attached-app"}')
    push_attachments(host, "supply/attached", image.digest, attestation=attestation, sbom=sbom)
    subject = Descriptor(image.manifest.media_type, image.digest, image.manifest.size)
    referrer = referrer_image(subject, "application/vnd.example.report+json", b'{"ok":true}')
    push_referrer(host, "supply/attached", referrer)

    ref = ImageReference.parse(f"{host}/supply/attached:1")
    with RegistryClient() as client:
        assert fetch_attachment(client, ref, attestation_tag(image.digest)) == attestation
        assert fetch_attachment(client, ref, sbom_tag(image.digest)) == sbom
        repo = client.repository(ref)
        assert repo.get_manifest(referrer.digest).data == referrer.manifest.data
        index = repo.get_manifest(referrers_tag(image.digest))
    assert [child.digest for child in index.children] == [referrer.digest]
