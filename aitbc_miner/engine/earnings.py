"""Keeps the snapshot's earnings current, incrementally, and meters the GPUs' energy.

One :class:`ledger.Book` lives as long as the engine. After receipts arrive (at most once
per ``min_interval_s``), and every ``REFRESH_S`` so the time windows roll on, it reads
only the journal rows written since its last read (off the loop), so an update costs
``O(new jobs)`` however long the journal is. Before, the whole journal was summarised
again up to once a second. The coordinator's "paid" state is re-read in full at most
once per ``PAID_EVERY_S`` (it changes only when payments are synced, once a minute).

Energy: on every GPU telemetry sample (``observe_energy``), each GPU's energy since its
previous sample (the sampler integrates NVML power into ``GpuView.energy_wh``) goes to
``core.energy``, put down to the jobs on it then. With an
electricity price configured (``Tuning.tariff``), the earnings carry their
profitability. The meter is saved next to the journal once a minute (and loaded at
start), so ``aitbc-miner earnings`` and the next start see the last day's energy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

from .. import ledger
from ..energy import EnergyMeter, EnergyReading, energy_path, profitability
from ..money import Earnings, Money, amount_of
from .core import Core, HeldJob

log = logging.getLogger(__name__)

REFRESH_S = 30.0
READ_CACHE_KIB = 256  # the kept connection reads only new rows; a small cache does
PAID_EVERY_S = 60.0
SAVE_ENERGY_S = 60.0


class EarningsKeeper:
    """The engine's book and its last "paid" figure; ``read_journal`` runs in a thread,
    one call at a time.

    It keeps one read-only connection, with a small page cache, for as long as it lives.
    Opening one for each read (once a second while receipts arrive) made SQLite parse the
    schema and allocate and free its page cache every time, from the worker thread; over
    an hour, that churn left malloc holding megabytes of free memory in small pieces.

    ``close`` never closes the connection under a read still running in its thread (a
    cancelled ``to_thread`` call runs on): that read closes it as it ends."""

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = journal_path
        self.book = ledger.Book()
        self.paid = Money()
        self._paid_at: float | None = None
        self._conn: sqlite3.Connection | None = None
        self._reading = threading.Lock()
        self._closed = False

    def read_journal(self, now: float) -> Earnings:
        """Add the rows written since the last call; the earnings as of ``now``."""
        with self._reading:
            if self._closed:
                raise RuntimeError("the earnings keeper is closed")
            if self._conn is None:
                self._conn = ledger.connect_readonly(
                    self.journal_path, cache_kib=READ_CACHE_KIB, any_thread=True)
            try:
                self.book.read_new(self._conn)
                if self._paid_at is None or now - self._paid_at >= PAID_EVERY_S:
                    self.paid, self._paid_at = ledger.paid(self._conn), now
            except sqlite3.Error:
                self._drop()  # the next read starts on a fresh connection
                raise
            earnings = self.book.earnings(now, self.paid)
        if self._closed:  # closed while this read ran: the read closes it
            self.close()
        return earnings

    def close(self) -> None:
        """Close now, or, while a read runs, as that read ends; never waits."""
        self._closed = True
        if self._reading.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._reading.release()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def work_name(job: HeldJob) -> str:
    """What a job's energy and earnings are grouped under: its model, else its type
    (the ledger's rule, ``ledger.Book.read_new``)."""
    return job.model or job.job_type or "-"


def observe_energy(core: Core) -> None:
    """Put the GPUs' energy since their last sample down to their work (a GPU telemetry
    hook, after ``core.gpu`` took the new sample)."""
    running = {s.slot_id: core.held.get(s.job_id) for s in core.pool.slots if s.job_id}
    readings = []
    for gpu in core.gpu.gpus:
        name = ledger.gpu_of(gpu.slot_ids[0]) if gpu.slot_ids else f"gpu:{gpu.index}"
        work = tuple(work_name(job) for slot_id in gpu.slot_ids
                     if (job := running.get(slot_id)) is not None)
        readings.append(EnergyReading(name, amount_of(gpu.energy_wh), work))
    core.energy.observe(core.clock(), readings)


async def keep_earnings(core: Core, min_interval_s: float = 1.0,
                        refresh_s: float = REFRESH_S) -> None:
    keeper = EarningsKeeper(core.journal.path)
    try:
        await _keep(core, keeper, min_interval_s, refresh_s)
    finally:
        keeper.close()  # a read-only connection: closing it is quick


async def _keep(core: Core, keeper: EarningsKeeper, min_interval_s: float,
                refresh_s: float) -> None:
    saved_to = energy_path(core.journal.path)
    core.energy.restore(await asyncio.to_thread(EnergyMeter.load, saved_to))
    saved_at = core.clock()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(refresh_s):
                await core.earnings_dirty.wait()
        core.earnings_dirty.clear()
        now = core.clock()
        try:
            earnings = await asyncio.to_thread(keeper.read_journal, now)
            if core.tuning.tariff is not None:  # on the loop: the meter changes here
                earnings = replace(earnings, profit=profitability(
                    keeper.book, core.energy, core.tuning.tariff, now))
            core.earnings = earnings
            if now - saved_at >= SAVE_ENERGY_S:
                saved_at = now
                await asyncio.to_thread(core.energy.save_json, saved_to, core.energy.to_json())
        except Exception as exc:  # a view, never worth stopping the miner for
            log.warning("cannot summarise the ledger: %s; trying again after the next receipt",
                        exc)
            core.set_loop("earnings", "ledger unreadable", f"{type(exc).__name__}: {exc}")
        core.changed()
        await asyncio.sleep(min_interval_s)
