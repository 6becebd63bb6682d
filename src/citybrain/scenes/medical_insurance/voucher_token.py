"""The dynamic QR payload of the e-voucher: a short token signed with the node's Ed25519 key.

Form: ``CBV1.<payload>.<signature>``, both parts unpadded base64url. The payload is compact
JSON ``{"i": issuing node, "v": voucher id, "d": device tag, "t": issued, "e": expires,
"n": nonce}`` (seconds since the epoch). The signature covers ``CBV1.<payload>``. The token
names no person: the voucher id is looked up at the issuing node, so a photographed QR shows
nothing personal. Pure functions, no storage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

PREFIX = "CBV1."
MAX_TOKEN_CHARS = 512


class TokenRefused(Exception):
    """The token is not one this node signed, or is not well formed; `reason` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class VoucherClaims:
    """What a verified token says: issuer, voucher, device tag, window and nonce."""

    issuer: str
    voucher_id: str
    device_tag: str
    issued_at: int
    expires_at: int
    nonce: str


def device_tag(device_id: str) -> str:
    """Return the short hash of a device id that tokens carry (never the id itself)."""
    return hashlib.sha256(device_id.encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(
    key: Ed25519PrivateKey,
    *,
    issuer: str,
    voucher_id: str,
    device: str,
    issued_at: int,
    ttl: int,
) -> str:
    """Sign a token for a voucher and device tag, valid from issued_at for ttl seconds."""
    claims = {
        "i": issuer,
        "v": voucher_id,
        "d": device,
        "t": issued_at,
        "e": issued_at + ttl,
        "n": _b64(secrets.token_bytes(12)),
    }
    body = PREFIX + _b64(orjson.dumps(claims))
    return body + "." + _b64(key.sign(body.encode()))


# libsodium's verifier of each node key met (a node has one; tests make a few), by the key
# object, which the entry keeps alive so that its id is not reused
_verifiers: dict[int, tuple[Ed25519PublicKey, VerifyKey]] = {}


def _verifier(public: Ed25519PublicKey) -> VerifyKey:
    """The libsodium verifier of a public key: a settlement's check takes half the time."""
    found = _verifiers.get(id(public))
    if found is not None and found[0] is public:
        return found[1]
    if len(_verifiers) >= 64:
        _verifiers.clear()
    verifier = VerifyKey(public.public_bytes_raw())
    _verifiers[id(public)] = (public, verifier)
    return verifier


def verify(public: Ed25519PublicKey, token: str) -> VoucherClaims:
    """Check the form and signature of a token and return its claims; raise TokenRefused."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX):
        raise TokenRefused("malformed", "this is not an e-voucher code (CBV1.…)")
    body, dot, signature = token.rpartition(".")
    if not dot or body == PREFIX.rstrip("."):
        raise TokenRefused("malformed", "the e-voucher code is cut short")
    try:
        raw_sig = _unb64(signature)
        if len(raw_sig) != 64:
            raise ValueError("an Ed25519 signature has 64 bytes")
        _verifier(public).verify(body.encode(), raw_sig)
    except (CryptoError, ValueError, binascii.Error):
        raise TokenRefused(
            "forged", "the e-voucher code does not carry this node's signature"
        ) from None
    try:
        claims = orjson.loads(_unb64(body[len(PREFIX) :]))
        return VoucherClaims(
            issuer=str(claims["i"]),
            voucher_id=str(claims["v"]),
            device_tag=str(claims["d"]),
            issued_at=int(claims["t"]),
            expires_at=int(claims["e"]),
            nonce=str(claims["n"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        # signed by this node yet unreadable: only a bug of an older version could do it
        raise TokenRefused("malformed", "the e-voucher code's content is unreadable") from None
