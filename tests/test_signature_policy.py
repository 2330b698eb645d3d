"""Verify on the way in (issue 19): `--signature-policy` checks every image's cosign
signatures with sealpy's own verifier before a strategy — proxy or sync — caches it; an
image the policy rejects is not cached, and the error names the image, the scope and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer
from sealpy.core.testing.signing import TestSigner
from sealpy.core.transport.distribution import DistributionLayout

CASES = ("good", "tampered", "wrongkey", "wrongid", "otherdigest", "unsigned", "several")
ACCEPTED = {"good", "several"}


@pytest.fixture(scope="module")
def signed(image_factory: ImageFactory, tmp_path_factory):
    """One image per case in repository ``sp/<case>``, signed (or not) accordingly."""
    root = tmp_path_factory.mktemp("signed-source")
    signer, stranger = TestSigner(), TestSigner()
    with RegistryServer(root / "data", workdir=root / "work") as registry:
        images = {}
        for case in CASES:
            image = image_factory.image(f"sp/{case}", [2048, 1024])
            image_factory.push(image, registry.host, f"sp/{case}", "1")
            images[case] = image
        host = registry.host

        def sign(case, by=signer, digest=None, identity=None, **kw):
            by.push_signature(
                host,
                f"sp/{case}",
                digest or images[case].digest,
                identity or f"{host}/sp/{case}",
                **kw,
            )

        sign("good")
        sign("tampered", tamper="payload")
        sign("wrongkey", by=stranger)
        sign("wrongid", identity=f"{host}/sp/good")
        # A good signature, of another image's digest, under this image's .sig tag.
        stranger_digest = images["good"].digest
        sign("otherdigest", digest=stranger_digest)
        # cosign stores each signature under the digest it signs: move it by hand.
        _retag_signature(registry.host, "sp/otherdigest", stranger_digest, images["otherdigest"])
        sign("several", by=stranger)
        sign("several")  # appended: the second layer of the same .sig manifest
        yield registry, images, signer


def _retag_signature(host: str, repository: str, signed_digest: str, image) -> None:
    from sealpy.core.reference import ImageReference
    from sealpy.core.supplychain.cosign import signature_tag
    from sealpy.core.supplychain.publish import fetch_attachment, push_attachment
    from sealpy.core.transport.remote import RegistryClient

    with RegistryClient() as client:
        ref = ImageReference(host, repository, None, None)
        sig = fetch_attachment(client, ref, signature_tag(signed_digest))
        assert sig is not None
        push_attachment(client, ref, sig, signature_tag(image.digest))


def policy_file(tmp_path: Path, host: str, signer: TestSigner) -> Path:
    policy = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                f"{host}/sp": [
                    {
                        "type": "sigstoreSigned",
                        "keyData": signer.key_data,
                        "signedIdentity": {"type": "matchRepository"},
                    }
                ]
            }
        },
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


def save(strategy: str, refs: list[str], out: Path, policy: Path, *extra: str):
    context = out.parent / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sealpy.core",
            "registry",
            "save",
            "--strategy",
            strategy,
            "--platform",
            "linux/amd64",
            "--registry-dir",
            str(out),
            "--images",
            ",".join(refs),
            "--signature-policy",
            str(policy),
            *extra,
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
    )


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_policy_decides_what_is_cached(signed, strategy, tmp_path):
    registry, images, signer = signed
    policy = policy_file(tmp_path, registry.host, signer)
    refs = [f"{registry.host}/sp/{case}:1" for case in CASES]
    out = tmp_path / "registry"
    done = save(strategy, refs, out, policy, "--debug")
    assert done.returncode != 0
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    scope = f'"{registry.host}/sp"'
    for case in CASES:
        named = f"{registry.host}/sp/{case}:1"
        if case in ACCEPTED:
            assert f"{named}: image" not in error[0]
        else:
            assert named in error[0] and scope in error[0], (case, error[0])
    assert "not signed by the policy's key" in error[0]  # tampered, wrong key
    assert "identity" in error[0]  # wrong identity
    assert f"policy: {policy}" in done.stderr  # --debug names the policy in force
    layout = DistributionLayout(out)
    for case in CASES:
        stored = layout.resolve(f"sp/{case}", "1")
        assert (stored == images[case].digest) == (case in ACCEPTED), case


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_every_image_accepted_caches_all(signed, strategy, tmp_path):
    registry, images, signer = signed
    policy = policy_file(tmp_path, registry.host, signer)
    refs = [f"{registry.host}/sp/{case}:1" for case in sorted(ACCEPTED)]
    done = save(strategy, refs, tmp_path / "registry", policy)
    assert done.returncode == 0, done.stderr
    layout = DistributionLayout(tmp_path / "registry")
    assert all(layout.resolve(f"sp/{c}", "1") == images[c].digest for c in ACCEPTED)


def test_unimplemented_requirement_rejects_its_scope(signed, tmp_path):
    registry, _, _ = signed
    policy = tmp_path / "gpg.json"
    policy.write_text(
        json.dumps(
            {
                "default": [{"type": "insecureAcceptAnything"}],
                "transports": {
                    "docker": {
                        f"{registry.host}/sp/good": [
                            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
                        ]
                    }
                },
            }
        )
    )
    done = save("proxy", [f"{registry.host}/sp/good:1"], tmp_path / "registry", policy)
    assert done.returncode != 0
    assert "does not implement" in done.stderr and "signedBy" in done.stderr, done.stderr
    assert not DistributionLayout(tmp_path / "registry").resolve("sp/good", "1")


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_accepted_images_keep_their_signatures_byte_for_byte(signed, strategy, tmp_path):
    """What the policy accepted lands with its signature manifest, as in the source (same
    digest, so an in-cluster verifier finds and checks the very signature sealpy checked)."""
    from sealpy.core.reference import ImageReference
    from sealpy.core.supplychain.cosign import signature_tag
    from sealpy.core.transport.remote import RegistryClient

    registry, images, signer = signed
    policy = policy_file(tmp_path, registry.host, signer)
    done = save(strategy, [f"{registry.host}/sp/several:1"], tmp_path / "registry", policy)
    assert done.returncode == 0, done.stderr
    tag = signature_tag(images["several"].digest)
    with RegistryClient() as client:
        source = client.repository(ImageReference(registry.host, "sp/several", tag))
        expected = source.get_manifest(tag)
    stored = DistributionLayout(tmp_path / "registry").resolve("sp/several", tag)
    assert stored == expected.digest
    assert len(expected.blobs) >= 3  # config + both signatures' payloads
    layout = DistributionLayout(tmp_path / "registry")
    assert all(layout.has_blob(b.digest) for b in expected.blobs)
