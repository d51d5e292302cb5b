"""The earnings ledger: what the journal's receipts add up to, read-only.

Kept locally so it shows while offline. States, after Golem's ``status``:

* **issued**: receipts the coordinator gave us, one per job (duplicates excluded);
* **verified**: of those, the ones whose signature holds and whose facts are ours
  (``counted``); invalid, mismatched and duplicate receipts are **flagged**, never counted;
* **paid**: verified jobs the coordinator reports paid (2026-08's earnings call).

Plain ``sqlite3`` on the journal file: the CLI calls it directly, the engine through
``asyncio.to_thread``. Readers never block the journal's writer (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .journal import ReceiptRecord

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Total:
    amount: float = 0.0
    jobs: int = 0


@dataclass(frozen=True, slots=True)
class Earnings:
    issued: Total
    verified: Total
    paid: Total
    flagged: Total
    today: Total
    last_7_days: Total
    last_hour: Total
    by_day: tuple[tuple[str, Total], ...]
    by_model: tuple[tuple[str, Total], ...]
    by_slot: tuple[tuple[str, Total], ...]
    by_type: tuple[tuple[str, Total], ...]
    failures_by_code: tuple[tuple[str, int], ...]
    currency: str = "AITBC"


@contextmanager
def open_readonly(journal_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


_COUNTED = """
    SELECT r.price, r.received_at, j.job_type, j.slot, j.payload
    FROM receipts r LEFT JOIN jobs j ON j.job_id = r.job_id
    WHERE r.counted = 1
"""


def summarize(conn: sqlite3.Connection, now: float | None = None) -> Earnings:
    now = time.time() if now is None else now
    midnight = now - (now % DAY_S)  # UTC day boundary
    rows = conn.execute(_COUNTED).fetchall()
    by_day: dict[str, list[float]] = {}
    by_model: dict[str, list[float]] = {}
    by_slot: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for price, at, job_type, slot, payload in rows:
        amount = price or 0.0
        day = time.strftime("%Y-%m-%d", time.gmtime(at))
        by_day.setdefault(day, []).append(amount)
        by_model.setdefault(_model(payload), []).append(amount)
        by_slot.setdefault(slot or "-", []).append(amount)
        by_type.setdefault(job_type or "-", []).append(amount)
    verified = _total(p for p, *_ in rows)
    flagged = conn.execute(
        "SELECT COALESCE(SUM(price), 0), COUNT(*) FROM receipts WHERE counted = 0").fetchone()
    issued = conn.execute(
        "SELECT COALESCE(SUM(price), 0), COUNT(DISTINCT job_id) FROM receipts"
        " WHERE duplicate = 0 OR counted = 1").fetchone()  # a resent job's only receipt counts
    paid = _paid(conn)
    failures = conn.execute(
        "SELECT error_code, COUNT(*) FROM jobs WHERE error_code IS NOT NULL"
        " GROUP BY error_code ORDER BY COUNT(*) DESC, error_code").fetchall()
    return Earnings(
        issued=Total(round(issued[0], 6), issued[1]),
        verified=verified,
        paid=paid,
        flagged=Total(round(flagged[0], 6), flagged[1]),
        today=_total(p for p, at, *_ in rows if at >= midnight),
        last_7_days=_total(p for p, at, *_ in rows if at >= midnight - 6 * DAY_S),
        last_hour=_total(p for p, at, *_ in rows if at >= now - 3600),
        by_day=_grouped(by_day, reverse=True),
        by_model=_grouped(by_model),
        by_slot=_grouped(by_slot),
        by_type=_grouped(by_type),
        failures_by_code=tuple((code, n) for code, n in failures),
    )


def _paid(conn: sqlite3.Connection) -> Total:
    try:
        row = conn.execute(
            "SELECT COALESCE(SUM(r.price), 0), COUNT(*) FROM receipts r"
            " JOIN payments p ON p.job_id = r.job_id"
            " WHERE r.counted = 1 AND p.payment_status = 'paid'").fetchone()
    except sqlite3.OperationalError:  # a journal from before payments were tracked
        return Total()
    return Total(round(row[0], 6), row[1])


def _model(payload: str | None) -> str:
    try:
        model = json.loads(payload or "{}").get("model")
    except (json.JSONDecodeError, AttributeError):
        return "-"
    return model if isinstance(model, str) and model else "-"


def _total(prices: Any) -> Total:
    values = [p or 0.0 for p in prices]
    return Total(round(sum(values), 6), len(values))


def _grouped(
    groups: dict[str, list[float]], reverse: bool = False
) -> tuple[tuple[str, Total], ...]:
    items = sorted(groups.items(), reverse=reverse) if reverse else sorted(
        groups.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    return tuple((key, _total(values)) for key, values in items)


def receipts(conn: sqlite3.Connection) -> list[ReceiptRecord]:
    """All stored receipts with their signed bodies, newest first."""
    rows = conn.execute(
        "SELECT receipt_id, job_id, received_at, units, price, verdict, reason, counted,"
        " duplicate, unit_type, body FROM receipts ORDER BY received_at DESC").fetchall()
    return [ReceiptRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), bool(r[8]),
                          r[9], json.loads(r[10])) for r in rows]


def reported_units(conn: sqlite3.Connection, job_id: str) -> float | None:
    """The units we reported for a job (``metrics.units`` or ``duration_ms / 1000``)."""
    row = conn.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    metrics = json.loads(row[0]).get("metrics", {})
    units = metrics.get("units")
    if isinstance(units, int | float):
        return float(units)
    duration = metrics.get("duration_ms")
    return duration / 1000 if isinstance(duration, int | float) else None
