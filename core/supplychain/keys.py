"""Keys for cosign-style signatures: public keys to verify with, private keys to sign with.

- Public keys are PEM ``PUBLIC KEY`` (PKIX), as ``cosign generate-key-pair`` writes
  ``cosign.pub``. ECDSA keys are supported (cosign's are P-256); signatures are ASN.1 DER
  ECDSA over SHA-256 of the payload, the hash containers/image uses for every key.
- Private keys are sigstore's encrypted PEM (``ENCRYPTED SIGSTORE PRIVATE KEY``, or the
  older ``ENCRYPTED COSIGN PRIVATE KEY`` label): base64 of a JSON document
  ``{"kdf":{"name":"scrypt","params":{"N":…,"r":8,"p":1},"salt":B64},
  "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}`` — scrypt derives a
  32-byte key from the passphrase, NaCl secretbox (XSalsa20-Poly1305) seals the PKCS#8 DER
  key. An unencrypted PKCS#8 PEM (``PRIVATE KEY``) is accepted too.

Errors are one line naming the key (its file, or "key data"), never the passphrase or key
bytes. The scrypt cost is read from the file but bounded: a file asking for more than
:data:`MAX_SCRYPT_N` is refused rather than allowed to exhaust memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealpy.core.supplychain.errors import SigningKeyError

SIGSTORE_PRIVATE_KEY_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PRIVATE_KEY_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
_ENCRYPTED_LABELS = (SIGSTORE_PRIVATE_KEY_LABEL, COSIGN_PRIVATE_KEY_LABEL)

# What sigstore writes (N=2^15, r=8, p=1; newer releases 2^16), with room for stronger
# settings; 2^18 with r=8 needs 256 MiB, the most we let a key file ask for.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
MAX_SCRYPT_N = 1 << 18
_SALT_BYTES, _NONCE_BYTES, _KEY_BYTES = 32, 24, 32

PublicKey = ec.EllipticCurvePublicKey
PrivateKey = ec.EllipticCurvePrivateKey


# --- PEM ----------------------------------------------------------------------------------


def _pem_blocks(data: bytes, what: str) -> list[tuple[str, bytes]]:
    """(label, body) of each PEM block; headers inside a block are not supported."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SigningKeyError(f"{what}: not a PEM file") from None
    blocks = []
    label: str | None = None
    body: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if label is None:
            if line.startswith("-----BEGIN ") and line.endswith("-----"):
                label, body = line[11:-5], []
            continue
        if line == f"-----END {label}-----":
            try:
                blocks.append((label, base64.b64decode("".join(body), validate=True)))
            except binascii.Error:
                raise SigningKeyError(f"{what}: PEM block {label!r} is not valid base64") from None
            label = None
        else:
            body.append(line)
    if label is not None:
        raise SigningKeyError(f"{what}: PEM block {label!r} has no END line")
    if not blocks:
        raise SigningKeyError(f"{what}: no PEM block found")
    return blocks


def _pem(label: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    text = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
    return text.encode()


# --- public keys --------------------------------------------------------------------------


def load_public_key(data: bytes, *, what: str = "public key") -> PublicKey:
    """An ECDSA public key from PEM ``PUBLIC KEY`` text (cosign's ``cosign.pub``)."""
    blocks = _pem_blocks(data, what)
    label, der = blocks[0]
    if label != "PUBLIC KEY":
        raise SigningKeyError(f"{what}: expected a PEM PUBLIC KEY, found {label[:40]!r}")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{what}: malformed public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningKeyError(
            f"{what}: only ECDSA public keys are supported (cosign's default), "
            f"not {type(key).__name__.removeprefix('_')}"
        )
    return key


def load_public_key_file(path: str | Path) -> PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    return load_public_key(data, what=f"public key {path}")


def public_key_pem(key: PublicKey | PrivateKey) -> bytes:
    """The PEM ``PUBLIC KEY`` of a key (of a private key: its public half)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify(key: PublicKey, payload: bytes, signature_der: bytes) -> bool:
    """Whether ``signature_der`` (ASN.1 DER ECDSA) signs SHA-256 of ``payload`` with ``key``."""
    try:
        key.verify(signature_der, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# --- private keys -------------------------------------------------------------------------


def sign(key: PrivateKey, payload: bytes) -> bytes:
    """The ASN.1 DER ECDSA-SHA256 signature of ``payload`` (what cosign puts, base64, in
    the layer annotation)."""
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def generate_private_key() -> PrivateKey:
    """A new ECDSA P-256 key, as ``cosign generate-key-pair`` makes."""
    return ec.generate_private_key(ec.SECP256R1())


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase, salt=salt, n=n, r=r, p=p, maxmem=129 * r * n * p + (1 << 20), dklen=_KEY_BYTES
    )


def encrypt_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    """``key`` in sigstore's encrypted PEM format (what ``cosign generate-key-pair`` writes
    to ``cosign.key``), sealed with ``passphrase``."""
    import nacl.secret

    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    document = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return _pem(SIGSTORE_PRIVATE_KEY_LABEL, json.dumps(document, separators=(",", ":")).encode())


def unencrypted_private_key_pem(key: PrivateKey) -> bytes:
    """``key`` as an unencrypted PKCS#8 PEM (``PRIVATE KEY``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _b64_field(container: object, name: str, what: str) -> bytes:
    value = container.get(name) if isinstance(container, dict) else None
    if not isinstance(value, str):
        raise SigningKeyError(f"{what}: encrypted key lacks {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SigningKeyError(f"{what}: encrypted key field {name!r} is not base64") from None


def _decrypt(body: bytes, passphrase: bytes, what: str) -> bytes:
    import nacl.exceptions
    import nacl.secret

    try:
        document = json.loads(body)
    except ValueError:
        raise SigningKeyError(f"{what}: encrypted key is not sigstore's JSON format") from None
    if not isinstance(document, dict):
        raise SigningKeyError(f"{what}: encrypted key is not sigstore's JSON format")
    kdf, cipher = document.get("kdf"), document.get("cipher")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise SigningKeyError(f"{what}: unsupported key derivation (only scrypt)")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise SigningKeyError(f"{what}: unsupported cipher (only nacl/secretbox)")
    params = kdf.get("params")
    values = [params.get(k) if isinstance(params, dict) else None for k in ("N", "r", "p")]
    n, r, p = (v if isinstance(v, int) and not isinstance(v, bool) else 0 for v in values)
    if min(n, r, p) <= 0:
        raise SigningKeyError(f"{what}: malformed scrypt parameters")
    if n > MAX_SCRYPT_N or n & (n - 1) or r > 32 or p > 16:
        raise SigningKeyError(f"{what}: scrypt parameters out of range (N={n}, r={r}, p={p})")
    salt = _b64_field(kdf, "salt", what)
    nonce = _b64_field(cipher, "nonce", what)
    ciphertext = _b64_field(document, "ciphertext", what)
    if len(nonce) != _NONCE_BYTES:
        raise SigningKeyError(f"{what}: the nonce is not {_NONCE_BYTES} bytes")
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, n, r, p))
    try:
        return box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise SigningKeyError(f"{what}: wrong passphrase, or the key file is corrupt") from None


def load_private_key(
    data: bytes, passphrase: bytes | str | None = None, *, what: str = "private key"
) -> PrivateKey:
    """An ECDSA private key from sigstore's encrypted PEM (needs ``passphrase``; an empty
    passphrase is valid: cosign writes such keys when none is given) or an unencrypted
    PKCS#8 PEM."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    label, body = _pem_blocks(data, what)[0]
    if label in _ENCRYPTED_LABELS:
        if passphrase is None:
            raise SigningKeyError(f"{what}: the key is encrypted; a passphrase is needed")
        der = _decrypt(body, passphrase, what)
    elif label == "PRIVATE KEY":
        der = body
    else:
        raise SigningKeyError(
            f"{what}: expected {SIGSTORE_PRIVATE_KEY_LABEL!r} or an unencrypted PKCS#8 "
            f"'PRIVATE KEY', found {label[:40]!r}"
        )
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{what}: malformed PKCS#8 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(f"{what}: only ECDSA private keys are supported")
    return key


def load_private_key_file(path: str | Path, passphrase: bytes | str | None = None) -> PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read private key {path}: {exc.strerror or exc}") from None
    return load_private_key(data, passphrase, what=f"private key {path}")


def read_passphrase_file(path: str | Path) -> bytes:
    """The first line of ``path``, without its newline, as skopeo's
    ``--sign-passphrase-file`` reads it."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read passphrase file {path}: {exc.strerror or exc}"
        ) from None
    return line.removesuffix(b"\n")
