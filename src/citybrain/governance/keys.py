"""The node's Ed25519 key: signs tokens and audit checkpoints; kept in the data folder."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from citybrain.core.errors import ServiceUnavailable

KEY_FILE = "keys/node_ed25519.pem"
_cache: dict[Path, Ed25519PrivateKey] = {}
# by the folder as given: resolving the path is a system call on every signed or checked token
_by_dir: dict[Path, Ed25519PrivateKey] = {}


def key_path(data_dir: Path) -> Path:
    """Return where the node's private key lives."""
    return data_dir / KEY_FILE


def node_key(data_dir: Path) -> Ed25519PrivateKey:
    """Load the node's private key, creating it (mode 0600) on first use."""
    known = _by_dir.get(data_dir)
    if known is not None:
        return known
    path = key_path(data_dir).resolve()
    cached = _cache.get(path)
    if cached is not None:
        if data_dir.is_absolute():  # a relative folder means another one after a chdir
            _by_dir[data_dir] = cached
        return cached
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # O_EXCL: two processes starting at once must not write two different keys
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                    out.flush()
                    os.fsync(out.fileno())
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ServiceUnavailable(
            f"cannot read or create the node key {path}: {exc.strerror}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ServiceUnavailable(f"the node key {path} is not an Ed25519 key")
    _cache[path] = key
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Return the PEM text of a public key (for registration with a parent)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str) -> Ed25519PublicKey:
    """Parse a PEM public key, which must be Ed25519."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
