"""Keeps the snapshot's earnings summary current: recomputed from the journal (off the
loop) after receipts arrive, at most once per ``min_interval_s``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .. import ledger
from .core import Core
from .snapshot import EarningsView, Money

log = logging.getLogger(__name__)


def _money(total: ledger.Total) -> Money:
    return Money(total.amount, total.jobs)


def summarize_file(journal_path: Path) -> EarningsView:
    with ledger.open_readonly(journal_path) as conn:
        e = ledger.summarize(conn)
    return EarningsView(
        today=_money(e.today), last_7_days=_money(e.last_7_days), all_time=_money(e.verified),
        last_hour=_money(e.last_hour), issued=_money(e.issued), verified=_money(e.verified),
        paid=_money(e.paid), flagged=_money(e.flagged),
        by_model=tuple((k, _money(t)) for k, t in e.by_model),
        failures_by_code=e.failures_by_code, currency=e.currency)


async def keep_earnings(core: Core, min_interval_s: float = 1.0) -> None:
    while True:
        await core.earnings_dirty.wait()
        core.earnings_dirty.clear()
        try:
            core.earnings = await asyncio.to_thread(summarize_file, core.journal.path)
        except Exception as exc:  # a view, never worth stopping the miner for
            log.warning("cannot summarise the ledger: %s; trying again after the next receipt",
                        exc)
            core.set_loop("earnings", "ledger unreadable", f"{type(exc).__name__}: {exc}")
        core.changed()
        await asyncio.sleep(min_interval_s)
