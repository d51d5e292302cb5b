"""HS256 JWTs with the standard library: 2026-08 client (and optional miner) credentials.

The devnet only needs to mint and check its own tokens, so a full JWT library would be
a dependency for ~40 lines of base64 and HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ..receipts import b64url, b64url_decode

DEFAULT_JWT_SECRET = "aitbc-devnet-jwt-secret"
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def _mac(secret: str, signing_input: str) -> bytes:
    return hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()


def make_jwt(secret: str, *, sub: str, role: str, exp: float | None = None) -> str:
    """Mint a token carrying ``sub`` and ``role`` (``client`` or ``miner``)."""
    claims: dict[str, Any] = {"sub": sub, "role": role}
    if exp is not None:
        claims["exp"] = int(exp)
    signing_input = f"{_segment(_HEADER)}.{_segment(claims)}"
    return f"{signing_input}.{b64url(_mac(secret, signing_input))}"


def decode_jwt(token: str, secret: str, *, now: float) -> dict[str, Any] | None:
    """The claims of a well-formed, correctly signed, unexpired HS256 token, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    if not hmac.compare_digest(sig, _mac(secret, f"{parts[0]}.{parts[1]}")):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        return None
    return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
