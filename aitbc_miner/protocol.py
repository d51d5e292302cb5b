"""Wire models of the AITBC coordinator protocol (docs/protocol.md).

Every model accepts unknown keys (``extra="allow"``): both released coordinator lines
(2026-01, 2026-08) add fields over time and the miner must not break on them. The
reference coordinator (``aitbc_miner.devnet``) shares these models, never the engine.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

API_PREFIX = "/v1"

# A job id as coordinators issue them (uuid4 hex, or a uuid with dashes): letters, digits,
# '-' and '_', starting with a letter or digit, at most 128 characters. Nothing else is
# ever put into a URL, a path or the journal (docs/hostile-input.md).
JOB_ID_MAX_CHARS = 128
_JOB_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{JOB_ID_MAX_CHARS - 1}}}", re.ASCII)


def is_job_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a job id the miner may store, run and name in a URL."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def shown_job_id(value: object, limit: int = 80) -> str:
    """A possibly hostile job id as a log line may quote it: ASCII-escaped and cut."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Dialect(StrEnum):
    """The two released coordinator lines the miner is checked against."""

    V2026_01 = "2026-01"
    V2026_08 = "2026-08"


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- miner endpoints -------------------------------------------------------------


class GpuCapability(WireModel):
    name: str
    memory_mb: int


class RegisterRequest(WireModel):
    capabilities: dict[str, Any] = Field(default_factory=dict)
    concurrency: int = 1
    region: str | None = None


class RegisterResponse(WireModel):
    status: str
    session_token: str | None = None


class HeartbeatRequest(WireModel):
    inflight: int = 0
    status: str = "ONLINE"
    metadata: dict[str, Any] = Field(default_factory=dict)


class StatusResponse(WireModel):
    status: str


class PollRequest(WireModel):
    # Accepted and ignored by both lines (no long-poll, spec fact 1).
    max_wait_seconds: int = 0


class Constraints(WireModel):
    """Always sent with every key present (nulls for unset); 2026-08 adds more keys."""

    gpu: str | None = None
    cuda: str | None = None
    min_vram_gb: float | None = None
    models: list[str] | None = None
    region: str | None = None
    max_price: float | None = None


class AssignedJob(WireModel):
    """A 200 answer to ``/miners/poll``."""

    job_id: str = Field(min_length=1)
    payload: dict[str, Any]
    constraints: Constraints = Field(default_factory=Constraints)


class ResultRequest(WireModel):
    result: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)


class FailRequest(WireModel):
    error_code: str
    error_message: str
    metrics: dict[str, Any] = Field(default_factory=dict)


class ReceiptSignature(WireModel):
    alg: str
    key_id: str
    sig: str


class Receipt(WireModel):
    version: str = "1.0"
    receipt_id: str
    job_id: str
    provider: str
    client: str | None = None
    status: str
    units: float
    unit_type: str
    unit_price: float
    price: float
    started_at: int | None = None
    completed_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    signature: ReceiptSignature | None = None
    attestations: list[ReceiptSignature] | None = None


class ResultResponse(WireModel):
    status: str
    receipt: dict[str, Any] | None = None


class EarningsEntry(WireModel):
    job_id: str
    amount: str
    currency: str = "AITBC"
    payment_status: str | None = None


class EarningsResponse(WireModel):
    """2026-08 ``POST /miners/{id}/earnings``; errors come back as 200 with ``error``."""

    miner_id: str | None = None
    total_earnings: float | str | None = None
    pending_earnings: float | str | None = None
    paid_earnings: float | str | None = None
    completed_jobs: int | None = None
    currency: str = "AITBC"
    earnings_history: list[EarningsEntry] = Field(default_factory=list)
    error: str | None = None


# --- client endpoints (what tests and the demo feeder play) ----------------------


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


class CreateJobRequest(WireModel):
    payload: dict[str, Any]
    constraints: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = 900


class JobView(WireModel):
    job_id: str
    state: JobState
    assigned_miner_id: str | None = None
    requested_at: str | None = None
    expires_at: str | None = None
    error: str | None = None


# Keys the 2026-08 line adds to a receipt after signing (spec, Receipts).
POST_SIGNING_KEYS: frozenset[str] = frozenset(
    {
        "zk_status",
        "zk_proof",
        "tee_status",
        "tee_attestation_id",
        "tee_quote",
        "reinvest_status",
        "reinvest_stake_id",
        "reinvest_amount",
    }
)

# Constraint keys 2026-08 adds to every assigned job.
CONSTRAINT_KEYS_2026_08: tuple[str, ...] = (
    "zk_proof_required",
    "tee_attestation_required",
    "tee_enclave_id",
    "min_reputation",
    "auto_reinvest_pct",
    "bond_required",
    "min_bond_amount",
    "confidential",
    "required_enclave_measurement",
)
