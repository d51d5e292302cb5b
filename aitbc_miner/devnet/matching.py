"""Dispatch rules: which queued job a polling miner may take (spec fact 6)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..protocol import CONSTRAINT_KEYS_2026_08, Constraints, Dialect
from .store import Job, Miner

BASE_CONSTRAINT_KEYS: tuple[str, ...] = tuple(Constraints.model_fields)

# 2026-08 defaults: the real schema's flags default to False, the rest to null.
_FLAG_KEYS = frozenset(
    {"zk_proof_required", "tee_attestation_required", "bond_required", "confidential"})


def full_constraints(given: dict[str, Any] | None, dialect: Dialect) -> dict[str, Any]:
    """Every constraint key present (nulls for unset), client extras kept."""
    out: dict[str, Any] = {key: None for key in BASE_CONSTRAINT_KEYS}
    if dialect is Dialect.V2026_08:
        out.update({key: (False if key in _FLAG_KEYS else None) for key in CONSTRAINT_KEYS_2026_08})
    out.update(given or {})
    return out


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _gpus(capabilities: dict[str, Any]) -> list[dict[str, Any]]:
    gpus = capabilities.get("gpus") or []
    return [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []


def _hardware_ok(c: dict[str, Any], caps: dict[str, Any]) -> bool:
    gpus = _gpus(caps)
    if c.get("gpu") and c["gpu"] not in [g.get("name") for g in gpus]:
        return False
    vram = _float(c.get("min_vram_gb"))
    if vram:
        needed_mb = vram * 1024
        if not any((_float(g.get("memory_mb")) or 0) >= needed_mb for g in gpus):
            return False
    if c.get("cuda"):
        cuda = caps.get("cuda")
        if not cuda or str(c["cuda"]) not in str(cuda):
            return False
    return True


def _market_ok(c: dict[str, Any], caps: dict[str, Any], miner: Miner) -> bool:
    models = c.get("models")
    if models:
        available = caps.get("models") or []
        if not isinstance(available, list) or not set(models) <= set(available):
            return False
    max_price = _float(c.get("max_price"))
    if c.get("max_price") is not None:
        price = _float(caps.get("price"))
        if price is None or max_price is None or price > max_price:
            return False
    min_rep = _float(c.get("min_reputation"))
    return min_rep is None or miner.reputation >= min_rep


def satisfies(job: Job, miner: Miner) -> bool:
    """Constraints matched against capability keys gpus, cuda, models, price, and region."""
    c = job.constraints or {}
    if c.get("region") and c["region"] != miner.region:
        return False
    caps = miner.capabilities or {}
    return _hardware_ok(c, caps) and _market_ok(c, caps, miner)


def has_room(miner: Miner) -> bool:
    """The real coordinator's test: concurrency 0 means unlimited (kept quirk)."""
    return not (miner.concurrency and miner.inflight >= miner.concurrency)


def outranked(job: Job, miner: Miner, others: Iterable[Miner]) -> bool:
    """2026-08: another idle ONLINE miner with a higher reputation could take this job."""
    return any(
        other.id != miner.id
        and other.status == "ONLINE"
        and other.inflight == 0
        and other.reputation > miner.reputation
        and satisfies(job, other)
        for other in others
    )
