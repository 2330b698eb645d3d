"""Keys: cosign public keys, sigstore's encrypted private keys, unencrypted PKCS#8; one-line
errors that never show the passphrase."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sealpy.core.supplychain import keys
from sealpy.core.supplychain.errors import SigningKeyError
from sealpy.core.testing.signing import TEST_PASSPHRASE, TestSigner


@pytest.fixture(scope="module")
def signer() -> TestSigner:
    return TestSigner()


def _encrypted_document(pem: bytes) -> dict:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return json.loads(base64.b64decode(body))


def _pem(label: str, document: dict) -> bytes:
    body = base64.b64encode(json.dumps(document).encode()).decode()
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def test_encrypted_key_has_sigstores_format(signer: TestSigner) -> None:
    pem = signer.encrypted_pem
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    document = _encrypted_document(pem)
    assert document["kdf"]["name"] == "scrypt"
    assert document["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(document["kdf"]["salt"])) == 32
    assert document["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(document["cipher"]["nonce"])) == 24
    # secretbox: a 16-byte tag before the sealed PKCS#8 DER
    der = signer.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert len(base64.b64decode(document["ciphertext"])) == len(der) + 16


def test_encrypted_key_loads_with_its_passphrase(signer: TestSigner) -> None:
    key = keys.load_private_key(signer.encrypted_pem, TEST_PASSPHRASE)
    assert key.private_numbers() == signer.private_key.private_numbers()
    as_text = keys.load_private_key(signer.encrypted_pem, TEST_PASSPHRASE.decode())
    assert as_text.private_numbers() == signer.private_key.private_numbers()


def test_legacy_cosign_label_is_accepted(signer: TestSigner) -> None:
    pem = signer.encrypted_pem.replace(b"SIGSTORE", b"COSIGN")
    assert keys.load_private_key(pem, TEST_PASSPHRASE).private_numbers() == (
        signer.private_key.private_numbers()
    )


def test_wrong_passphrase_is_one_clear_line_without_the_passphrase(
    signer: TestSigner, tmp_path: Path
) -> None:
    files = signer.write_keys(tmp_path)
    wrong = "hunter2-not-it"
    with pytest.raises(SigningKeyError) as caught:
        keys.load_private_key_file(files.encrypted_private_key, wrong)
    message = str(caught.value)
    assert (
        message
        == f"private key {files.encrypted_private_key}: wrong passphrase, or the key file is corrupt"
    )
    assert wrong not in message and TEST_PASSPHRASE.decode() not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_encrypted_key_without_passphrase_is_refused(signer: TestSigner) -> None:
    with pytest.raises(SigningKeyError, match="a passphrase is needed"):
        keys.load_private_key(signer.encrypted_pem, None)


def test_unencrypted_pkcs8_loads(signer: TestSigner, tmp_path: Path) -> None:
    files = signer.write_keys(tmp_path)
    key = keys.load_private_key_file(files.pkcs8_private_key)
    assert key.private_numbers() == signer.private_key.private_numbers()


def test_excessive_scrypt_cost_is_refused_before_deriving(signer: TestSigner) -> None:
    document = _encrypted_document(signer.encrypted_pem)
    document["kdf"]["params"]["N"] = 1 << 30
    with pytest.raises(SigningKeyError, match="out of range"):
        keys.load_private_key(_pem("ENCRYPTED SIGSTORE PRIVATE KEY", document), TEST_PASSPHRASE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["kdf"].update(name="pbkdf2"), "only scrypt"),
        (lambda d: d["cipher"].update(name="aes"), "only nacl/secretbox"),
        (lambda d: d["kdf"]["params"].update(r="8"), "malformed scrypt"),
        (lambda d: d["cipher"].update(nonce="AAAA"), "nonce"),
        (lambda d: d.update(ciphertext="!!"), "not base64"),
        (lambda d: d.pop("ciphertext"), "lacks 'ciphertext'"),
    ],
)
def test_malformed_encrypted_keys(signer: TestSigner, change, message: str) -> None:
    document = _encrypted_document(signer.encrypted_pem)
    change(document)
    with pytest.raises(SigningKeyError, match=message):
        keys.load_private_key(_pem("ENCRYPTED SIGSTORE PRIVATE KEY", document), TEST_PASSPHRASE)


def test_other_private_key_formats_are_refused() -> None:
    sec1 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match="found 'EC PRIVATE KEY'"):
        keys.load_private_key(sec1)
    edwards = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match="only ECDSA"):
        keys.load_private_key(edwards)
    with pytest.raises(SigningKeyError, match="no PEM block"):
        keys.load_private_key(b"not a key")


def test_public_key_loads_and_verifies(signer: TestSigner, tmp_path: Path) -> None:
    files = signer.write_keys(tmp_path)
    public = keys.load_public_key_file(files.public_key)
    signature = keys.sign(signer.private_key, b"payload")
    assert keys.verify(public, b"payload", signature)
    assert not keys.verify(public, b"payload!", signature)
    assert not keys.verify(public, b"payload", b"\x30\x00")


def test_public_key_errors(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"cannot read public key .*missing.pub"):
        keys.load_public_key_file(tmp_path / "missing.pub")
    edwards = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SigningKeyError, match="only ECDSA public keys"):
        keys.load_public_key(edwards)
    with pytest.raises(SigningKeyError, match="expected a PEM PUBLIC KEY"):
        keys.load_public_key(TestSigner().pkcs8_pem)
    with pytest.raises(SigningKeyError, match="malformed public key"):
        keys.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError, match="no END line"):
        keys.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n")


def test_passphrase_file_is_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(b"first line \nsecond\n")
    assert keys.read_passphrase_file(path) == b"first line "
    path.write_bytes(b"no newline")
    assert keys.read_passphrase_file(path) == b"no newline"
    with pytest.raises(SigningKeyError, match="cannot read passphrase file"):
        keys.read_passphrase_file(tmp_path / "absent")
