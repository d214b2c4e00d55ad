"""Keys for the signing tests: JWK Sets written to files, HMAC keys, tokens of a carrier."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from opentelemetry.context import Context

import otel_identity as oi
from otel_identity import _keys

HMAC_A = base64.b64encode(b"a" * 32).decode()
HMAC_B = base64.b64encode(b"b" * 32).decode()


def ed25519_private(kid: str) -> dict[str, Any]:
    """One new Ed25519 private JWK."""
    return dict(_keys.new_ed25519_jwks(kid)["keys"][0])


def public_of(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "d"}


def oct_jwk(kid: str, secret: bytes = b"o" * 32) -> dict[str, Any]:
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return {"kty": "oct", "kid": kid, "k": k}


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    """Write a JWK Set the way a mounted secret changes: a new file renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"keys": list(keys)}), encoding="utf-8")
    os.replace(tmp, path)
    return path


def carrier_for(
    *, context: Context | None = None, hop: str | None = None, **claims: Any
) -> dict[str, str]:
    carrier: dict[str, str] = {}
    ctx = oi.set_identity(context=context if context is not None else Context(), **claims)
    oi.inject(carrier, context=ctx, hop=hop)
    return carrier


def token_in(carrier: dict[str, str], sig_key: str = "identity.sig") -> str | None:
    """The ``identity.sig`` member of a carrier's baggage header, as sent."""
    for member in carrier.get("baggage", "").split(","):
        name, _, value = member.partition("=")
        if name.strip() == sig_key:
            return value.strip()
    return None
