"""The devnet's Ed25519 receipt key: given, read from a file (hex or raw), or generated."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

KeyLike = Ed25519PrivateKey | bytes | str


def key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def to_key(value: KeyLike) -> Ed25519PrivateKey:
    """A private key from an object, 32 raw bytes, or 64 hex characters."""
    if isinstance(value, Ed25519PrivateKey):
        return value
    if isinstance(value, str):
        value = bytes.fromhex(value.strip())
    if len(value) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes (or 64 hex characters)")
    return Ed25519PrivateKey.from_private_bytes(value)


def load_or_create_key_file(path: str | Path) -> Ed25519PrivateKey:
    """Read a key file (hex text or 32 raw bytes); create one (hex, mode 0600) if missing."""
    path = Path(path)
    if path.exists():
        data = path.read_bytes()
        if len(data) == 32:
            return to_key(data)
        return to_key(data.decode("ascii"))
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key_bytes(key).hex() + "\n")
    return key
