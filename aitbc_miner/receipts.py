"""Receipt canonical form, Ed25519 signing (devnet) and verification (miner).

The spec's recipe: drop ``signature``, ``attestations`` and the 2026-08 post-signing keys,
recursively drop null values (and null list items), dump with sorted keys and compact
separators in ASCII, and check the URL-safe, unpadded base64 signature against the
raw 32-byte public key in ``key_id``. A receipt always verifies against its own key,
so trust comes from pinning the coordinator's key in the config.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .protocol import POST_SIGNING_KEYS

UNSIGNED_KEYS = frozenset({"signature", "attestations"}) | POST_SIGNING_KEYS


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def canonical_json(value: Any) -> bytes:
    """The spec's canonical form of a JSON value: nulls dropped, keys sorted, compact ASCII
    (also what a rig signs its results over, aitbc_miner.identity.signed_result)."""
    return json.dumps(
        _drop_nulls(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("utf-8")


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """The bytes a coordinator signs: the receipt less its unsigned keys, nulls dropped."""
    return canonical_json({k: v for k, v in receipt.items() if k not in UNSIGNED_KEYS})


def public_key_id(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url(raw)


def sign(receipt: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return ``receipt`` with a ``signature`` block, as the coordinator builds it."""
    signed = dict(receipt)
    signed["signature"] = {
        "alg": "Ed25519",
        "key_id": public_key_id(key),
        "sig": b64url(key.sign(canonical_bytes(receipt))),
    }
    return signed


class Verdict(StrEnum):
    """What the miner concluded about one receipt (stored in the journal)."""

    VALID_PINNED = "valid_pinned"
    VALID_UNPINNED = "valid_unpinned"
    INVALID = "invalid_signature"
    MISMATCH = "mismatch"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Verification:
    verdict: Verdict
    reason: str = ""
    key_id: str | None = None

    @property
    def counted(self) -> bool:
        """Only receipts whose signature holds and whose facts are ours count as earnings."""
        return self.verdict in (Verdict.VALID_PINNED, Verdict.VALID_UNPINNED)


def verify(
    receipt: Any,
    *,
    pinned_key: str | None = None,
    job_id: str | None = None,
    providers: frozenset[str] | None = None,
    units: float | None = None,
) -> Verification:
    """Check a receipt's signature and that it is about our job, our identity and our units.

    ``units`` is what we reported (``metrics.duration_ms / 1000``); the price must then be
    ``round(units * unit_price, 6)`` as the coordinator computes it.
    """
    if not isinstance(receipt, dict):
        return Verification(Verdict.MALFORMED, "receipt is not a JSON object")
    signature = receipt.get("signature")
    if not isinstance(signature, dict) or signature.get("alg") != "Ed25519":
        return Verification(Verdict.MALFORMED, "no Ed25519 signature block")
    key_id, sig = signature.get("key_id"), signature.get("sig")
    if not isinstance(key_id, str) or not isinstance(sig, str):
        return Verification(Verdict.MALFORMED, "signature block lacks key_id or sig")
    try:
        public = Ed25519PublicKey.from_public_bytes(b64url_decode(key_id))
        public.verify(b64url_decode(sig), canonical_bytes(receipt))
    except (InvalidSignature, ValueError, binascii.Error):
        return Verification(Verdict.INVALID, "signature does not match the receipt", key_id)
    mismatches = []
    if job_id is not None and receipt.get("job_id") != job_id:
        mismatches.append("job_id")
    if providers is not None and receipt.get("provider") not in providers:
        mismatches.append("provider")
    if units is not None:
        if not _close(receipt.get("units"), units):
            mismatches.append("units")
        unit_price = receipt.get("unit_price")
        expected = round(units * unit_price, 6) if _is_number(unit_price) else None
        if expected is None or not _close(receipt.get("price"), expected):
            mismatches.append("price")
    if mismatches:
        return Verification(Verdict.MISMATCH, ", ".join(mismatches), key_id)
    if pinned_key and key_id == pinned_key:
        return Verification(Verdict.VALID_PINNED, "", key_id)
    if pinned_key:
        return Verification(Verdict.INVALID, "signed by a key other than the pinned one", key_id)
    return Verification(Verdict.VALID_UNPINNED, "no coordinator key pinned", key_id)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _close(value: Any, expected: float) -> bool:
    return _is_number(value) and abs(float(value) - expected) <= 1e-6 * max(1.0, abs(expected))
