"""Housekeeping loops (earnings view, payments, retention) never take the miner down."""

from __future__ import annotations

from aitbc_miner.devnet import Devnet


async def test_an_unreadable_ledger_is_reported_and_jobs_keep_flowing(
        devnet: Devnet, make_engine, run_engine, monkeypatch) -> None:
    # Given a miner whose ledger summary cannot be read (as when its files are swept away)
    from aitbc_miner.engine import earnings

    def broken(_keeper, _now):
        raise OSError("unable to open database file")

    monkeypatch.setattr(earnings.EarningsKeeper, "read_journal", broken)
    engine = make_engine(devnet.url)
    running = run_engine(engine)
    # When receipts arrive and the summary fails
    for i in range(3):
        await devnet.submit_job({"type": "sha256", "data": str(i)})
    snap = await engine.wait_until(
        lambda s: s.counters.delivered == 3 and any(
            loop.name == "earnings" and loop.last_error for loop in s.loops), timeout=20)
    # Then the failure is shown on the loop, and the engine is still running
    assert "unable to open database file" in next(
        loop.last_error for loop in snap.loops if loop.name == "earnings")
    assert not running.task.done()
