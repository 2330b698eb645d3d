"""`sealpy push --sign-by-sigstore-private-key KEY [--sign-passphrase-file F]`: the cluster
image pushed to a real registry, then a cosign-style signature of each pushed manifest
under ``sha256-<hex>.sig`` — verified with sealpy's own verifier under a
``sigstoreSigned`` policy, checked against cosign's layout, seen by skopeo. A key that
cannot be used pushes nothing, and the passphrase never shows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from _build_support import build, cli

from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.errors import NotFoundError
from sealpy.core.image import media
from sealpy.core.image.media import sha256_digest
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.store.signing import cosign_identity, load_signing_key
from sealpy.core.supplychain import keys
from sealpy.core.supplychain.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SignatureCandidate,
    SimpleSigningPayload,
    signature_tag,
)
from sealpy.core.supplychain.errors import SigningKeyError
from sealpy.core.supplychain.policy import Policy
from sealpy.core.supplychain.publish import fetch_attachment, read_signatures
from sealpy.core.supplychain.sign import signature_image
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER
from sealpy.core.testing.registry import RegistryServer, skopeo
from sealpy.core.testing.signing import TEST_PASSPHRASE, KeyFiles, TestSigner
from sealpy.core.transport.remote import RegistryClient

# scrypt at sigstore's cost takes ~0.1 s: one key pair (and its encrypted file) per module.
SIGNER = TestSigner()
STRANGER = TestSigner()


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return SIGNER.write_keys(tmp_path_factory.mktemp("keys"))


def cluster_image(tmp_path: Path, store: Path, name: str, platforms: tuple[str, ...] = ()) -> str:
    """Build a small cluster image (one platform, or an index of ``platforms``)."""
    context = tmp_path / f"ctx-{name}"
    context.mkdir()
    (context / "manifests").mkdir()
    (context / "manifests" / "app.yaml").write_text("kind: ConfigMap\n")
    (context / "Kubefile").write_text(
        f"FROM scratch\nLABEL sealos.io.type=application name={name}\nCOPY manifests manifests\n"
    )
    chosen = tuple(Platform.parse(p) for p in platforms) or None
    return build(context, store, tags=[name], platforms=chosen).result.digest


def policy(signer: TestSigner, scope: str, identity: str | None = "matchRepository") -> Policy:
    requirement: dict = {"type": "sigstoreSigned", "keyData": signer.key_data}
    if identity:
        requirement["signedIdentity"] = {"type": identity}
    document = {"default": [{"type": "reject"}], "transports": {"docker": {scope: [requirement]}}}
    return Policy.from_bytes(json.dumps(document).encode())


def signatures(
    ref: ImageReference, digest: str, credentials: ConfiguredCredentials | None = None
) -> list[SignatureCandidate]:
    with RegistryClient(credentials=credentials) as client:
        return read_signatures(client.repository(ref), digest, ref.name)


def push(capsys, store: Path, image: str, dest: str, *flags: str) -> tuple[int, str, str]:
    return cli(capsys, "push", image, dest, "--root", str(store), *flags)


def has_manifest(ref: ImageReference, reference: str) -> bool:
    with RegistryClient() as client:
        try:
            client.repository(ref).get_manifest(reference)
        except NotFoundError:
            return False
    return True


def test_push_signs_with_an_unencrypted_key(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-plain")
    dest = f"{plain_registry.host}/sign/plain:1.0"
    code, out, err = push(
        capsys,
        store,
        "signed-plain",
        dest,
        "--sign-by-sigstore-private-key",
        str(key_files.pkcs8_private_key),
    )
    assert code == 0, err
    assert out.strip() == digest
    assert f"Signed {plain_registry.host}/sign/plain@{digest}: {signature_tag(digest)}" in err

    ref = ImageReference.parse(dest)
    found = signatures(ref, digest)
    assert len(found) == 1
    # cosign's identity, the repository: accepted by matchRepository, by tag or digest...
    by_digest = ref.with_tag(None).with_digest(digest)
    for image in (ref, by_digest):
        assert policy(SIGNER, f"{plain_registry.host}/sign").evaluate(image, digest, found).accepted
    # ...not by the default rule (matchRepoDigestOrExact refuses a name-only identity, as
    # containers/image does for cosign's own signatures), another key or another digest.
    verdict = policy(SIGNER, plain_registry.host, None).evaluate(by_digest, digest, found)
    assert not verdict.accepted and "wrong identity" in verdict.message
    assert not policy(STRANGER, plain_registry.host).evaluate(ref, digest, found).accepted
    other = "sha256:" + "1" * 64
    assert not policy(SIGNER, plain_registry.host).evaluate(ref, other, found).accepted

    # skopeo sees the .sig tag, and the manifest it serves is the one sealpy read.
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{ref.name}:{signature_tag(digest)}"
    ).stdout
    assert json.loads(raw)["layers"][0]["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    with RegistryClient() as client:
        stored = fetch_attachment(client, ref, signature_tag(digest))
    assert stored is not None and stored.manifest.data == raw


def test_push_with_an_encrypted_key_appends_to_existing_signatures(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-enc")
    dest = f"{plain_registry.host}/sign/enc:2"
    ref = ImageReference.parse(dest)
    first = STRANGER.push_signature(plain_registry.host, "sign/enc", digest, cosign_identity(ref))
    flags = (
        "--sign-by-sigstore-private-key",
        str(key_files.encrypted_private_key),
        "--sign-passphrase-file",
        str(key_files.passphrase_file),
    )
    code, out, err = push(capsys, store, "signed-enc", dest, *flags)
    assert code == 0, err
    assert "(2 signatures)" in err
    assert TEST_PASSPHRASE.decode() not in out + err
    assert key_files.encrypted_private_key.read_text() not in out + err

    with RegistryClient() as client:
        sig = fetch_attachment(client, ref, signature_tag(digest))
    assert sig is not None
    assert sig.manifest.layers[0] == first.manifest.layers[0]  # cosign appends, keeps
    found = signatures(ref, digest)
    assert len(found) == 2
    scope = f"{plain_registry.host}/sign/enc"
    assert policy(SIGNER, scope).evaluate(ref, digest, found[1:]).accepted
    assert policy(STRANGER, scope).evaluate(ref, digest, found[:1]).accepted
    assert not policy(SIGNER, scope).evaluate(ref, digest, found[:1]).accepted

    # Pushed and signed again with the same key: nothing added (cosign's duplicate check).
    code, _, err = push(capsys, store, "signed-enc", dest, *flags)
    assert code == 0, err
    assert f"Already signed with this key {ref.name}@{digest}" in err and "(2 signatures)" in err
    with RegistryClient() as client:
        again = fetch_attachment(client, ref, signature_tag(digest))
    assert again == sig


def test_signature_manifest_has_cosign_layout(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-layout")
    dest = f"{plain_registry.host}/sign/layout:v1"
    flags = ("--sign-by-sigstore-private-key", str(key_files.pkcs8_private_key))
    assert push(capsys, store, "signed-layout", dest, *flags)[0] == 0
    ref = ImageReference.parse(dest)
    with RegistryClient() as client:
        sig = fetch_attachment(client, ref, signature_tag(digest))
    assert sig is not None
    document = sig.manifest.json
    assert list(document) == ["schemaVersion", "mediaType", "config", "layers"]
    assert document["mediaType"] == media.OCI_MANIFEST
    assert document["config"]["mediaType"] == media.OCI_CONFIG
    (layer,) = document["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    assert list(layer["annotations"]) == [SIGNATURE_ANNOTATION]

    payload = sig.blobs[layer["digest"]]
    identity = f"{plain_registry.host}/sign/layout"
    assert (
        payload
        == (
            f'{{"critical":{{"identity":{{"docker-reference":"{identity}"}},'
            f'"image":{{"docker-manifest-digest":"{digest}"}},'
            '"type":"cosign container image signature"},"optional":null}'
        ).encode()
    )
    signature = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION], validate=True)
    assert keys.verify(SIGNER.public_key, payload, signature)

    config = json.loads(sig.config)
    assert list(config) == ["architecture", "created", "history", "os", "rootfs", "config"]
    assert config["architecture"] == "" and config["os"] == "" and config["config"] == {}
    assert len(config["history"]) == 1 and config["created"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256_digest(payload)]}
    # Byte for byte what the library's signer makes (ECDSA signatures are randomised, so
    # the annotation is taken from the pushed one).
    assert SimpleSigningPayload(identity, digest).to_bytes() == payload


def test_multi_platform_image_index_and_every_platform_signed(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-multi", ("linux/amd64", "linux/arm64"))
    dest = f"{plain_registry.host}/sign/multi:1"
    code, _, err = push(
        capsys,
        store,
        "signed-multi",
        dest,
        "--sign-by-sigstore-private-key",
        str(key_files.pkcs8_private_key),
    )
    assert code == 0, err
    ref = ImageReference.parse(dest)
    with RegistryClient() as client:
        index = client.repository(ref).get_manifest("1")
    assert index.digest == digest and index.is_index
    children = [child.digest for child in index.children]
    assert len(children) == 2
    rules = policy(SIGNER, f"{plain_registry.host}/sign/multi")
    for manifest_digest in [digest, *children]:
        found = signatures(ref, manifest_digest)
        assert len(found) == 1, manifest_digest
        assert rules.evaluate(ref, manifest_digest, found).accepted
        assert f"Signed {ref.name}@{manifest_digest}: " in err
        skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{ref.name}:{signature_tag(manifest_digest)}",
        )
    # Each signature signs its own digest only.
    assert not rules.evaluate(ref, digest, signatures(ref, children[0])).accepted


def test_wrong_passphrase_is_one_line_and_pushes_nothing(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    cluster_image(tmp_path, store, "signed-wrong")
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not-the-passphrase-4711\nsecond line\n")
    dest = f"{plain_registry.host}/sign/wrong:1"
    code, out, err = push(
        capsys,
        store,
        "signed-wrong",
        dest,
        "--sign-by-sigstore-private-key",
        str(key_files.encrypted_private_key),
        "--sign-passphrase-file",
        str(wrong),
    )
    assert code != 0
    assert err.splitlines() == [
        f"error: private key {key_files.encrypted_private_key}: wrong passphrase, "
        "or the key file is corrupt"
    ]
    assert "not-the-passphrase" not in out + err and "Traceback" not in err
    assert not has_manifest(ImageReference.parse(dest), "1")


def test_encrypted_key_without_a_passphrase_and_no_terminal_pushes_nothing(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    cluster_image(tmp_path, store, "signed-noterm")
    dest = f"{plain_registry.host}/sign/noterm:1"
    code, _, err = push(
        capsys,
        store,
        "signed-noterm",
        dest,
        "--sign-by-sigstore-private-key",
        str(key_files.encrypted_private_key),
    )
    assert code != 0
    (line,) = err.splitlines()
    assert line.startswith("error: ") and "--sign-passphrase-file" in line
    assert "stdin is not a terminal" in line
    assert not has_manifest(ImageReference.parse(dest), "1")


def test_unusable_keys_and_flags_push_nothing(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    cluster_image(tmp_path, store, "signed-bad")
    dest = f"{plain_registry.host}/sign/bad:1"
    public = ("--sign-by-sigstore-private-key", str(key_files.public_key))
    missing = ("--sign-by-sigstore-private-key", str(tmp_path / "absent.key"))
    alone = ("--sign-passphrase-file", str(key_files.passphrase_file))
    for flags, expected in [
        (public, "expected 'ENCRYPTED SIGSTORE PRIVATE KEY'"),
        (missing, "cannot read private key"),
        (alone, "--sign-passphrase-file needs --sign-by-sigstore-private-key"),
    ]:
        code, _, err = push(capsys, store, "signed-bad", dest, *flags)
        assert code != 0
        (line,) = err.splitlines()
        assert line.startswith("error: ") and expected in line, line
    assert not has_manifest(ImageReference.parse(dest), "1")


def test_passphrase_prompt_only_on_a_terminal(key_files: KeyFiles):
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return TEST_PASSPHRASE.decode()

    key = load_signing_key(key_files.encrypted_private_key, prompt=prompt, interactive=True)
    assert key.private_numbers() == SIGNER.private_key.private_numbers()
    assert asked == [f"Passphrase for key {key_files.encrypted_private_key}: "]
    with pytest.raises(SigningKeyError, match="stdin is not a terminal"):
        load_signing_key(key_files.encrypted_private_key, prompt=prompt, interactive=False)
    assert len(asked) == 1
    # The passphrase file wins over the prompt; an unencrypted key needs neither.
    load_signing_key(
        key_files.encrypted_private_key, key_files.passphrase_file, prompt=prompt, interactive=True
    )
    load_signing_key(key_files.pkcs8_private_key, prompt=prompt, interactive=True)
    assert len(asked) == 1


def test_cosign_identity_is_the_repository_and_verifies():
    hub = ImageReference.parse("docker.io/library/nginx:1.25")
    assert cosign_identity(hub) == "index.docker.io/library/nginx"
    assert cosign_identity(ImageReference.parse("nginx")) == "index.docker.io/library/nginx"
    digest = "sha256:" + "a" * 64
    local = ImageReference.parse(f"127.0.0.1:5000/team/app@{digest}")
    assert cosign_identity(local) == "127.0.0.1:5000/team/app"
    # sealpy's verifier reads cosign's Docker Hub spelling back as docker.io.
    sig = signature_image(digest, cosign_identity(hub), SIGNER.private_key)
    found = [
        SignatureCandidate(
            sig.layer_data()[0], sig.layers()[0].annotations[SIGNATURE_ANNOTATION], "sig"
        )
    ]
    assert policy(SIGNER, "docker.io/library").evaluate(hub, digest, found).accepted


def test_push_signs_through_registry_authentication(
    tmp_path: Path, capsys, key_files: KeyFiles, htpasswd_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-auth")
    dest = f"{htpasswd_registry.host}/sign/auth:1"
    code, out, err = push(
        capsys,
        store,
        "signed-auth",
        dest,
        "--creds",
        f"{TEST_USER}:{TEST_PASSWORD}",
        "--sign-by-sigstore-private-key",
        str(key_files.encrypted_private_key),
        "--sign-passphrase-file",
        str(key_files.passphrase_file),
    )
    assert code == 0, err
    for secret in (TEST_PASSWORD, TEST_PASSPHRASE.decode()):
        assert secret not in out + err
    ref = ImageReference.parse(dest)
    credentials = ConfiguredCredentials(creds=htpasswd_registry.credential)
    found = signatures(ref, digest, credentials)
    assert (
        policy(SIGNER, f"{htpasswd_registry.host}/sign/auth").evaluate(ref, digest, found).accepted
    )


def test_a_signature_that_cannot_be_pushed_fails_naming_what_was_pushed(
    tmp_path: Path, capsys, key_files: KeyFiles, plain_registry: RegistryServer
):
    store = tmp_path / "store"
    digest = cluster_image(tmp_path, store, "signed-fault")
    # The registry answers 500 to everything about .sig tags: the image goes through.
    plan = FaultPlan(rate=1.0, kinds=("500",), paths=r"/manifests/sha256-[0-9a-f]{64}\.sig$")
    with FaultProxy(plain_registry.host, plan) as proxy:
        dest = f"{proxy.host}/sign/fault:1"
        code, out, err = push(
            capsys,
            store,
            "signed-fault",
            dest,
            "--retry-times",
            "0",
            "--sign-by-sigstore-private-key",
            str(key_files.pkcs8_private_key),
        )
    assert code != 0 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(
        f"error: {proxy.host}/sign/fault@{digest} was pushed, but its signature was not "
        "(0 of 1 signed): "
    ), line
    assert has_manifest(ImageReference.parse(f"{plain_registry.host}/sign/fault:1"), "1")
