"""The journal: every job's life in SQLite (WAL), committed before the miner acts on it.

A job moves ``claimed -> running -> staged -> delivered``. ``staged`` means its outcome
(the exact ``/result`` or ``/fail`` body) is on disk and in the outbox. A delivery whose
fate is unknown (the request may have reached the coordinator) is ``uncertain`` until it
is resolved on purpose; one the coordinator refuses for good (404, 422) is ``rejected``.
On start, ``recover()`` turns jobs that were ``claimed``/``running`` when the agent died
into staged ``E_INTERRUPTED`` failures: a job is never run twice.

Each job's rows have one writer at a time: its job task until ``staged``, then the outbox.

Text from outside never fails a write (docs/hostile-input.md): JSON is stored as ASCII
(a lone surrogate stays an escape), a job type that is not a clean name is stored as
NULL, and any other text bound to a statement that is not plain ASCII is scrubbed (lone
surrogates and control characters but tab and newline become U+FFFD).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from .codes import ErrorCode
from .untrusted import name_problem, scrub


class JobState(StrEnum):
    CLAIMED = "claimed"  # the coordinator handed it to us; not started
    RUNNING = "running"  # a runner has it
    STAGED = "staged"  # outcome on disk, waiting in the outbox
    UNCERTAIN = "uncertain"  # a delivery may or may not have arrived
    DELIVERED = "delivered"  # the coordinator answered 200 (or provably has it)
    REJECTED = "rejected"  # the coordinator refused the outcome for good
    HANDED_OFF = "handed_off"  # given to the fleet's retry queue: another rig runs it


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"


ACTIVE_STATES = frozenset({JobState.CLAIMED, JobState.RUNNING})
OUTBOX_STATES = frozenset({JobState.STAGED, JobState.UNCERTAIN})
FINAL_STATES = frozenset({JobState.DELIVERED, JobState.REJECTED, JobState.HANDED_OFF})

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    job_type     TEXT,
    payload      TEXT NOT NULL,
    constraints  TEXT NOT NULL,
    slot         TEXT,
    outcome      TEXT,
    error_code   TEXT,
    endpoint     TEXT,
    body         TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    claimed_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    delivered_at REAL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS transitions (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    at      REAL NOT NULL,
    state   TEXT NOT NULL,
    detail  TEXT
);
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id  TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    received_at REAL NOT NULL,
    units       REAL,
    unit_type   TEXT,
    price       REAL,
    verdict     TEXT NOT NULL,
    reason      TEXT,
    key_id      TEXT,
    counted     INTEGER NOT NULL,
    duplicate   INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_job ON receipts(job_id);
CREATE TABLE IF NOT EXISTS replaced_receipts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rowid_was   INTEGER NOT NULL,
    receipt_id  TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    received_at REAL NOT NULL,
    price       REAL,
    counted     INTEGER NOT NULL,
    duplicate   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_jobs (
    job_id       TEXT PRIMARY KEY,
    claimed_by   TEXT,
    ran_by       TEXT,
    delivered_by TEXT,
    note         TEXT,
    mirrored     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS payments (
    job_id         TEXT PRIMARY KEY,
    amount         TEXT,
    payment_status TEXT,
    seen_at        REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    state: JobState
    job_type: str | None
    payload: dict[str, Any]
    constraints: dict[str, Any]
    slot: str | None
    outcome: Outcome | None
    error_code: str | None
    endpoint: str | None
    body: dict[str, Any] | None
    attempts: int
    last_error: str | None
    claimed_at: float
    started_at: float | None
    finished_at: float | None
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    receipt_id: str
    job_id: str
    received_at: float
    units: float | None
    price: float | None
    verdict: str
    reason: str | None
    counted: bool
    duplicate: bool
    unit_type: str | None = None
    body: dict[str, Any] | None = None  # the signed receipt, when the reader asked for it
    # set by ``store_receipt`` when a row under the same id was replaced: was that counted?
    replaced_counted: bool | None = None


class Journal:
    """The miner's durable memory of jobs, outcomes and receipts."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection, many tasks: transactions must not interleave on it.
        self._tx = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outcome survives power loss too, not only a killed process.
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(SCHEMA)
        return cls(db, path)

    async def close(self) -> None:
        async with self._tx:  # a write whose caller was cancelled still finishes first
            await self._db.close()

    async def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements in one transaction; returns once they are committed.

        Shielded: a caller cancelled mid-write (an operator's cancel, a shutdown) gets its
        ``CancelledError`` at once, while the transaction still finishes whole. Cancelled at
        ``BEGIN``, it would otherwise leave a transaction open on the shared connection and
        every later write would fail.
        """
        await asyncio.shield(self._transaction(list(statements)))

    async def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        async with self._tx:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    await self._db.execute(sql, _bindable(params))
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @staticmethod
    def _transition(
        job_id: str, state: JobState, at: float, detail: str = ""
    ) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO transitions(job_id, at, state, detail) VALUES (?, ?, ?, ?)",
            (job_id, at, state.value, detail),
        )

    # --- the job task's writes -------------------------------------------------

    async def claim(
        self, job_id: str, payload: Mapping[str, Any], constraints: Mapping[str, Any]
    ) -> bool:
        """Record a job the coordinator handed us; False if we already know it."""
        if await self.get(job_id) is not None:
            return False
        now = time.time()
        job_type = payload.get("type")
        if not isinstance(job_type, str) or name_problem(job_type) is not None:
            job_type = None
        await self._write(
            [
                (
                    "INSERT INTO jobs(job_id, state, job_type, payload, constraints, claimed_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job_id, JobState.CLAIMED.value, job_type, _dump(payload), _dump(constraints),
                     now, now),
                ),
                self._transition(job_id, JobState.CLAIMED, now),
            ]
        )
        return True

    async def mark_running(self, job_id: str, slot: str) -> None:
        now = time.time()
        await self._write(
            [
                ("UPDATE jobs SET state=?, slot=?, started_at=?, updated_at=? WHERE job_id=?",
                 (JobState.RUNNING.value, slot, now, now, job_id)),
                self._transition(job_id, JobState.RUNNING, now, slot),
            ]
        )

    async def stage(
        self,
        job_id: str,
        outcome: Outcome,
        endpoint: str,
        body: Mapping[str, Any],
        error_code: ErrorCode | None = None,
    ) -> None:
        """Put the outcome on disk; from here the outbox owns the job."""
        now = time.time()
        detail = f"{outcome.value} {error_code or ''}".strip()
        await self._write(
            [
                ("UPDATE jobs SET state=?, outcome=?, endpoint=?, body=?, error_code=?,"
                 " finished_at=?, updated_at=? WHERE job_id=?",
                 (JobState.STAGED.value, outcome.value, endpoint, _dump(body),
                  error_code.value if error_code else None, now, now, job_id)),
                self._transition(job_id, JobState.STAGED, now, detail),
            ]
        )

    # --- the outbox's writes -----------------------------------------------------

    async def mark_uncertain(self, job_id: str, error: str) -> None:
        """Just before each send: ``attempts`` counts sends, so only this step adds one."""
        await self._set_state(job_id, JobState.UNCERTAIN, error, attempts=1)

    async def mark_staged_again(self, job_id: str, reason: str) -> None:
        await self._set_state(job_id, JobState.STAGED, reason)

    async def mark_rejected(self, job_id: str, error: str) -> None:
        await self._set_state(job_id, JobState.REJECTED, error)

    async def mark_delivered(self, job_id: str, detail: str = "") -> None:
        await self._set_state(job_id, JobState.DELIVERED, detail or None, delivered=True)

    # --- the fleet's writes (docs/fleet.md) ------------------------------------------

    async def mark_handed_off(self, job_id: str, detail: str) -> None:
        """The job went to the fleet's retry queue: another rig runs and delivers it."""
        await self._set_state(job_id, JobState.HANDED_OFF, detail)

    async def record_fleet(self, job_id: str, *, claimed_by: str | None = None,
                           ran_by: str | None = None, delivered_by: str | None = None,
                           note: str | None = None, mirrored: bool = False) -> None:
        """Who claimed, ran and delivered a job that crossed rigs (unset fields kept);
        ``mirrored``: its outcome is (or is about to be) in the fleet's care."""
        await self._write([(
            "INSERT INTO fleet_jobs(job_id, claimed_by, ran_by, delivered_by, note, mirrored)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET"
            " claimed_by=COALESCE(excluded.claimed_by, claimed_by),"
            " ran_by=COALESCE(excluded.ran_by, ran_by),"
            " delivered_by=COALESCE(excluded.delivered_by, delivered_by),"
            " note=COALESCE(excluded.note, note), mirrored=MAX(mirrored, excluded.mirrored)",
            (job_id, claimed_by, ran_by, delivered_by, note, int(mirrored)))])

    async def fleet_job(self, job_id: str) -> dict[str, Any] | None:
        """The fleet row of a job (claimed_by, ran_by, delivered_by, note, mirrored)."""
        async with self._db.execute(
            "SELECT claimed_by, ran_by, delivered_by, note, mirrored FROM fleet_jobs"
            " WHERE job_id=?", (job_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        names = ("claimed_by", "ran_by", "delivered_by", "note", "mirrored")
        return {**dict(zip(names, row, strict=True)), "mirrored": bool(row[4])}

    async def _set_state(
        self, job_id: str, state: JobState, error: str | None, *, attempts: int = 0,
        delivered: bool = False,
    ) -> None:
        now = time.time()
        await self._write(
            [
                ("UPDATE jobs SET state=?, last_error=COALESCE(?, last_error),"
                 " attempts=attempts+?, delivered_at=CASE WHEN ? THEN ? ELSE delivered_at END,"
                 " updated_at=? WHERE job_id=?",
                 (state.value, error, attempts, delivered, now, now, job_id)),
                self._transition(job_id, state, now, error or ""),
            ]
        )

    async def store_receipt(
        self,
        job_id: str,
        receipt: Mapping[str, Any],
        *,
        verdict: str,
        reason: str,
        key_id: str | None,
        counted: bool,
        resent: bool = False,
    ) -> ReceiptRecord:
        """Store a receipt; a second receipt for the same job is kept but flagged and not counted.

        ``resent``: the receipt answers a ``/result`` resent after an uncertain try that the
        coordinator could not be asked about, so it may hold an earlier receipt we never
        saw. The row is flagged ``duplicate`` but still counted when it is the job's first
        here: one receipt per job is counted, never two.
        """
        now = time.time()
        receipt_id = scrub(str(receipt.get("receipt_id") or f"unidentified:{job_id}:{now}"))
        units, price = _number(receipt.get("units")), _number(receipt.get("price"))
        unit_type = receipt.get("unit_type")
        unit_type = scrub(unit_type) if isinstance(unit_type, str) else None
        row = (receipt_id, job_id, now, units, unit_type, price, verdict, reason, key_id)
        # The duplicate check, the record of a replaced row and the insert are one decision,
        # in one transaction that a cancelled caller cannot cut short (see ``_write``).
        duplicate, counted, replaced_counted = await asyncio.shield(
            self._store_receipt(row, _dump(receipt), counted, resent))
        return ReceiptRecord(receipt_id, job_id, now, units, price, verdict, scrub(reason),
                             counted, duplicate, unit_type, replaced_counted=replaced_counted)

    async def _store_receipt(self, row: tuple[Any, ...], body: str, counted: bool,
                             resent: bool) -> tuple[bool, bool, bool | None]:
        receipt_id, job_id = _bindable(row[:2])
        async with self._tx:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                async with self._db.execute(
                    "SELECT COUNT(*) FROM receipts WHERE job_id=? AND receipt_id<>?",
                    (job_id, receipt_id),
                ) as cur:
                    (earlier,) = await cur.fetchone() or (0,)
                duplicate = earlier > 0 or resent
                counted = counted and earlier == 0
                async with self._db.execute(
                    "SELECT counted FROM receipts WHERE receipt_id=?", (receipt_id,)
                ) as cur:
                    replaced = await cur.fetchone()
                if replaced is not None:
                    # A receipt stored again under its id replaces the row: the ledger reads
                    # what the old row said from here, to take it back out of its sums.
                    await self._db.execute(
                        "INSERT INTO replaced_receipts(rowid_was, receipt_id, job_id,"
                        " received_at, price, counted, duplicate) SELECT rowid, receipt_id,"
                        " job_id, received_at, price, counted, duplicate FROM receipts"
                        " WHERE receipt_id=?",
                        (receipt_id,),
                    )
                await self._db.execute(
                    "INSERT OR REPLACE INTO receipts(receipt_id, job_id, received_at, units,"
                    " unit_type, price, verdict, reason, key_id, counted, duplicate, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _bindable((*row, int(counted), int(duplicate), body)),
                )
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
        return duplicate, counted, None if replaced is None else bool(replaced[0])

    async def record_payments(self, entries: Iterable[tuple[str, str, str | None]]) -> None:
        """What the coordinator says it owes or paid per job: (job_id, amount, status)."""
        now = time.time()
        await self._write(
            ("INSERT INTO payments(job_id, amount, payment_status, seen_at) VALUES (?, ?, ?, ?)"
             " ON CONFLICT(job_id) DO UPDATE SET amount=excluded.amount,"
             " payment_status=excluded.payment_status, seen_at=excluded.seen_at",
             (job_id, amount, status, now))
            for job_id, amount, status in entries
        )

    # --- start-up ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Stage E_INTERRUPTED for every job the last run left claimed or running."""
        interrupted = [
            r for r in await self._select("state IN (?, ?)", (JobState.CLAIMED, JobState.RUNNING))
        ]
        for record in interrupted:
            started = record.state is JobState.RUNNING
            message = (
                "the miner stopped while this job was running; it is not re-run"
                if started
                else "the miner stopped before this job started; it is not run"
            )
            await self.stage(
                record.job_id,
                Outcome.INTERRUPTED,
                "fail",
                {"error_code": ErrorCode.E_INTERRUPTED.value, "error_message": message,
                 "metrics": {}},
                ErrorCode.E_INTERRUPTED,
            )
        return [r.job_id for r in interrupted]

    # --- reads ---------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._select("job_id=?", (job_id,))
        return rows[0] if rows else None

    async def outbox(self) -> list[JobRecord]:
        return await self._select(
            "state IN (?, ?) ORDER BY finished_at", (JobState.STAGED, JobState.UNCERTAIN)
        )

    async def jobs(self, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[JobRecord]:
        return await self._select(where, params)

    async def receipts(self, job_id: str | None = None, *, newest: int | None = None
                       ) -> list[ReceiptRecord]:
        """Receipts, oldest first; ``newest``: only the last so many, read as such (the
        engine's start reads a page, not the whole journal)."""
        sql = ("SELECT receipt_id, job_id, received_at, units, price, verdict, reason, counted,"
               " duplicate, unit_type FROM receipts")
        params: tuple[Any, ...] = ()
        if job_id is not None:
            sql, params = sql + " WHERE job_id=?", (job_id,)
        if newest is None:
            sql += " ORDER BY received_at, rowid"
        else:
            sql, params = sql + " ORDER BY received_at DESC, rowid DESC LIMIT ?", (*params, newest)
        async with self._db.execute(sql, params) as cur:
            rows = list(await cur.fetchall())
        if newest is not None:
            rows.reverse()
        return [ReceiptRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), bool(r[8]),
                              r[9]) for r in rows]

    async def receipt_counts(self) -> tuple[int, int]:
        """How many receipts the journal holds, and how many of them are not counted."""
        async with self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(counted = 0), 0) FROM receipts"
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def receipt_body(self, receipt_id: str) -> dict[str, Any] | None:
        async with self._db.execute(
            "SELECT body FROM receipts WHERE receipt_id=?", (receipt_id,)
        ) as cur:
            row = await cur.fetchone()
        return json.loads(row[0]) if row else None

    async def counts(self) -> dict[str, int]:
        """Jobs per state and per outcome, e.g. ``{"delivered": 10, "outcome:failed": 2}``."""
        counts: dict[str, int] = {}
        async with self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state") as cur:
            for state, n in await cur.fetchall():
                counts[state] = n
        async with self._db.execute(
            "SELECT outcome, COUNT(*) FROM jobs WHERE outcome IS NOT NULL GROUP BY outcome"
        ) as cur:
            for outcome, n in await cur.fetchall():
                counts[f"outcome:{outcome}"] = n
        return counts

    async def transitions(self, job_id: str) -> list[tuple[str, str]]:
        async with self._db.execute(
            "SELECT state, detail FROM transitions WHERE job_id=? ORDER BY id", (job_id,)
        ) as cur:
            return [(r[0], r[1] or "") for r in await cur.fetchall()]

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[JobRecord]:
        sql = (
            "SELECT job_id, state, job_type, payload, constraints, slot, outcome, error_code,"
            " endpoint, body, attempts, last_error, claimed_at, started_at, finished_at,"
            f" delivered_at FROM jobs WHERE {where}"
        )
        async with self._db.execute(sql, tuple(_param(p) for p in params)) as cur:
            rows = await cur.fetchall()
        return [
            JobRecord(
                job_id=r[0], state=JobState(r[1]), job_type=r[2], payload=json.loads(r[3]),
                constraints=json.loads(r[4]), slot=r[5],
                outcome=Outcome(r[6]) if r[6] else None, error_code=r[7], endpoint=r[8],
                body=json.loads(r[9]) if r[9] else None, attempts=r[10], last_error=r[11],
                claimed_at=r[12], started_at=r[13], finished_at=r[14], delivered_at=r[15],
            )
            for r in rows
        ]


def _dump(value: Any) -> str:
    # ASCII on purpose: a lone surrogate from a payload is stored as its escape.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str,
                      ensure_ascii=True)


def _bindable(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """Statement parameters SQLite can store: text that is not plain ASCII is scrubbed (a
    lone surrogate cannot be encoded). ASCII, the stored JSON included, is kept as is."""
    return tuple(scrub(p, max_chars=len(p)) if isinstance(p, str) and not p.isascii() else p
                 for p in params)


def _param(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
