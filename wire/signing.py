"""Ed25519 keys of fleet members: generate, save and load them.

Private keys are PKCS#8 PEM files readable by the owner only; public keys travel as 64 hex
characters (the fleet registry holds them), or as a PEM file (`{key}.pub`) from the host that made
the key to the operator who enrols it. The `cryptography` package does the keys and signing;
verification, which every received message costs, goes to libsodium (PyNaCl), twice as fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

SIGNATURE_BYTES = 64


class KeyFileError(ValueError):
    """A key file or a public key string that cannot be used."""


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # A temporary file created with 0600 from the start (a chmod after writing leaves a window
    # where it is readable), then renamed over `path`: a key being rotated is the old one or the
    # new one, never half of either.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # the umask may have removed bits, never added any: 0600 exactly
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def signature_is_valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `key`'s Ed25519 signature of `message` (RFC 8032, as libsodium
    checks it: non-canonical encodings and small-order keys are refused)."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, key.public_bytes_raw())
    except BadSignatureError:
        return False
    return True


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise KeyFileError(f"not a hex Ed25519 public key: {text[:16]}...: {exc}") from exc


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public half as a SubjectPublicKeyInfo PEM (what `openssl pkey -pubout` writes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, or from a file holding its 64 hex characters."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        try:
            return parse_public_key(data.decode("ascii").strip())
        except (UnicodeDecodeError, KeyFileError) as exc:
            raise KeyFileError(f"{path} is neither a PEM nor a hex Ed25519 public key") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key
