"""cosign's layout: the simple-signing payload, attachment tags, signature manifests, and
the test signer's manifests (which must look like cosign's own)."""

from __future__ import annotations

import base64
import json

import pytest

from sealpy.core.image import media
from sealpy.core.image.media import Descriptor, Manifest, sha256_digest
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import (
    DSSE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SimpleSigningPayload,
    attestation_tag,
    parse_attachment_tag,
    read_payload,
    referrers_tag,
    sbom_tag,
    signature_layers,
    signature_tag,
)
from sealpy.core.supplychain.errors import SignatureFormatError
from sealpy.core.supplychain.sign import AttachmentImage, signature_image
from sealpy.core.testing.signing import (
    TestSigner,
    dsse_pae,
    referrer_image,
    referrers_index,
    sbom_image,
    signature_candidates,
)

DIGEST = "sha256:" + "3f" * 32
OTHER = "sha256:" + "a1" * 32


@pytest.fixture(scope="module")
def signer() -> TestSigner:
    return TestSigner()


# --- payload ---------------------------------------------------------------------------------


def test_payload_is_written_as_cosign_writes_it() -> None:
    payload = SimpleSigningPayload("docker.io/library/nginx", DIGEST).to_bytes()
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"docker.io/library/nginx"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_payload_round_trip_keeps_optional() -> None:
    original = SimpleSigningPayload("quay.io/x/y:1", DIGEST, {"creator": "me", "timestamp": 5})
    assert SimpleSigningPayload.parse(original.to_bytes()) == original


def _payload(**changes: object) -> bytes:
    document: dict = {
        "critical": {
            "identity": {"docker-reference": "docker.io/library/nginx"},
            "image": {"docker-manifest-digest": DIGEST},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = document
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return json.dumps(document).encode()


_DELETE = object()


def test_payload_without_optional_is_accepted() -> None:
    parsed = SimpleSigningPayload.parse(_payload(optional=_DELETE))
    assert parsed.optional is None and parsed.manifest_digest == DIGEST


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"critical__type": "atomic container signature"}, "unrecognised signature type"),
        ({"critical__extra": 1}, "unknown field 'extra'"),
        ({"critical__image": _DELETE}, "lacks field 'image'"),
        ({"critical__identity__docker-reference": _DELETE}, "lacks field 'docker-reference'"),
        ({"critical__identity__other": "x"}, "unknown field 'other'"),
        ({"critical__image__docker-manifest-digest": "sha256:abc"}, "not sha256"),
        ({"critical__image__docker-manifest-digest": 5}, "not sha256"),
        ({"critical__identity__docker-reference": ""}, "non-empty string"),
        ({"optional": []}, "neither an object nor null"),
        ({"optional": {"creator": 3}}, "creator is not a string"),
        ({"optional": {"timestamp": 1.5}}, "timestamp is not an integer"),
        ({"optional": {"timestamp": True}}, "timestamp is not an integer"),
        ({"surplus": {}}, "unknown field 'surplus'"),
        ({"critical": _DELETE}, "lacks field 'critical'"),
    ],
)
def test_payload_parsing_is_strict(changes: dict, message: str) -> None:
    with pytest.raises(SignatureFormatError, match=message):
        SimpleSigningPayload.parse(_payload(**changes))


def test_payload_with_duplicate_field_is_refused() -> None:
    # Two identities: one reader could see the first, another the second.
    data = _payload().replace(
        b'{"docker-reference": "docker.io/library/nginx"}',
        b'{"docker-reference": "docker.io/library/nginx", "docker-reference": "evil.io/x"}',
    )
    with pytest.raises(SignatureFormatError, match="duplicate field 'docker-reference'"):
        SimpleSigningPayload.parse(data)


@pytest.mark.parametrize("data", [b"", b"[]", b"\xff\xfe", b"{" * 100 + b"}" * 100, b"null"])
def test_payload_that_is_not_an_object_is_refused(data: bytes) -> None:
    with pytest.raises(SignatureFormatError):
        SimpleSigningPayload.parse(data)


# --- tags ------------------------------------------------------------------------------------


def test_attachment_tags() -> None:
    hex_part = DIGEST[7:]
    assert signature_tag(DIGEST) == f"sha256-{hex_part}.sig"
    assert attestation_tag(DIGEST) == f"sha256-{hex_part}.att"
    assert sbom_tag(DIGEST) == f"sha256-{hex_part}.sbom"
    assert referrers_tag(DIGEST) == f"sha256-{hex_part}"
    assert parse_attachment_tag(signature_tag(DIGEST)) == (DIGEST, "sig")
    assert parse_attachment_tag(referrers_tag(DIGEST)) == (DIGEST, None)
    assert parse_attachment_tag("latest") is None
    assert parse_attachment_tag(f"sha256-{hex_part}.exe") is None


def test_attachment_tag_refuses_a_bad_digest() -> None:
    with pytest.raises(SignatureFormatError):
        signature_tag("sha256:1234")


# --- signature manifests ---------------------------------------------------------------------


def test_signer_manifest_has_cosigns_structure(signer: TestSigner) -> None:
    image = signer.sign(DIGEST, "docker.io/library/nginx")
    manifest = image.manifest.json
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["mediaType"] == media.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == media.OCI_CONFIG
    [layer] = manifest["layers"]
    assert list(layer) == ["mediaType", "size", "digest", "annotations"]
    assert layer["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    payload = image.blobs[layer["digest"]]
    signature = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION])
    assert keys.verify(signer.public_key, payload, signature)
    config = json.loads(image.config)
    assert list(config) == ["architecture", "created", "history", "os", "rootfs", "config"]
    assert config == {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
        "config": {},
    }
    assert image.config == json.dumps(config, separators=(",", ":")).encode()


def test_a_second_signature_is_appended(signer: TestSigner) -> None:
    first = signer.sign(DIGEST, "docker.io/library/nginx")
    both = signer.sign(DIGEST, "docker.io/library/nginx:1", existing=first)
    layers = signature_layers(both.manifest)
    assert len(layers) == 2
    assert layers[0].descriptor == signature_layers(first.manifest)[0].descriptor
    config = json.loads(both.config)
    assert config["rootfs"]["diff_ids"] == [layer.descriptor.digest for layer in layers]
    assert len(config["history"]) == 2
    assert set(both.blobs) == {both.manifest.config.digest, *(x.descriptor.digest for x in layers)}


def test_signature_image_from_sign_module_verifies(signer: TestSigner) -> None:
    image = signature_image(DIGEST, "reg.io/app:1", signer.private_key, optional={"creator": "t"})
    [candidate] = signature_candidates(image)
    payload = SimpleSigningPayload.parse(candidate.payload)
    assert payload == SimpleSigningPayload("reg.io/app:1", DIGEST, {"creator": "t"})
    assert isinstance(candidate.signature, str)
    assert keys.verify(signer.public_key, candidate.payload, base64.b64decode(candidate.signature))


def test_signature_layers_skip_other_layers_and_keep_missing_annotations(
    signer: TestSigner,
) -> None:
    tampered = signer.sign(DIGEST, "r.io/a", tamper="annotation")
    document = tampered.manifest.json
    document["layers"].append({"mediaType": "text/plain", "size": 1, "digest": OTHER})
    manifest = Manifest.parse(json.dumps(document).encode(), media.OCI_MANIFEST)
    [layer] = signature_layers(manifest)
    assert layer.signature is None


def test_signature_layers_refuse_an_index_and_bad_annotations(signer: TestSigner) -> None:
    index = Manifest.parse(
        json.dumps({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": []}).encode()
    )
    with pytest.raises(SignatureFormatError, match="not an index"):
        signature_layers(index)
    document = signer.sign(DIGEST, "r.io/a").manifest.json
    document["layers"][0]["annotations"] = {SIGNATURE_ANNOTATION: 5}
    with pytest.raises(SignatureFormatError, match="string map"):
        signature_layers(Manifest.parse(json.dumps(document).encode(), media.OCI_MANIFEST))


def test_read_payload_checks_size_before_reading_and_content_after() -> None:
    def never(descriptor: Descriptor) -> bytes:
        raise AssertionError("read")

    huge = Descriptor(SIMPLE_SIGNING_MEDIA_TYPE, OTHER, 1 << 30)
    with pytest.raises(SignatureFormatError, match="claims"):
        read_payload(huge, never)
    small = Descriptor(SIMPLE_SIGNING_MEDIA_TYPE, sha256_digest(b"abc"), 3)
    with pytest.raises(SignatureFormatError, match="does not match"):
        read_payload(small, lambda d: b"abd")
    assert read_payload(small, lambda d: b"abc") == b"abc"


def test_attachment_image_read_checks_blobs(signer: TestSigner) -> None:
    image = signer.sign(DIGEST, "r.io/a")
    again = AttachmentImage.read(image.manifest, lambda d: image.blobs[d.digest])
    assert again == image
    with pytest.raises(SignatureFormatError, match="does not match"):
        AttachmentImage.read(image.manifest, lambda d: b"x" * d.size)


# --- attestations, SBOMs, referrers --------------------------------------------------------


def test_attestation_is_a_signed_dsse_envelope(signer: TestSigner) -> None:
    image = signer.attestation(DIGEST, "docker.io/library/nginx")
    [layer] = image.manifest.json["layers"]
    assert layer["mediaType"] == DSSE_MEDIA_TYPE
    assert layer["annotations"] == {
        "dev.cosignproject.cosign/signature": "",
        "predicateType": "https://slsa.dev/provenance/v0.2",
    }
    envelope = json.loads(image.blobs[layer["digest"]])
    body = base64.b64decode(envelope["payload"])
    statement = json.loads(body)
    assert statement["subject"][0]["digest"] == {"sha256": DIGEST[7:]}
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    assert keys.verify(signer.public_key, dsse_pae(envelope["payloadType"], body), signature)
    assert signature_layers(image.manifest) == []  # not a simple signature


def test_sbom_and_referrer_images() -> None:
    sbom = sbom_image(b'{"spdxVersion":"SPDX-2.3"}')
    assert [d.media_type for d in sbom.manifest.layers] == ["text/spdx+json"]
    subject = Descriptor(media.OCI_MANIFEST, DIGEST, 123)
    referrer = referrer_image(
        subject, "application/vnd.example+json", b"{}", annotations={"a": "b"}
    )
    document = referrer.manifest.json
    assert document["subject"] == {"mediaType": media.OCI_MANIFEST, "digest": DIGEST, "size": 123}
    assert document["artifactType"] == "application/vnd.example+json"
    assert document["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert set(referrer.blobs) == {d.digest for d in referrer.manifest.blobs}
    [entry] = referrers_index([referrer]).json["manifests"]
    assert entry["digest"] == referrer.digest
    assert entry["artifactType"] == "application/vnd.example+json"
    assert entry["annotations"] == {"a": "b"}
