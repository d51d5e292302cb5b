"""The coordinator's behaviour, quirks included, over the sqlite store.

Each public method is one endpoint: it reads and writes the store, commits, and returns
the JSON body (or raises ``HttpError``). Nothing here knows about HTTP transport, so the
web layer can wrap any call with faults (act, then drop the connection, for instance).
"""

from __future__ import annotations

import uuid
from contextlib import closing
from dataclasses import fields
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..protocol import (
    CreateJobRequest,
    Dialect,
    FailRequest,
    HeartbeatRequest,
    JobState,
    RegisterRequest,
    ResultRequest,
)
from . import billing, errors
from .clock import Clock, iso_naive_utc
from .errors import HttpError
from .matching import full_constraints, has_room, outranked, satisfies
from .store import Job, Miner, Store

_LIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
_HEARTBEAT_EXTRAS_2026_08 = ("architecture", "edge_optimized", "network_latency_ms")


class Coordinator:
    def __init__(
        self,
        store: Store,
        dialect: Dialect,
        clock: Clock,
        signing_key: Ed25519PrivateKey | None,
    ) -> None:
        self.store = store
        self.dialect = dialect
        self.clock = clock
        self.signing_key = signing_key

    # --- helpers -----------------------------------------------------------------

    def _miner(self, miner_id: str, detail: str = errors.MINER_NOT_REGISTERED) -> Miner:
        miner = self.store.get_miner(miner_id)
        if miner is None:
            raise HttpError(404, detail)
        return miner

    def _expire_if_due(self, job: Job) -> bool:
        if job.state in _LIVE and job.expires_at <= self.clock.now():
            job.state, job.error = JobState.EXPIRED.value, errors.JOB_EXPIRED
            self.store.put_job(job)
            return True
        return False

    def _job(self, job_id: str) -> Job:
        """A job as a read sees it: past ``expires_at`` it turns EXPIRED (committed)."""
        job = self.store.get_job(job_id)
        if job is None:
            raise HttpError(404, errors.JOB_NOT_FOUND)
        if self._expire_if_due(job):
            self.store.commit()
        return job

    def _release(self, miner_id: str, *, success: bool) -> None:
        miner = self.store.get_miner(miner_id)
        if miner is None:
            return
        miner.inflight = max(0, miner.inflight - 1)
        if success:
            miner.jobs_completed += 1
        else:
            miner.jobs_failed += 1
        self.store.put_miner(miner)

    def view(self, job: Job) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "state": job.state,
            "assigned_miner_id": job.assigned_miner_id,
            "requested_at": iso_naive_utc(job.requested_at),
            "expires_at": iso_naive_utc(job.expires_at),
            "error": job.error,
        }

    # --- miner endpoints ---------------------------------------------------------

    def register(self, miner_id: str, req: RegisterRequest) -> dict[str, Any]:
        """Create or update; inflight back to 0 and ONLINE (real coordinator)."""
        now = self.clock.now()
        miner = self.store.get_miner(miner_id) or Miner(id=miner_id, registered_at=now)
        miner.capabilities, miner.concurrency, miner.region = (
            req.capabilities,
            req.concurrency,
            req.region,
        )
        miner.session_token = uuid.uuid4().hex
        miner.inflight, miner.status, miner.last_heartbeat = 0, "ONLINE", now
        self.store.put_miner(miner)
        self.store.commit()
        return {"status": "ok", "session_token": miner.session_token}

    def heartbeat(self, miner_id: str, req: HeartbeatRequest) -> dict[str, Any]:
        """Overwrites inflight with the sent value (both lines)."""
        miner = self._miner(miner_id)
        miner.inflight, miner.status = req.inflight, req.status
        metadata = dict(req.metadata)
        if self.dialect is Dialect.V2026_08:
            extras = req.model_extra or {}
            metadata.update({k: extras[k] for k in _HEARTBEAT_EXTRAS_2026_08
                             if extras.get(k) is not None})
        miner.metadata, miner.last_heartbeat = metadata, self.clock.now()
        self.store.put_miner(miner)
        self.store.commit()
        return {"status": "ok"}

    def poll(self, miner_id: str) -> dict[str, Any] | None:
        """FIFO by constraints; None means 204. Unknown miner: the real 500."""
        miner = self.store.get_miner(miner_id)
        if miner is None:
            raise HttpError(500, text="Internal Server Error")
        if not has_room(miner):
            return None
        job = self._next_job_for(miner)
        if job is None:
            self.store.commit()
            return None
        job.state, job.assigned_miner_id = JobState.RUNNING.value, miner.id
        miner.inflight += 1
        miner.last_heartbeat = self.clock.now()
        self.store.put_job(job)
        self.store.put_miner(miner)
        self.store.commit()
        return {
            "job_id": job.id,
            "payload": job.payload,
            "constraints": full_constraints(job.constraints, self.dialect),
        }

    def _next_job_for(self, miner: Miner) -> Job | None:
        others = self.store.miners() if self.dialect is Dialect.V2026_08 else []
        now = self.clock.now()
        expired: list[Job] = []
        chosen: Job | None = None
        with closing(self.store.queued_jobs()) as queued:
            for job in queued:
                if job.expires_at <= now:
                    expired.append(job)
                elif satisfies(job, miner) and not outranked(job, miner, others):
                    chosen = job
                    break
        for job in expired:
            self._expire_if_due(job)
        return chosen

    def result(self, miner_id: str, job_id: str, req: ResultRequest) -> dict[str, Any]:
        """Checks neither state nor holder; every call makes a receipt (real coordinator)."""
        job = self._job(job_id)
        now = self.clock.now()
        metrics = dict(req.metrics)
        if self.dialect is Dialect.V2026_01 and metrics.get("duration_ms") is None:
            metrics["duration_ms"] = int((now - job.requested_at) * 1000)
        job.result, job.state, job.error = req.result, JobState.COMPLETED.value, None
        job.result_calls += 1
        receipt = None
        if self.signing_key is not None:
            receipt = billing.build_receipt(job, miner_id, req.result, metrics, now=now,
                                            key=self.signing_key)
            receipt = billing.finish_receipt(receipt, job, self.dialect)
            self.store.add_receipt(receipt)
        self.store.put_job(job)
        self._release(miner_id, success=True)
        self.store.commit()
        return {"status": "ok", "receipt": receipt}

    def fail(self, miner_id: str, job_id: str, req: FailRequest) -> dict[str, Any]:
        """2026-01 releases the miner's slot; 2026-08 does not (a heartbeat must)."""
        job = self._job(job_id)
        job.state, job.assigned_miner_id = JobState.FAILED.value, miner_id
        if self.dialect is Dialect.V2026_01:
            job.error = f"{req.error_code}: {req.error_message}"
        else:
            job.error = req.error_message
        job.fail_calls += 1
        self.store.put_job(job)
        if self.dialect is Dialect.V2026_01:
            self._release(miner_id, success=False)
        self.store.commit()
        return {"status": "ok"}

    def earnings(self, miner_id: str) -> dict[str, Any]:
        if self.store.get_miner(miner_id) is None:
            return billing.empty_earnings(miner_id, errors.MINER_NOT_FOUND)
        return billing.earnings(miner_id, self.store.receipts(provider=miner_id))

    def deregister(self, miner_id: str) -> dict[str, Any]:
        miner = self._miner(miner_id, errors.MINER_NOT_FOUND)
        miner.status, miner.session_token = "OFFLINE", None
        self.store.put_miner(miner)
        self.store.commit()
        return {"miner_id": miner_id, "status": "deregistered"}

    # --- client endpoints --------------------------------------------------------

    def create_job(self, client: str, req: CreateJobRequest) -> dict[str, Any]:
        now = self.clock.now()
        ttl = max(req.ttl_seconds, 1)
        job = Job(
            id=uuid.uuid4().hex,
            client=client,
            payload=req.payload,
            constraints=full_constraints(req.constraints, self.dialect),
            ttl_seconds=ttl,
            requested_at=now,
            expires_at=now + ttl,
        )
        self.store.put_job(job)
        self.store.commit()
        return self.view(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.view(self._job(job_id))

    def job_result(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        if job.state != JobState.COMPLETED.value:
            raise HttpError(425, errors.JOB_NOT_READY)
        receipts = self.store.receipts(job_id=job_id)
        return {"result": job.result, "receipt": receipts[-1] if receipts else None}

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        if job.state not in _LIVE:
            raise HttpError(409, errors.JOB_NOT_CANCELABLE)
        job.state, job.error, job.assigned_miner_id = (
            JobState.CANCELED.value, errors.CANCELED_BY_CLIENT, None)
        self.store.put_job(job)
        self.store.commit()
        return self.view(job)

    def receipts(self, job_id: str) -> dict[str, Any]:
        self._job(job_id)
        return {"items": self.store.receipts(job_id=job_id)}

    def latest_receipt(self, job_id: str) -> dict[str, Any]:
        self._job(job_id)
        items = self.store.receipts(job_id=job_id)
        if not items:
            raise HttpError(404, errors.RECEIPT_NOT_FOUND)
        return items[-1]

    # --- devnet-only -------------------------------------------------------------

    def set_reputation(self, miner_id: str, reputation: float) -> None:
        miner = self._miner(miner_id, errors.MINER_NOT_FOUND)
        miner.reputation = float(reputation)
        self.store.put_miner(miner)
        self.store.commit()

    def miners_snapshot(self) -> dict[str, dict[str, Any]]:
        return {m.id: _row(m) for m in self.store.miners()}

    def jobs_snapshot(self) -> dict[str, dict[str, Any]]:
        counts = self.store.receipt_counts()
        out = {}
        for job in self.store.jobs():
            row = _row(job)
            row["receipts"] = counts.get(job.id, 0)
            out[job.id] = row
        return out


def _row(record: Job | Miner) -> dict[str, Any]:
    """A stored row as a dict. Shallow: its JSON columns are fresh from the store, and a
    payload nested as deep as JSON lets a client send must not fail a snapshot."""
    return {f.name: getattr(record, f.name) for f in fields(record)}
