"""The smallest end-to-end path: jobs in, outcomes out, against both dialects."""

from __future__ import annotations

from typing import Any

import pytest

from aitbc_miner.devnet import Devnet


async def test_jobs_flow_and_each_gets_one_receipt(devnet: Devnet, make_engine, run_engine) -> None:
    # Given a miner with two CPU slots and a coordinator with five jobs, one unsupported
    ids = [await devnet.submit_job({"type": "sha256", "data": str(i)}) for i in range(4)]
    bad = await devnet.submit_job({"type": "transcribe", "url": "x"})
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    running = run_engine(engine)
    # When every outcome is delivered
    snap = await engine.wait_until(lambda s: s.counters.delivered == 5, timeout=20)
    await running.stop()
    # Then four completed with exactly one pinned, valid receipt each and one was refused
    assert snap.counters.completed == 4 and snap.counters.failed == 1
    receipts = await _receipts(engine)
    assert sorted(r.job_id for r in receipts) == sorted(_ids(ids))
    assert {r.verdict for r in receipts} == {"valid_pinned"}
    failed = devnet.jobs[_ids([bad])[0]]
    assert failed["state"] == "FAILED"
    # The failure text a client sees: "<code>: <message>" on 2026-01, the message on 2026-08
    expected = "job type 'transcribe' is not supported"
    if devnet.dialect.value == "2026-01":
        expected = "E_UNSUPPORTED: " + expected
    assert failed["error"].startswith(expected)


def _ids(jobs: list) -> list[str]:
    return [j if isinstance(j, str) else j["job_id"] for j in jobs]


async def _receipts(engine):
    from aitbc_miner.journal import Journal

    journal = await Journal.open(engine._journal_path)
    try:
        return await journal.receipts()
    finally:
        await journal.close()


async def test_a_restart_shows_the_newest_receipts_reading_no_more(
        devnet: Devnet, make_engine, run_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a journal of 30 receipts, 10 of them not counted, and a window of 20
    from aitbc_miner.engine import core
    from aitbc_miner.journal import Journal

    monkeypatch.setattr(core, "RECENT_RECEIPTS", 20)
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    journal = await Journal.open(engine._journal_path)
    try:
        for n in range(30):
            await journal.store_receipt(f"j{n:02d}", {"receipt_id": f"r{n:02d}", "price": 0.1},
                                        verdict="valid_pinned", reason="", key_id="k",
                                        counted=n % 3 != 0)
    finally:
        await journal.close()
    read: list[int] = []
    receipts = Journal.receipts

    async def counting(self: Journal, *args: Any, **kwargs: Any) -> Any:
        rows = await receipts(self, *args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(Journal, "receipts", counting)
    # When the miner starts on it
    run_engine(engine)
    snap = await engine.wait_until(lambda s: s.counters.receipts == 30, timeout=20)
    # Then it shows the newest 20, newest first, counts all 30, and read only 20 rows
    assert [r.receipt_id for r in snap.receipts] == [f"r{n:02d}" for n in range(29, 9, -1)]
    assert snap.counters.receipts_flagged == 10
    assert read == [20]
