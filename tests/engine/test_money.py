"""Money over time: one exact money type, the ledger's book (hourly buckets, per-GPU and
per-model split, failure rate by code), and incremental updates equal to a full
recompute, over a real journal."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner import ledger
from aitbc_miner.codes import ErrorCode
from aitbc_miner.engine.codec import snapshot_from_json, to_jsonable
from aitbc_miner.engine.earnings import EarningsKeeper
from aitbc_miner.engine.snapshot import ReceiptView
from aitbc_miner.journal import Journal, Outcome
from aitbc_miner.ledger import Book, OutcomeRow, ReceiptRow
from aitbc_miner.money import Earnings, Money, amount_of, format_amount
from tui.fake import sample_snapshot

D = Decimal
T0 = 1_800_000_000.0  # a whole hour (and minute) in UTC


def row(rid: str, at: float, price: str, *, model: str = "llama3.2", gpu: str = "gpu:0",
        counted: bool = True, duplicate: bool = False) -> ReceiptRow:
    return ReceiptRow(rid, at, D(price), counted, duplicate, model, gpu, "inference")


def test_amounts_are_exact_decimals_and_written_one_way() -> None:
    # Given prices as JSON floats and SQLite REALs give them
    # Then they read back as the decimals the coordinator wrote, and sums are exact
    assert amount_of(0.1) == D("0.1") and amount_of(2e-05) == D("0.00002")
    assert sum((amount_of(0.1) or D(0) for _ in range(3)), D(0)) == D("0.3")
    assert amount_of("1.25") == D("1.25")
    assert [amount_of(v) for v in (None, True, float("nan"), "x", float("inf"))] == [None] * 5
    # And the one format never writes 2e-05 or a nonzero 0.0000
    assert format_amount(2e-05) == "0.0000200"
    assert format_amount(D("1234.5")) == "1,234.5000"
    assert format_amount(D("0.30"), "EUR", 2) == "0.30 EUR"
    assert format_amount(D("0.0045"), "EUR", 2) == "0.00450 EUR"
    assert format_amount(None) == "-"
    assert Money(D("0.1"), 1) + Money(D("0.2"), 1) == Money(D("0.3"), 2)


def test_money_travels_exactly_through_the_snapshot_codec() -> None:
    # Given a snapshot with earnings, profitability and a receipt price
    snap = sample_snapshot("busy")
    # When it is encoded to JSON and decoded (an attached console, ctl status)
    back = snapshot_from_json(json.loads(json.dumps(to_jsonable(snap))))
    # Then every amount is the same Decimal, not a float
    assert back.earnings == snap.earnings
    assert isinstance(back.earnings.profit.rig.cost, Decimal)  # type: ignore[union-attr]
    assert back.receipts[0].price == snap.receipts[0].price
    assert isinstance(back.receipts[0].price, Decimal)
    assert json.loads(json.dumps(to_jsonable(snap)))["earnings"]["today"]["amount"] == "1.2345"


def test_hourly_buckets_rates_and_the_split_by_gpu_and_model() -> None:
    # Given receipts over three hours on two GPUs and a CPU slot, one flagged
    book = Book()
    book.add_receipt(row("a", T0 - 7200 + 10, "0.5", gpu="gpu:1", model="mistral"))
    book.add_receipt(row("b", T0 - 3600 + 30, "0.25"))
    book.add_receipt(row("c", T0 + 100, "0.125"))
    book.add_receipt(row("d", T0 + 3000, "0.0625", gpu="cpu", model="sha256"))
    book.add_receipt(row("x", T0 + 3000, "9", counted=False))
    # When the earnings are read at T0 + 3300 (55 minutes into the hour)
    now = T0 + 3300
    e = book.earnings(now)
    # Then the last 24 hour bars hold each hour's receipts, oldest first
    assert len(e.hourly) == 24 and e.hourly[-1][0] == int(T0)
    assert [(at - int(T0), m) for at, m in e.hourly if m.jobs] == [
        (-7200, Money(D("0.5"), 1)), (-3600, Money(D("0.25"), 1)),
        (0, Money(D("0.1875"), 2))]
    # And the windows are whole minutes: the last hour is this minute and the 59 before
    assert e.last_hour == Money(D("0.1875"), 2)  # b (at T0-3570) is too old
    assert e.verified == Money(D("0.9375"), 4) and e.flagged == Money(D("9"), 1)
    # And AITBC per hour is a window's amount over the time its minutes span so far
    # (now is the first instant of its minute: 9 whole minutes of the last 10 have passed)
    assert e.per_hour_now == (D("0.0625") * 3600 / 540).quantize(D("1e-8"))
    assert e.per_hour_last_hour == (D("0.1875") * 3600 / 3540).quantize(D("1e-8"))
    assert e.per_hour_last_day == (D("0.9375") * 3600 / 86340).quantize(D("1e-8"))
    # And the split by GPU and by model adds up to the total
    assert dict(e.by_gpu) == {"gpu:0": Money(D("0.375"), 2), "gpu:1": Money(D("0.5"), 1),
                              "cpu": Money(D("0.0625"), 1)}
    assert dict(e.by_model) == {"llama3.2": Money(D("0.375"), 2),
                                "mistral": Money(D("0.5"), 1),
                                "sha256": Money(D("0.0625"), 1)}
    assert sum((m for _, m in e.by_gpu), Money()) == e.verified
    # And a GPU that earned nothing in the last hour earned nothing there
    assert book.earned_between(int(T0) // 60, int(now) // 60) == (
        D("0.1875"), {"gpu:0": D("0.125"), "cpu": D("0.0625")},
        {"llama3.2": D("0.125"), "sha256": D("0.0625")})


def test_failure_rate_by_code_now_last_hour_and_all_time() -> None:
    # Given outcomes: two timeouts an hour ago, then in the last ten minutes one
    # interrupted, one model-not-found, one canceled and five completed
    book = Book()
    for at in (T0 - 3000, T0 - 2900):
        book.add_outcome(OutcomeRow(at, "failed", "E_TIMEOUT"))
    book.add_outcome(OutcomeRow(T0 - 7300, "failed", "E_TIMEOUT"))  # over an hour ago
    book.add_outcome(OutcomeRow(T0 - 100, "interrupted", "E_INTERRUPTED"))
    book.add_outcome(OutcomeRow(T0 - 90, "failed", "E_MODEL_NOT_FOUND"))
    book.add_outcome(OutcomeRow(T0 - 80, "canceled", "E_CANCELED"))  # not a failure
    for i in range(5):
        book.add_outcome(OutcomeRow(T0 - 60 + i, "completed"))
    # When read at T0
    e = book.earnings(T0)
    # Then the rates count failed and interrupted jobs against all that finished
    assert e.failure_rate_now == 2 / 8
    assert e.failure_rate_last_hour == 4 / 10 and e.finished_last_hour == 10
    assert e.failures_last_hour == (("E_TIMEOUT", 2), ("E_INTERRUPTED", 1),
                                    ("E_MODEL_NOT_FOUND", 1))
    assert e.failures_by_code == (("E_TIMEOUT", 3), ("E_INTERRUPTED", 1),
                                  ("E_MODEL_NOT_FOUND", 1))
    # And with nothing finished there is no rate, rather than 0 %
    assert Book().earnings(T0).failure_rate_now is None


async def _job(journal: Journal, job_id: str, slot: str, payload: dict[str, object],
               code: ErrorCode | None = None) -> None:
    await journal.claim(job_id, payload, {})
    await journal.mark_running(job_id, slot)
    if code is None:
        await journal.stage(job_id, Outcome.COMPLETED, "result", {"result": {}, "metrics": {}})
    else:
        await journal.stage(job_id, Outcome.FAILED, "fail", {"error_code": code.value}, code)
    await journal.mark_delivered(job_id)


async def _receipt(journal: Journal, job_id: str, price: float, rid: str | None = None,
                   counted: bool = True) -> None:
    await journal.store_receipt(job_id, {"receipt_id": rid or f"r-{job_id}", "price": price},
                                verdict="valid_pinned", reason="", key_id=None, counted=counted)


def _read(path: Path, book: Book, now: float) -> Earnings:
    with ledger.open_readonly(path) as conn:
        book.read_new(conn)
        return book.earnings(now, ledger.paid(conn))


def _full(path: Path, now: float) -> Earnings:
    with ledger.open_readonly(path) as conn:
        return ledger.summarize(conn, now)


async def test_incremental_updates_equal_a_full_recompute(tmp_path: Path) -> None:
    # Given a journal that grows in steps, read by one book after each step
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    book = Book()
    steps = []
    try:
        await _job(journal, "j1", "gpu:0/0", {"type": "inference", "model": "llama3.2"})
        await _receipt(journal, "j1", 0.1)
        steps.append(_read(path, book, 2e9))
        await _job(journal, "j2", "gpu:1", {"type": "inference", "model": "mistral"})
        await _job(journal, "j3", "cpu:0", {"type": "sha256"}, ErrorCode.E_TIMEOUT)
        await _receipt(journal, "j2", 0.2)
        await _receipt(journal, "j2", 0.2, rid="r-j2-dup")  # a second receipt: flagged
        steps.append(_read(path, book, 2e9))
        await _job(journal, "j4", "gpu:0/1", {"type": "inference", "model": "llama3.2"})
        await _receipt(journal, "j4", 2e-05)
        await _receipt(journal, "j1", 0.1)  # the same receipt stored again: replaced
        await journal.record_payments([("j1", "0.1", "paid")])
        now = time.time()
        incremental = _read(path, book, now)
    finally:
        await journal.close()
    # When the same journal is summarised from scratch
    full = _full(path, now)
    # Then the incremental book says exactly what the full recompute says, windows too
    assert incremental.last_hour.jobs == 3 and incremental.finished_last_hour == 4
    assert incremental == full
    assert book.earnings(now + 7200, full.paid) == _full(path, now + 7200)
    # And it read only what was new each time (the watermarks moved on)
    assert steps[0].verified == Money(D("0.1"), 1)
    assert steps[1].verified == Money(D("0.3"), 2) and steps[1].flagged.jobs == 1
    assert full.verified == Money(D("0.30002"), 3)  # j1 counted once though stored twice
    assert dict(full.by_gpu) == {"gpu:0": Money(D("0.10002"), 2), "gpu:1": Money(D("0.2"), 1)}
    assert full.failures_by_code == (("E_TIMEOUT", 1),)
    assert full.paid == Money(D("0.1"), 1)
    with sqlite3.connect(path) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM receipts").fetchone()
    assert rows == 4


async def test_an_update_reads_only_the_rows_written_since_the_last(tmp_path: Path) -> None:
    # Given a book that has read a journal of 300 receipts
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    book = Book()
    try:
        for i in range(300):
            await _job(journal, f"k{i}", "cpu:0", {"type": "sha256"})
            await _receipt(journal, f"k{i}", 0.01)
        _read(path, book, 2e9)
        watermark = book.receipts_read
        # When one more receipt arrives
        await _job(journal, "last", "gpu:0", {"type": "inference", "model": "m"})
        await _receipt(journal, "last", 0.5)
        with ledger.open_readonly(path) as conn:
            read = book.read_new(conn)
    finally:
        await journal.close()
    # Then the update read that job's rows only (its receipt and its transitions)
    assert read == 1 + 4 and book.receipts_read == watermark + 1
    assert book.earnings(2e9).verified == Money(D("3.5"), 301)


async def test_the_keeper_reads_through_one_connection_kept_for_its_life(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the engine's keeper over a journal that grows between reads
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    opened: list[sqlite3.Connection] = []
    connect = ledger.connect_readonly

    def counting(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(ledger, "connect_readonly", counting)
    keeper = EarningsKeeper(path)
    try:
        for i in range(5):
            await _job(journal, f"j{i}", "gpu:0/0", {"type": "inference", "model": "m"})
            await _receipt(journal, f"j{i}", 0.25)
            await journal.record_payments([(f"j{i}", "0.25", "paid")])
            earnings = await asyncio.to_thread(keeper.read_journal, 2e9 + 100 * i)
        # Then five reads, from pool threads, went through one connection, and add up
        assert len(opened) == 1
        assert earnings == _full(path, 2e9 + 400)
        assert earnings.verified == earnings.paid == Money(D("1.25"), 5)
        # And a read that fails gives the connection up; the next opens a fresh one
        monkeypatch.setattr(keeper.book, "read_new", _unreadable)
        with pytest.raises(sqlite3.OperationalError):
            keeper.read_journal(2e9 + 500)
        monkeypatch.undo()
        assert keeper._conn is None
        keeper.read_journal(2e9 + 600)
        assert keeper._conn is not None and keeper._conn is not opened[0]
    finally:
        keeper.close()
        await journal.close()


async def test_closing_the_keeper_waits_for_the_read_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a keeper whose read is running in a pool thread (the engine stopping cancels the
    # awaiting task, but the thread runs on)
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    await _job(journal, "j1", "gpu:0/0", {"type": "inference", "model": "m"})
    await _receipt(journal, "j1", 0.25)
    keeper = EarningsKeeper(path)
    inside, go_on = threading.Event(), threading.Event()
    read_new = keeper.book.read_new

    def slow_read(conn: sqlite3.Connection) -> int:
        inside.set()
        go_on.wait(10)
        return read_new(conn)  # uses the connection after close() was called

    monkeypatch.setattr(keeper.book, "read_new", slow_read)
    try:
        reading = asyncio.ensure_future(asyncio.to_thread(keeper.read_journal, 2e9))
        assert await asyncio.to_thread(inside.wait, 10)
        # When the keeper is closed meanwhile
        keeper.close()
        go_on.set()
        earnings = await reading
        # Then the read finished on its connection, and closed it as it ended
        assert earnings.verified == Money(D("0.25"), 1)
        assert keeper._conn is None
        with pytest.raises(RuntimeError):
            keeper.read_journal(2e9)
    finally:
        go_on.set()
        keeper.close()
        await journal.close()


def _unreadable(conn: sqlite3.Connection) -> int:
    raise sqlite3.OperationalError("database disk image is malformed")


async def test_a_receipt_replaced_after_thousands_more_is_taken_back_out_once(
        tmp_path: Path) -> None:
    # Given a book that has read a receipt, then 5,000 more receipts written after it
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    book = Book()
    try:
        await _job(journal, "early", "gpu:0/0", {"type": "inference", "model": "m"})
        await _receipt(journal, "early", 0.5)
        _read(path, book, 2e9)
        with sqlite3.connect(path) as conn:
            conn.executemany(
                "INSERT INTO receipts(receipt_id, job_id, received_at, price, verdict, counted,"
                " duplicate, body) VALUES (?, ?, ?, 0.001, 'valid_pinned', 1, 0, '{}')",
                ((f"bulk-{i}", f"bulk-{i}", 2e9 - 60 + i / 1000) for i in range(5000)))
        _read(path, book, 2e9)
        # When the early receipt is stored again, and a new one is stored twice between reads
        await _receipt(journal, "early", 0.5)
        await _job(journal, "late", "gpu:1", {"type": "inference", "model": "m"})
        await _receipt(journal, "late", 0.25)
        await _receipt(journal, "late", 0.25)
        _read(path, book, 2e9)
        # And the newest row, already read, is stored again (its rowid was the largest)
        await _receipt(journal, "late", 0.25)
        incremental = _read(path, book, 2e9)
    finally:
        await journal.close()
    # Then each counts once, as in the full recompute, and the book holds no receipts
    assert incremental == _full(path, 2e9)
    assert incremental.verified == Money(D("5.75"), 5002)
    assert dict(incremental.by_gpu)["gpu:0"] == Money(D("0.5"), 1)


def test_memory_is_bounded_under_hostile_model_names_and_a_long_run() -> None:
    # Given a day and more of receipts, each with a new model name
    book = Book()
    n = 5000
    for i in range(n):
        book.add_receipt(row(f"r{i}", T0 + i * 60, "0.001", model=f"model-{i}"))
    # Then groups stop at MAX_GROUPS (the rest is "(other)"), buckets at one day
    e = book.earnings(T0 + n * 60)
    assert len(book.by_model) == ledger.MAX_GROUPS + 1
    assert dict(e.by_model)[ledger.OTHER].jobs == n - ledger.MAX_GROUPS
    assert len(book.minutes) <= ledger.DAY_MINUTES + ledger.HOUR_MINUTES + 1
    assert e.verified == Money(D("5.000"), n)


def test_a_receipt_view_price_is_exact() -> None:
    class Record:
        receipt_id, job_id, received_at, units, unit_type = "r", "j", T0, 1.0, "s"
        price, verdict, reason, counted, duplicate = 0.0346, "valid_pinned", None, True, False

    assert ReceiptView.of(Record()).price == D("0.0346")
