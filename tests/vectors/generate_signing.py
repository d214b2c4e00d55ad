"""Writes ``signing.json``: test vectors of the ``identity.sig`` tokens, for other languages.

    python tests/vectors/generate_signing.py > tests/vectors/signing.json

Keys are fixed (derived from constant seeds), ``exp`` is far in the future and Ed25519 is
deterministic, so the output is the same on every run; ``tests/core/test_signing_vectors.py``
checks the file against the library.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from otel_identity import _keys, _signing
from otel_identity._identity import Identity

EXP = 99_999_999  # minutes since the epoch: the year 2160
HMAC_KEY = hashlib.sha256(b"otel-identity vector hmac key").digest()
ED25519_SEED = hashlib.sha256(b"otel-identity vector ed25519 key").digest()

CLAIMS: list[dict[str, Any]] = [
    {"user_id": "u-42", "tenant_id": "acme", "session_id": None, "roles": []},
    {"user_id": "u-42", "tenant_id": "acme", "session_id": "s-1", "roles": ["admin", "analyst"]},
    {"user_id": "ada lovelace", "tenant_id": None, "session_id": None, "roles": []},
    {"user_id": None, "tenant_id": "t-only", "session_id": None, "roles": ["ops"]},
    {
        "user_id": 'quote " and back\\slash',
        "tenant_id": "100% + ; , =",
        "session_id": None,
        "roles": ["a b", "c;d"],
    },
    {"user_id": "Zo\u00eb \u5f20\u4f1f", "tenant_id": "caf\u00e9", "session_id": None, "roles": []},
    {"user_id": "emoji \U0001f600", "tenant_id": "acme", "session_id": None, "roles": []},
]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _token(key: _keys.Key, claims: Identity) -> tuple[str, str]:
    message = _signing.canonical(key.version, key.kid, EXP, claims.claims())
    signature = _signing._signature(key, message)
    return message.decode("ascii"), f"{key.version}.{key.kid}.{EXP}.{_b64url(signature)}"


def build() -> dict[str, Any]:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    hmac_key = _keys.Key("vec-hmac", "oct", HMAC_KEY, private=True)
    ed_key = _keys.Key("vec-ed25519", "ed25519", (private, private.public_key()), private=True)
    jwks = {
        "keys": [
            {"kty": "oct", "kid": "vec-hmac", "alg": "HS256", "k": _b64url(HMAC_KEY)},
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": "vec-ed25519",
                "alg": "EdDSA",
                "x": _b64url(public),
                "d": _b64url(ED25519_SEED),
            },
        ]
    }
    vectors = []
    for claims in CLAIMS:
        identity = Identity(
            claims["user_id"], claims["tenant_id"], claims["session_id"], tuple(claims["roles"])
        )
        for key in (hmac_key, ed_key):
            message, token = _token(key, identity)
            vectors.append({"claims": claims, "kid": key.kid, "message": message, "token": token})
    first = CLAIMS[0]
    v1, v2 = vectors[0]["token"], vectors[1]["token"]
    old = _signing.canonical("v1", "vec-hmac", 1000, ("u-42", "acme", None, ()))
    expired = f"v1.vec-hmac.1000.{_b64url(_signing._signature(hmac_key, old))}"
    # 43 characters carry 258 bits for 32 bytes: flipping a spare bit spells the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = v1[:-1] + alphabet[alphabet.index(v1[-1]) ^ 1]
    invalid = [
        (v1.replace(".vec-hmac.", ".vec-ed25519."), first, "unknown_key"),
        ("v2" + v2[2:].replace(".vec-ed25519.", ".vec-hmac."), first, "unknown_key"),
        (v1.replace(".vec-hmac.", ".nobody."), first, "unknown_key"),
        (v1, {**first, "user_id": "u-43"}, "bad_signature"),
        (v1, {**first, "roles": ["admin"]}, "bad_signature"),
        (v2, {**first, "tenant_id": "other"}, "bad_signature"),
        (v1.replace(f".{EXP}.", f".0{EXP}."), first, "malformed"),
        (v1.replace(f".{EXP}.", ".\u00b2."), first, "malformed"),
        (v1 + "=", first, "malformed"),
        (v1.replace("v1.", "v3.", 1), first, "malformed"),
        (v1[:-2], first, "malformed"),
        (spare, first, "malformed"),
        (expired, first, "expired"),
    ]
    return {
        "description": (
            "identity.sig test vectors; see docs/trust.md. 'message' is the canonical "
            "message that the token's signature covers (UTF-8 of an ASCII string); exp is "
            "in minutes since the Unix epoch."
        ),
        "now_minutes": EXP - 5,
        "exp": EXP,
        "jwks": jwks,
        "valid": vectors,
        "invalid": [
            {"token": token.replace("\\u00b2", "\u00b2"), "claims": claims, "reason": reason}
            for token, claims, reason in invalid
        ],
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2, ensure_ascii=True)
    sys.stdout.write("\n")
