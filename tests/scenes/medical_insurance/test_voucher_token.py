"""The QR token alone: signed payload, tampering, another node's key, bad forms."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from citybrain.scenes.medical_insurance import voucher_token as vt

KEY = Ed25519PrivateKey.generate()


def _token(**over: object) -> str:
    args = {
        "issuer": "370100",
        "voucher_id": "V1",
        "device": vt.device_tag("phone-1"),
        "issued_at": 1_764_547_200,
        "ttl": 60,
        **over,
    }
    return vt.sign(KEY, **args)  # type: ignore[arg-type]


def test_a_signed_token_reads_back_and_names_no_person() -> None:
    token = _token()
    claims = vt.verify(KEY.public_key(), token)
    assert (claims.issuer, claims.voucher_id, claims.expires_at) == ("370100", "V1", 1_764_547_260)
    assert claims.device_tag == vt.device_tag("phone-1") != "phone-1"
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert set(payload) == {"i", "v", "d", "t", "e", "n"}
    assert _token() != _token()  # a fresh nonce each time


def test_a_changed_payload_or_another_key_is_forged() -> None:
    prefix, payload, signature = _token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["v"] = "V2"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(vt.TokenRefused) as exc:
        vt.verify(KEY.public_key(), f"{prefix}.{changed}.{signature}")
    assert exc.value.reason == "forged"
    other = vt.sign(
        Ed25519PrivateKey.generate(),
        issuer="370100",
        voucher_id="V1",
        device="d",
        issued_at=1,
        ttl=60,
    )
    with pytest.raises(vt.TokenRefused) as exc:
        vt.verify(KEY.public_key(), other)
    assert exc.value.reason == "forged"


@given(st.text(max_size=600))
def test_any_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(vt.TokenRefused) as exc:
        vt.verify(KEY.public_key(), text)
    assert exc.value.reason in ("malformed", "forged")


def test_a_signature_cut_short_or_with_a_bit_flipped_is_forged() -> None:
    body, _, signature = _token().rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    flipped = bytes([raw[0] ^ 1]) + raw[1:]
    for bad in (raw[:63], raw + b"\0", flipped, b""):
        text = base64.urlsafe_b64encode(bad).rstrip(b"=").decode()
        with pytest.raises(vt.TokenRefused) as exc:
            vt.verify(KEY.public_key(), f"{body}.{text}")
        assert exc.value.reason in ("forged", "malformed")
    # one key object verifies its own tokens only, however many keys the process has met
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    publics = [k.public_key() for k in keys]
    for signer in keys:
        token = vt.sign(signer, issuer="370100", voucher_id="V", device="d", issued_at=1, ttl=60)
        verdicts = []
        for public in publics:
            try:
                vt.verify(public, token)
                verdicts.append(True)
            except vt.TokenRefused:
                verdicts.append(False)
        assert verdicts == [k is signer for k in keys]
