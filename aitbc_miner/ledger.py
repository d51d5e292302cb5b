"""The earnings ledger: what the journal's receipts add up to, read-only.

Kept locally so it shows while offline. States, after Golem's ``status``:

* **issued**: receipts the coordinator gave us, one per job (duplicates excluded);
* **verified**: of those, the ones whose signature holds and whose facts are ours
  (``counted``); invalid, mismatched and duplicate receipts are **flagged**, never counted;
* **paid**: verified jobs the coordinator reports paid (2026-08's earnings call).

A :class:`Book` adds rows up **incrementally**: it remembers the last ``receipts`` rowid
and the last ``transitions`` id it read, so each update reads only the rows written
since (``O(new jobs)``), and its memory is bounded: per-minute buckets for the last 24
hours, one total per UTC day, at most ``MAX_GROUPS`` models, GPUs, job types and error
codes each (more go under ``(other)``). A receipt stored again under the same id replaces
the earlier row; the journal keeps what the replaced row said (``replaced_receipts``), and
the book takes it back out if it had added it, so the book remembers no receipts.
:func:`summarize` is the full recompute: a fresh book fed every
row, which is what ``aitbc-miner earnings`` prints. Amounts are exact decimals
(``aitbc_miner.money``).

Failures come from the journal's transitions: a job's first ``staged`` step says its
outcome and error code (``failed E_TIMEOUT``). A job that ``failed`` or was
``interrupted`` counts as failed, under its code; ``completed`` and ``canceled`` jobs
count only as finished.

Plain ``sqlite3`` on the journal file: the CLI calls it directly, the engine through
``asyncio.to_thread``. Readers never block the journal's writer (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from .journal import ReceiptRecord
from .money import ZERO, Earnings, Money, amount_of

DAY_S = 86400
MINUTE_S = 60
DAY_MINUTES = 24 * 60
NOW_MINUTES = 10  # "AITBC per hour now": the current minute and the 9 before it
HOUR_MINUTES = 60
MAX_GROUPS = 256
READ_BATCH = 5000
OTHER = "(other)"
OUTCOMES = frozenset({"completed", "failed", "canceled", "interrupted"})
FAILED = frozenset({"failed", "interrupted"})


def connect_readonly(journal_path: Path, *, cache_kib: int | None = None,
                     any_thread: bool = False) -> sqlite3.Connection:
    """A read-only connection; ``cache_kib`` caps its page cache (SQLite's default is 2 MiB),
    ``any_thread`` lets a caller that serialises its calls use it from pool threads."""
    conn = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True,
                           check_same_thread=not any_thread)
    if cache_kib is not None:
        conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    return conn


@contextmanager
def open_readonly(journal_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect_readonly(journal_path)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """A receipt with the facts of its job that the book groups by."""

    receipt_id: str
    received_at: float
    price: Decimal
    counted: bool
    duplicate: bool
    model: str = "-"  # the payload's model, else the job type
    gpu: str = "-"  # "gpu:0" (any slot of GPU 0), "cpu", "-" (unknown)
    job_type: str = "-"


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """A job's first staging: when it finished, how, and its error code."""

    at: float
    outcome: str
    code: str | None = None


@dataclass(slots=True)
class _Tally:
    """A running ``Money`` (mutable: the book adds to it in place, cheaply)."""

    amount: Decimal = ZERO
    jobs: int = 0

    def add(self, amount: Decimal, jobs: int) -> None:
        self.amount += amount
        self.jobs += jobs

    def money(self) -> Money:
        return Money(self.amount, self.jobs)


@dataclass(slots=True)
class _Minute:
    earned: _Tally = field(default_factory=_Tally)
    by_model: dict[str, Decimal] = field(default_factory=dict)
    by_gpu: dict[str, Decimal] = field(default_factory=dict)
    finished: int = 0
    failed: dict[str, int] = field(default_factory=dict)


# What a receipt's job says about it, after its own columns (see ``_receipt_row``).
_GROUPS = "j.job_type, j.slot, json_extract(j.payload, '$.model')"


def _receipt_row(receipt_id: object, at: float, price: object, counted: object,
                 duplicate: object, job_type: str | None, slot: str | None,
                 model: object) -> ReceiptRow:
    name = model if isinstance(model, str) and model else (job_type or "-")
    return ReceiptRow(str(receipt_id), float(at), amount_of(price) or ZERO, bool(counted),
                      bool(duplicate), name, gpu_of(slot), job_type or "-")


def gpu_of(slot: str | None) -> str:
    """The device a slot belongs to: ``gpu:0/1`` -> ``gpu:0``, ``cpu:3`` -> ``cpu``."""
    if not slot:
        return "-"
    if slot.startswith("cpu:"):
        return "cpu"
    return slot.split("/", 1)[0]


def minute_of(at: float) -> int:
    return int(at // MINUTE_S)


class Book:
    """Earnings and failures, added up as rows arrive; see the module docstring."""

    def __init__(self) -> None:
        self.receipts_read = 0  # rowid watermark
        self.transitions_read = 0  # id watermark
        self.replaced_read = 0  # id watermark
        self.issued = _Tally()
        self.verified = _Tally()
        self.flagged = _Tally()
        self.by_day: dict[int, _Tally] = {}  # UTC day number (epoch // 86400)
        self.by_model: dict[str, _Tally] = {}
        self.by_gpu: dict[str, _Tally] = {}
        self.by_type: dict[str, _Tally] = {}
        self.failures: dict[str, int] = {}
        self.minutes: dict[int, _Minute] = {}
        self._latest_minute = 0

    # --- reading the journal ------------------------------------------------------

    def read_new(self, conn: sqlite3.Connection) -> int:
        """Add the rows written since the last read; returns how many were read.

        One read transaction, so the replaced rows and the receipts agree: a replaced row
        is taken back out only if the book had added it, that is if its rowid is at or
        below the watermark of the reads before this one (rowids only grow).
        """
        conn.execute("BEGIN")
        try:
            return self._read_replaced(conn) + self._read_receipts(conn) + self._read_steps(conn)
        finally:
            conn.rollback()

    def _read_replaced(self, conn: sqlite3.Connection) -> int:
        if self.replaced_read < 0:  # a journal from before replaced rows were kept
            return 0
        try:
            rows = conn.execute(
                "SELECT r.id, r.rowid_was, r.receipt_id, r.received_at, r.price, r.counted,"
                f" r.duplicate, {_GROUPS} FROM replaced_receipts r"
                " LEFT JOIN jobs j ON j.job_id = r.job_id WHERE r.id > ? ORDER BY r.id",
                (self.replaced_read,)).fetchall()
        except sqlite3.OperationalError:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'replaced_receipts'"
                            ).fetchone():
                raise
            self.replaced_read = -1
            return 0
        for replaced_id, rowid_was, *row in rows:
            self.replaced_read = replaced_id
            if rowid_was <= self.receipts_read:
                self.take_back(_receipt_row(*row))
        return len(rows)

    def _read_receipts(self, conn: sqlite3.Connection) -> int:
        n = 0
        while True:
            rows = conn.execute(
                "SELECT r.rowid, r.receipt_id, r.received_at, r.price, r.counted, r.duplicate,"
                f" {_GROUPS} FROM receipts r LEFT JOIN jobs j ON j.job_id = r.job_id"
                " WHERE r.rowid > ? ORDER BY r.rowid LIMIT ?",
                (self.receipts_read, READ_BATCH)).fetchall()
            for rowid, *row in rows:
                self.receipts_read = rowid
                self.add_receipt(_receipt_row(*row))
            n += len(rows)
            if len(rows) < READ_BATCH:
                return n

    def _read_steps(self, conn: sqlite3.Connection) -> int:
        n = 0
        while True:
            steps = conn.execute(
                "SELECT id, at, state, detail FROM transitions WHERE id > ? ORDER BY id LIMIT ?",
                (self.transitions_read, READ_BATCH)).fetchall()
            for step_id, at, state, detail in steps:
                self.transitions_read = step_id
                words = str(detail or "").split()
                if state == "staged" and words and words[0] in OUTCOMES:
                    self.add_outcome(OutcomeRow(float(at), words[0],
                                                words[1] if len(words) > 1 else None))
            n += len(steps)
            if len(steps) < READ_BATCH:
                return n

    # --- adding rows ----------------------------------------------------------------

    def add_receipt(self, row: ReceiptRow) -> None:
        self._apply(row, 1)

    def take_back(self, row: ReceiptRow) -> None:
        """Take out a receipt added earlier (its row was replaced in the journal)."""
        self._apply(row, -1)

    def _apply(self, row: ReceiptRow, sign: int) -> None:
        amount = row.price if sign > 0 else -row.price
        if not row.duplicate or row.counted:
            self.issued.add(amount, sign)
        if not row.counted:
            self.flagged.add(amount, sign)
            return
        self.verified.add(amount, sign)
        day = int(row.received_at // DAY_S)
        if (tally := self.by_day.get(day)) is None:
            tally = self.by_day[day] = _Tally()
        tally.add(amount, sign)
        model, gpu = _key(self.by_model, row.model), _key(self.by_gpu, row.gpu)
        for groups, key in ((self.by_model, model), (self.by_gpu, gpu),
                            (self.by_type, _key(self.by_type, row.job_type))):
            if (tally := groups.get(key)) is None:
                tally = groups[key] = _Tally()
            tally.add(amount, sign)
        minute = self._minute(row.received_at)
        if minute is not None:
            minute.earned.add(amount, sign)
            minute.by_model[model] = minute.by_model.get(model, ZERO) + amount
            minute.by_gpu[gpu] = minute.by_gpu.get(gpu, ZERO) + amount

    def add_outcome(self, row: OutcomeRow) -> None:
        minute = self._minute(row.at)
        if minute is not None:
            minute.finished += 1
        if row.outcome not in FAILED:
            return
        code = _key(self.failures, row.code or "-")
        self.failures[code] = self.failures.get(code, 0) + 1
        if minute is not None:
            minute.failed[code] = minute.failed.get(code, 0) + 1

    def _minute(self, at: float) -> _Minute | None:
        """The bucket of ``at``; None once it is older than a day of the newest seen."""
        m = int(at // MINUTE_S)
        if m > self._latest_minute:
            self._latest_minute = m
            if len(self.minutes) > DAY_MINUTES + HOUR_MINUTES:  # amortised: now and then
                self.prune(m)
        if m <= self._latest_minute - DAY_MINUTES:
            return None
        if (bucket := self.minutes.get(m)) is None:
            bucket = self.minutes[m] = _Minute()
        return bucket

    def prune(self, current_minute: int) -> None:
        """Forget buckets no window reaches (a day older than the newest row)."""
        horizon = current_minute - DAY_MINUTES
        for m in [m for m in self.minutes if m <= horizon]:
            del self.minutes[m]

    # --- what it adds up to -----------------------------------------------------------

    def window(self, now: float, minutes: int) -> list[_Minute]:
        cur = minute_of(now)
        return [b for m, b in self.minutes.items() if cur - minutes < m <= cur]

    def earned_between(self, first: int, last: int
                       ) -> tuple[Decimal, dict[str, Decimal], dict[str, Decimal]]:
        """AITBC earned in minutes ``first..last``: in all, by GPU and by model."""
        total, by_gpu, by_model = ZERO, dict[str, Decimal](), dict[str, Decimal]()
        for m in range(first, last + 1):
            if (b := self.minutes.get(m)) is not None:
                total += b.earned.amount
                for groups, part in ((by_gpu, b.by_gpu), (by_model, b.by_model)):
                    for k, v in part.items():
                        groups[k] = groups.get(k, ZERO) + v
        return total, by_gpu, by_model

    def earnings(self, now: float, paid: Money | None = None) -> Earnings:
        """The totals, and the windows as of ``now`` (buckets are pruned by the newest row
        only, so the answer never depends on when, or how often, it was asked)."""
        today = int(now // DAY_S)
        cur = minute_of(now)
        hour = self.window(now, HOUR_MINUTES)
        recent = self.window(now, NOW_MINUTES)
        day = self.window(now, DAY_MINUTES)
        hourly: dict[int, Money] = {}
        for m, b in self.minutes.items():
            if cur - DAY_MINUTES < m <= cur:
                start = m * MINUTE_S // 3600 * 3600
                hourly[start] = hourly.get(start, Money()) + b.earned.money()
        this_hour = cur * MINUTE_S // 3600 * 3600
        bars = tuple((this_hour - h * 3600, hourly.get(this_hour - h * 3600, Money()))
                     for h in range(23, -1, -1))
        failed_hour: dict[str, int] = {}
        for b in hour:
            for code, n in b.failed.items():
                failed_hour[code] = failed_hour.get(code, 0) + n
        finished_hour = sum(b.finished for b in hour)
        return Earnings(
            today=self.by_day.get(today, _Tally()).money(),
            last_7_days=sum((v.money() for k, v in self.by_day.items() if today - 7 < k <= today),
                            Money()),
            last_hour=sum((b.earned.money() for b in hour), Money()),
            issued=self.issued.money(), verified=self.verified.money(), paid=paid or Money(),
            flagged=self.flagged.money(),
            per_hour_now=_per_hour(sum((b.earned.amount for b in recent), ZERO), now,
                                   NOW_MINUTES),
            per_hour_last_hour=_per_hour(sum((b.earned.amount for b in hour), ZERO), now,
                                         HOUR_MINUTES),
            per_hour_last_day=_per_hour(sum((b.earned.amount for b in day), ZERO), now,
                                        DAY_MINUTES),
            hourly=bars,
            by_day=tuple((time.strftime("%Y-%m-%d", time.gmtime(k * DAY_S)), v.money())
                         for k, v in sorted(self.by_day.items(), reverse=True) if v.jobs),
            by_model=_ranked(self.by_model), by_gpu=_ranked(self.by_gpu),
            by_type=_ranked(self.by_type),
            failures_by_code=_ranked_counts(self.failures),
            failures_last_hour=_ranked_counts(failed_hour),
            finished_last_hour=finished_hour,
            failure_rate_now=_rate(recent), failure_rate_last_hour=_rate(hour),
        )



def _key(groups: dict[str, _Tally] | dict[str, int], key: str) -> str:
    """``key``, or ``(other)`` once ``MAX_GROUPS`` keys are taken (hostile model names);
    interned, so the minute buckets share their groups' names."""
    return sys.intern(key) if key in groups or len(groups) < MAX_GROUPS else OTHER


def _per_hour(amount: Decimal, now: float, minutes: int) -> Decimal:
    """AITBC per hour over the window's minutes, divided by the time they span so far."""
    span_ms = round((now - (minute_of(now) - minutes + 1) * MINUTE_S) * 1000)
    if span_ms <= 0:
        return ZERO
    return (amount * 3_600_000 / span_ms).quantize(Decimal("1e-8"))


def _rate(buckets: list[_Minute]) -> float | None:
    finished = sum(b.finished for b in buckets)
    failed = sum(sum(b.failed.values()) for b in buckets)
    return failed / finished if finished else None


def _ranked(groups: dict[str, _Tally]) -> tuple[tuple[str, Money], ...]:
    return tuple(sorted(((k, v.money()) for k, v in groups.items() if v.jobs),
                        key=lambda kv: (-kv[1].amount, kv[0])))


def _ranked_counts(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((k, n) for k, n in counts.items() if n),
                        key=lambda kv: (-kv[1], kv[0])))


def paid(conn: sqlite3.Connection) -> Money:
    """Verified jobs the coordinator reports paid (read in full: it changes once a minute
    at most, when payments are synced). Summed row by row as SQLite steps, so reading it
    holds no list that grows with the journal."""
    total, jobs = ZERO, 0
    try:
        for (price,) in conn.execute(
                "SELECT r.price FROM receipts r JOIN payments p ON p.job_id = r.job_id"
                " WHERE r.counted = 1 AND p.payment_status = 'paid'"):
            total += amount_of(price) or ZERO
            jobs += 1
    except sqlite3.OperationalError:  # a journal from before payments were tracked
        return Money()
    return Money(total, jobs)


def summarize(conn: sqlite3.Connection, now: float | None = None) -> Earnings:
    """The full recompute: every row into a fresh book."""
    book = Book()
    book.read_new(conn)
    return book.earnings(time.time() if now is None else now, paid(conn))


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
