"""The earnings ledger and the receipts/earnings commands, over a real journal."""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aitbc_miner import ledger
from aitbc_miner.codes import ErrorCode
from aitbc_miner.host.cli import main
from aitbc_miner.journal import Journal, Outcome
from aitbc_miner.money import Money
from aitbc_miner.receipts import public_key_id, sign, verify

KEY = Ed25519PrivateKey.generate()
MINER_ID = "rig-ledger"
MINER_KEY = "secret-miner-key-123"


def _receipt(job_id: str, duration_ms: int, *, provider: str = MINER_ID,
             unit_price: float = 0.02) -> dict:
    units = duration_ms / 1000
    return sign({"version": "1.0", "receipt_id": f"r-{job_id}-{provider[:3]}", "job_id": job_id,
                 "provider": provider, "client": "c", "status": "COMPLETED", "units": units,
                 "unit_type": "gpu_seconds", "unit_price": unit_price,
                 "price": round(units * unit_price, 6), "started_at": 1, "completed_at": 2},
                KEY)


async def _job(journal: Journal, job_id: str, duration_ms: int, model: str | None = None,
               code: str | None = None) -> None:
    payload = {"type": "inference", "prompt": "hi", **({"model": model} if model else {})}
    await journal.claim(job_id, payload, {})
    await journal.mark_running(job_id, "gpu:0")
    if code:
        await journal.stage(job_id, Outcome.FAILED, "fail",
                            {"error_code": code, "error_message": "x", "metrics": {}},
                            ErrorCode(code))
    else:
        await journal.stage(job_id, Outcome.COMPLETED, "result",
                            {"result": {}, "metrics": {"duration_ms": duration_ms}})
    await journal.mark_delivered(job_id)


async def _store(journal: Journal, job_id: str, receipt: dict, duration_ms: int) -> None:
    check = verify(receipt, pinned_key=public_key_id(KEY), job_id=job_id,
                   providers=frozenset({MINER_ID, MINER_KEY}), units=duration_ms / 1000)
    await journal.store_receipt(job_id, receipt, verdict=check.verdict.value,
                                reason=check.reason, key_id=check.key_id, counted=check.counted)


async def _fill(path: Path) -> None:
    journal = await Journal.open(path)
    try:
        await _job(journal, "a", 10_000, model="llama3.2:latest")
        await _store(journal, "a", _receipt("a", 10_000), 10_000)
        await _store(journal, "a", dict(_receipt("a", 10_000), receipt_id="r-a-again"), 10_000)
        await _job(journal, "b", 5_000, model="mistral")
        await _store(journal, "b", _receipt("b", 5_000), 5_000)
        await _job(journal, "c", 2_000)
        tampered = dict(_receipt("c", 2_000), price=99.0)  # signature no longer holds
        await _store(journal, "c", tampered, 2_000)
        await _job(journal, "d", 0, code="E_TIMEOUT")
        await _job(journal, "e", 0, code="E_TIMEOUT")
        await _job(journal, "f", 0, code="E_MODEL_NOT_FOUND")
        await journal.record_payments([("b", "0.1", "paid"), ("a", "0.2", "pending")])
    finally:
        await journal.close()


async def test_ledger_counts_each_job_once_and_flags_duplicates_and_invalid(tmp_path: Path) -> None:
    # Given a journal with a duplicate receipt, a tampered one and a paid job
    path = tmp_path / "journal.sqlite3"
    await _fill(path)
    # When it is summarised
    with ledger.open_readonly(path) as conn:
        e = ledger.summarize(conn)
    # Then only a and b count, once each; the duplicate and the tampered receipt are flagged
    assert e.verified == Money(Decimal("0.3"), 2)
    assert e.issued.jobs == 3  # a, b, c received (duplicates excluded)
    assert e.flagged.jobs == 2
    assert e.paid == Money(Decimal("0.1"), 1)
    assert e.today == e.verified and e.last_hour == e.verified
    assert dict(e.by_model) == {"llama3.2:latest": Money(Decimal("0.2"), 1),
                                "mistral": Money(Decimal("0.1"), 1)}
    assert e.failures_by_code == (("E_TIMEOUT", 2), ("E_MODEL_NOT_FOUND", 1))
    assert e.by_day[0][0] == time.strftime("%Y-%m-%d", time.gmtime())


async def test_receipts_command_reverifies_exports_and_never_shows_the_key(
        tmp_path: Path, capsys, monkeypatch) -> None:
    # Given a journal whose receipt names the miner key as provider (2026-01 identity)
    path = tmp_path / "state" / "journal.sqlite3"
    path.parent.mkdir()
    journal = await Journal.open(path)
    await _job(journal, "k", 1_000)
    await _store(journal, "k", _receipt("k", 1_000, provider=MINER_KEY), 1_000)
    await journal.close()
    await _fill(tmp_path / "other.sqlite3")
    monkeypatch.setenv("AITBC_MINER_PATHS__STATE_DIR", str(path.parent))
    monkeypatch.setenv("AITBC_MINER_MINER__ID", MINER_ID)
    monkeypatch.setenv("AITBC_MINER_MINER__KEY", MINER_KEY)
    monkeypatch.setenv("AITBC_MINER_COORDINATOR__PUBLIC_KEY", public_key_id(KEY))
    # When receipts are listed as JSON and CSV
    assert main(["receipts", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["receipts", "--format", "csv", "--output", str(tmp_path / "r.csv")]) == 0
    # Then the verdict is computed again, the provider is masked, and CSV has the row
    assert rows[0]["verdict_now"] == "valid_pinned" and rows[0]["receipt"]["provider"] == "***"
    exported = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [r["job_id"] for r in exported] == ["k"]
    assert MINER_KEY not in (tmp_path / "r.csv").read_text() + json.dumps(rows)


async def test_earnings_command_prints_issued_verified_paid(tmp_path: Path, capsys,
                                                             monkeypatch) -> None:
    # Given a filled journal
    await _fill(tmp_path / "journal.sqlite3")
    monkeypatch.setenv("AITBC_MINER_PATHS__STATE_DIR", str(tmp_path))
    # When earnings are printed as text and JSON
    assert main(["earnings"]) == 0
    text = capsys.readouterr().out
    assert main(["earnings", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # Then the states and failures are there, with counts
    assert "verified 0.3000 (2)" in text and "paid 0.1000 (1)" in text
    assert "E_TIMEOUT 2" in text
    assert data["verified"] == {"amount": "0.3", "jobs": 2}  # exact decimal text
