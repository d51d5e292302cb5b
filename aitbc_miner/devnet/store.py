"""Coordinator state in sqlite3, committed before every answer.

A devnet killed with SIGKILL and restarted on the same file must come back with its
miners (inflight counters included), jobs and receipts, as the real coordinator's
database would. In-memory when no path is given.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS miners (
    id TEXT PRIMARY KEY, capabilities TEXT, concurrency INTEGER, region TEXT,
    inflight INTEGER, status TEXT, session_token TEXT, reputation REAL,
    last_heartbeat REAL, registered_at REAL, metadata TEXT,
    jobs_completed INTEGER, jobs_failed INTEGER
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, client TEXT, state TEXT,
    payload TEXT, constraints TEXT, ttl_seconds INTEGER, requested_at REAL,
    expires_at REAL, assigned_miner_id TEXT, result TEXT, error TEXT,
    result_calls INTEGER, fail_calls INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, receipt_id TEXT, job_id TEXT,
    provider TEXT, price REAL, body TEXT
);
CREATE INDEX IF NOT EXISTS receipts_job ON receipts(job_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_JSON_COLUMNS = frozenset({"capabilities", "metadata", "payload", "constraints", "result"})


@dataclass(slots=True)
class Miner:
    id: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 1
    region: str | None = None
    inflight: int = 0
    status: str = "ONLINE"
    session_token: str | None = None
    reputation: float = 1.0
    last_heartbeat: float | None = None
    registered_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    jobs_completed: int = 0
    jobs_failed: int = 0


@dataclass(slots=True)
class Job:
    id: str
    client: str
    payload: dict[str, Any]
    constraints: dict[str, Any]
    ttl_seconds: int
    requested_at: float
    expires_at: float
    state: str = "QUEUED"
    assigned_miner_id: str | None = None
    result: Any = None
    error: str | None = None
    result_calls: int = 0
    fail_calls: int = 0
    seq: int | None = None


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value) if name in _JSON_COLUMNS else value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in row.keys():  # noqa: SIM118 (iterating a Row yields values)
        value = row[name]
        out[name] = json.loads(value) if name in _JSON_COLUMNS and value is not None else value
    return out


class Store:
    """Typed rows over one sqlite3 connection; callers ``commit()`` before answering."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ":memory:"
        self.conn = sqlite3.connect(self.path)
        self.conn.row_factory = sqlite3.Row
        if path:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def commit(self) -> None:
        self.conn.commit()

    # --- rows --------------------------------------------------------------------

    def _upsert(self, table: str, values: dict[str, Any], key: str) -> None:
        cols = list(values)
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c != key)
        self.conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT({key}) DO UPDATE SET {updates}",
            [_encode(c, values[c]) for c in cols],
        )

    def put_miner(self, miner: Miner) -> None:
        self._upsert("miners", asdict(miner), "id")

    def get_miner(self, miner_id: str) -> Miner | None:
        row = self.conn.execute("SELECT * FROM miners WHERE id=?", (miner_id,)).fetchone()
        return Miner(**_decode(row)) if row else None

    def miners(self) -> list[Miner]:
        rows = self.conn.execute("SELECT * FROM miners ORDER BY registered_at, id")
        return [Miner(**_decode(r)) for r in rows]

    def put_job(self, job: Job) -> None:
        values = {f.name: getattr(job, f.name) for f in fields(job) if f.name != "seq"}
        self._upsert("jobs", values, "id")

    def get_job(self, job_id: str) -> Job | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job(**_decode(row)) if row else None

    def jobs(self) -> list[Job]:
        return [Job(**_decode(r)) for r in self.conn.execute("SELECT * FROM jobs ORDER BY seq")]

    def queued_jobs(self) -> Generator[Job, None, None]:
        """QUEUED jobs in submission order (FIFO), fetched lazily: a poll stops at its match."""
        cursor = self.conn.execute("SELECT * FROM jobs WHERE state='QUEUED' ORDER BY seq")
        try:
            while batch := cursor.fetchmany(64):
                yield from (Job(**_decode(r)) for r in batch)
        finally:
            cursor.close()

    # --- receipts ----------------------------------------------------------------

    def add_receipt(self, receipt: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO receipts (receipt_id, job_id, provider, price, body) VALUES (?,?,?,?,?)",
            (
                receipt["receipt_id"],
                receipt["job_id"],
                receipt["provider"],
                receipt.get("price"),
                json.dumps(receipt),
            ),
        )

    def receipts(
        self, *, job_id: str | None = None, provider: str | None = None
    ) -> list[dict[str, Any]]:
        query, args = "SELECT body FROM receipts", []
        if job_id is not None:
            query, args = query + " WHERE job_id=?", [job_id]
        elif provider is not None:
            query, args = query + " WHERE provider=?", [provider]
        rows = self.conn.execute(query + " ORDER BY seq", args)
        return [json.loads(r["body"]) for r in rows]

    def receipt_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT job_id, COUNT(*) AS n FROM receipts GROUP BY job_id")
        return {r["job_id"]: r["n"] for r in rows}

    # --- meta --------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )
