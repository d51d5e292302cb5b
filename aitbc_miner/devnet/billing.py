"""Receipts and earnings: what a /result call bills, signed as the real coordinator signs."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..protocol import Dialect
from ..receipts import sign
from .store import Job

DEFAULT_UNIT_TYPE = "gpu_seconds"
DEFAULT_UNIT_PRICE = 0.02


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def billed_units(result: dict[str, Any], metrics: dict[str, Any]) -> float:
    """First present of metrics.units, result.units, metrics.duration_ms/1000, then durations."""
    units = _float(_first(metrics.get("units"), result.get("units")))
    if units is not None:
        return units
    duration_ms = _float(metrics.get("duration_ms"))
    if duration_ms is not None:
        return duration_ms / 1000.0
    seconds = _float(
        _first(
            metrics.get("duration_seconds"),
            metrics.get("compute_time"),
            result.get("execution_time"),
            result.get("duration"),
        )
    )
    return seconds if seconds is not None else 0.0


def _price(
    result: dict[str, Any], metrics: dict[str, Any], units: float, unit_price: float
) -> float:
    keys = ("price", "aitbc_earned", "cost")
    sent = _float(_first(*(d.get(k) for k in keys for d in (metrics, result))))
    return sent if sent is not None else round(units * unit_price, 6)


def build_receipt(
    job: Job,
    provider: str,
    result: dict[str, Any],
    metrics: dict[str, Any],
    *,
    now: float,
    key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """The signed receipt of one /result call (spec, Receipts)."""
    units = billed_units(result, metrics)
    unit_price = _float(_first(metrics.get("unit_price"), result.get("unit_price")))
    unit_price = DEFAULT_UNIT_PRICE if unit_price is None else unit_price
    body = {
        "version": "1.0",
        "receipt_id": secrets.token_hex(16),
        "job_id": job.id,
        "provider": provider,
        "client": job.client,
        "status": "COMPLETED",
        "units": units,
        "unit_type": _first(metrics.get("unit_type"), result.get("unit_type"), DEFAULT_UNIT_TYPE),
        "unit_price": unit_price,
        "price": _price(result, metrics, units, unit_price),
        "started_at": int(job.requested_at),
        "completed_at": int(now),
        "metadata": {
            "job_payload": job.payload,
            "job_constraints": job.constraints,
            "result": result,
            "metrics": metrics,
        },
    }
    return sign(body, key)


def add_post_signing_keys(receipt: dict[str, Any], constraints: dict[str, Any]) -> None:
    """2026-08 adds these after signing; they are outside the signed bytes."""
    zk = "pending" if constraints.get("zk_proof_required") else "not_requested"
    tee = "pending" if constraints.get("tee_attestation_required") else "not_requested"
    reinvest = "pending" if constraints.get("auto_reinvest_pct") else "not_requested"
    receipt.update(
        {
            "zk_status": zk,
            "zk_proof": None,
            "tee_status": tee,
            "tee_attestation_id": None,
            "tee_quote": None,
            "reinvest_status": reinvest,
            "reinvest_stake_id": None,
            "reinvest_amount": None,
        }
    )


def finish_receipt(receipt: dict[str, Any], job: Job, dialect: Dialect) -> dict[str, Any]:
    if dialect is Dialect.V2026_08:
        add_post_signing_keys(receipt, job.constraints or {})
    return receipt


def earnings(miner_id: str, receipts: list[dict[str, Any]]) -> dict[str, Any]:
    """2026-08 ``/miners/{id}/earnings``: one history entry per receipt, all pending."""
    total = round(sum(float(r.get("price") or 0.0) for r in receipts), 6)
    return {
        "miner_id": miner_id,
        "total_earnings": total,
        "pending_earnings": total,
        "paid_earnings": 0.0,
        "completed_jobs": len({r["job_id"] for r in receipts}),
        "currency": "AITBC",
        "earnings_history": [
            {
                "job_id": r["job_id"],
                "amount": str(r.get("price")),
                "currency": "AITBC",
                "payment_status": "pending",
            }
            for r in receipts
        ],
    }


def empty_earnings(miner_id: str, error: str) -> dict[str, Any]:
    """Errors come back as 200 with an ``error`` key (spec)."""
    out = earnings(miner_id, [])
    out["error"] = error
    return out
