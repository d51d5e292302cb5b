"""Who is calling: the 2026-01 / 2026-08 credential and identity rules of the spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import Dialect
from . import errors
from .errors import HttpError
from .tokens import bearer_token, decode_jwt, make_jwt


@dataclass(frozen=True, slots=True)
class AuthConfig:
    dialect: Dialect
    miner_keys: frozenset[str]
    client_key: str
    jwt_secret: str


def _jwt_claims(cfg: AuthConfig, headers: Mapping[str, str], now: float) -> dict[str, Any] | None:
    token = bearer_token(headers.get("Authorization"))
    return None if token is None else decode_jwt(token, cfg.jwt_secret, now=now)


def miner_identity(cfg: AuthConfig, headers: Mapping[str, str], now: float) -> str:
    """The miner id of a request, or 401.

    2026-01: the X-Api-Key string itself (X-Miner-ID ignored). 2026-08: X-Miner-ID when
    sent, else the key string (or the JWT ``sub`` when authenticated by a miner token).
    """
    key = headers.get("X-Api-Key")
    key_ok = key is not None and key in cfg.miner_keys
    if cfg.dialect is Dialect.V2026_01:
        if not key_ok:
            raise HttpError(401, errors.INVALID_API_KEY)
        assert key is not None
        return key
    fallback: str | None = key if key_ok else None
    if fallback is None:
        claims = _jwt_claims(cfg, headers, now)
        if claims is not None and claims.get("role") == "miner":
            fallback = str(claims.get("sub") or "")
    if not fallback:
        raise HttpError(401, errors.INVALID_API_KEY if key else errors.MISSING_CREDENTIALS)
    return headers.get("X-Miner-ID") or fallback


def client_identity(cfg: AuthConfig, headers: Mapping[str, str], now: float) -> str:
    """The client id of a request, or 401/403 (2026-08 refuses API keys with 403)."""
    if cfg.dialect is Dialect.V2026_01:
        key = headers.get("X-Api-Key")
        if key is None or key != cfg.client_key:
            raise HttpError(401, errors.INVALID_API_KEY)
        return key
    claims = _jwt_claims(cfg, headers, now)
    if claims is not None and claims.get("role") == "client":
        return str(claims.get("sub") or "client")
    if headers.get("X-Api-Key") is not None:
        raise HttpError(403, errors.API_KEY_FORBIDDEN)
    if claims is not None:
        raise HttpError(403, errors.WRONG_ROLE)
    if headers.get("Authorization"):
        raise HttpError(401, errors.INVALID_TOKEN)
    raise HttpError(401, errors.MISSING_CREDENTIALS)


def client_headers(
    dialect: Dialect | str,
    *,
    client_key: str,
    jwt_secret: str,
    client_id: str = "devnet-client",
) -> dict[str, str]:
    """Headers that authenticate a client route on ``dialect``."""
    if Dialect(dialect) is Dialect.V2026_01:
        return {"X-Api-Key": client_key}
    return {"Authorization": f"Bearer {make_jwt(jwt_secret, sub=client_id, role='client')}"}


def miner_headers(key: str, miner_id: str | None = None) -> dict[str, str]:
    """What a miner sends on both lines: its key, and its id (ignored by 2026-01)."""
    headers = {"X-Api-Key": key}
    if miner_id is not None:
        headers["X-Miner-ID"] = miner_id
    return headers
