"""Payment state from the coordinator, for the ledger's "paid" column.

Only 2026-08 tells a miner what it is owed (``POST /miners/{id}/earnings``); on 2026-01
this loop finds the route absent and stays quiet. Every ``interval_s`` it copies each
job's amount and ``payment_status`` into the journal.
"""

from __future__ import annotations

from ..coordinator import CoordinatorError
from .core import Core

SYNC_EVERY_S = 60.0  # payment state changes slowly; once a minute is plenty


async def sync_payments(core: Core, interval_s: float = SYNC_EVERY_S) -> None:
    while True:
        await core.sleep(interval_s)
        if core.lookup_supported is False:
            continue
        try:
            answer = await core.client.earnings()
            if answer is None:
                continue
            await core.journal.record_payments(
                (e.job_id, e.amount, e.payment_status) for e in answer.earnings_history)
        except CoordinatorError as exc:
            core.set_loop("payments", "waiting for the coordinator", str(exc))
            continue
        except Exception as exc:  # bookkeeping, never worth stopping the miner for
            core.set_loop("payments", "sync failed", f"{type(exc).__name__}: {exc}")
            continue
        core.set_loop("payments", f"synced {len(answer.earnings_history)} payment record(s)")
