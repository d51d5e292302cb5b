"""The outbox: deliver every staged outcome exactly once, across outages and restarts.

``/result`` and ``/fail`` are not idempotent (a second ``/result`` makes a second
receipt), so before each send the job is journaled ``uncertain`` ("may be in flight"),
and only the coordinator's answer moves it on:

* 200 -> ``delivered`` (the receipt is verified and stored).
* the request provably never arrived (connect error/timeout, pool timeout), a 5xx
  (the server says it failed) or 429 (refused) -> back to ``staged``; resent after a
  capped, jittered backoff, forever: the coordinator is allowed to be down.
* 404/422 -> ``rejected``: the coordinator will never take it; the operator sees why.
* read timeout, connection dropped after sending, unreadable 200 -> stays
  ``uncertain`` and is resolved on purpose (also after a crash mid-send):

  - ``/result`` where the coordinator lets us look (2026-08's earnings call lists our
    jobs): if the job is listed, it arrived -> ``delivered``; else it is resent.
  - ``/result`` where it does not (2026-01): **resent**. Losing a client's result is
    worse than a duplicate receipt; the ledger counts one receipt per job and flags any
    duplicate so the operator can dispute it (the receipt a blind resend brings back is
    stored ``duplicate``: the coordinator may hold an earlier one we never saw).
  - ``/fail``: resent. A repeated failure report makes no receipt and no charge.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..backoff import Backoff
from ..coordinator import (
    AuthRefused,
    CoordinatorError,
    Invalid,
    NotFound,
    ProtocolViolation,
    RateLimited,
    Unavailable,
    Uncertain,
)
from ..journal import FINAL_STATES, JobRecord, JobState, ReceiptRecord
from ..money import amount_of
from ..receipts import verify
from .core import Core
from .fleetlink import FLEET_WAIT_S, Permit
from .snapshot import (
    AuthRefusedEvent,
    DeliveryProblem,
    Link,
    OutcomeDelivered,
    ReceiptStored,
    ReceiptView,
)


class Outbox:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        # /result jobs resent after an uncertain try the coordinator could not be asked
        # about: the coordinator may hold an earlier receipt, so the one we get is flagged.
        self._resent_blind: set[str] = set()
        self._permits: dict[str, Permit] = {}  # the fleet's fence of each send in progress

    def enqueue(self, job_id: str) -> None:
        if job_id in self._pending:
            return
        self._pending.add(job_id)
        self._empty.clear()
        self._queue.put_nowait(job_id)
        self._sync_size()

    async def load(self) -> None:
        """Queue what a previous run left undelivered."""
        for record in await self.core.journal.outbox():
            self.enqueue(record.job_id)

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def _sync_size(self) -> None:
        self.core.outbox_size = len(self._pending)
        self.core.changed()

    async def worker(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self.deliver(job_id)
            finally:
                self._pending.discard(job_id)
                if not self._pending:
                    self._empty.set()
                self._sync_size()
                self.core.wake_poll.set()  # the coordinator now counts one job fewer

    async def deliver(self, job_id: str) -> None:
        core = self.core
        backoff = Backoff(rng=core.rng)
        while True:
            record = await core.journal.get(job_id)
            if record is None or record.state in FINAL_STATES:
                return
            if record.state is JobState.UNCERTAIN:
                if await self._resolve(record):
                    await self._settled(record)
                    return
                continue
            permit = await self._permit(record)
            if permit is None:
                continue  # the fleet asked us to wait: ask again
            if permit.done_by is not None:
                return
            await core.journal.mark_uncertain(job_id, f"sending /{record.endpoint}")
            try:
                await self._send(record)
                await self._settled(record)
                return
            except Uncertain as exc:
                core.count(uncertain=1)
                delay = backoff.next_delay()
                self._problem(record, backoff.attempt, delay, f"{exc}; outcome uncertain")
            except (NotFound, Invalid) as exc:
                await core.journal.mark_rejected(job_id, str(exc))
                await self._settled(record)
                core.count(rejected=1)
                self._problem(record, backoff.attempt + 1, None,
                              f"the coordinator refused the outcome for good: {exc}")
                # A refused outcome never decrements the coordinator's inflight counter:
                # a heartbeat now repairs it, else a full miner idles until the next one.
                core.wake_session.set()
                return
            except AuthRefused as exc:
                await core.journal.mark_staged_again(job_id, str(exc))
                await self._unsent(record)
                core.set_link(Link.AUTH_REFUSED, f"/{record.endpoint} answered {exc.message}")
                core.emit(AuthRefusedEvent(
                    at=core.clock(), endpoint=record.endpoint or "?", status=exc.status,
                    message=f"the coordinator refused the miner key on /{record.endpoint} "
                    f"({exc.message}); outcomes are kept until the key is fixed"))
                await core.wait_until(lambda s: s.connection.link is not Link.AUTH_REFUSED,
                                      timeout=None)
                continue
            except (Unavailable, ProtocolViolation) as exc:
                await core.journal.mark_staged_again(job_id, str(exc))
                await self._unsent(record)
                delay = backoff.next_delay(
                    exc.retry_after if isinstance(exc, RateLimited) else None)
                self._problem(record, backoff.attempt, delay, str(exc))
            await asyncio.sleep(delay)

    async def _permit(self, record: JobRecord) -> Permit | None:
        """May this send go out (docs/fleet.md)? A lone rig always may. With a fleet, the
        fleet's fencing decides: ``None`` after a wait (ask again); ``done_by`` set: another
        rig delivered the job, which is now settled here without a send."""
        core = self.core
        if core.fleet is None:
            return Permit()
        permit = await core.fleet.permit(record)
        if permit is None:
            await asyncio.sleep(FLEET_WAIT_S)
            return None
        if permit.done_by is not None:
            await core.journal.mark_delivered(
                record.job_id, f"delivered by rig {permit.done_by}; not sent from here")
            await core.journal.record_fleet(record.job_id, delivered_by=permit.done_by)
            core.set_loop("outbox", f"job {record.job_id} was delivered by rig "
                          f"{permit.done_by}")
            return permit
        self._permits[record.job_id] = permit
        return permit

    async def _settled(self, record: JobRecord) -> None:
        """The coordinator settled a send (delivered or refused for good): tell the fleet."""
        permit = self._permits.pop(record.job_id, None)
        if self.core.fleet is not None and permit is not None:
            await self.core.fleet.sent(record, permit)

    async def _unsent(self, record: JobRecord) -> None:
        """That send did not reach the coordinator: tell the fleet (it is sent again)."""
        permit = self._permits.pop(record.job_id, None)
        if self.core.fleet is not None and permit is not None:
            await self.core.fleet.unsent(record, permit)

    async def _send(self, record: JobRecord) -> None:
        core = self.core
        body = record.body or {}
        if record.endpoint == "result":
            answer = await core.client.result(record.job_id, body)
            await core.journal.mark_delivered(record.job_id)
            resent = record.job_id in self._resent_blind
            self._resent_blind.discard(record.job_id)
            receipt = None
            if answer.receipt is not None:
                receipt = await self._store_receipt(record, answer.receipt, resent=resent)
        else:
            await core.client.fail(record.job_id, body)
            await core.journal.mark_delivered(record.job_id)
            # 2026-08 keeps counting a failed job as in flight until a heartbeat says otherwise.
            core.wake_session.set()
            receipt = None
        self._delivered(record, receipt)

    def _delivered(self, record: JobRecord, receipt: ReceiptRecord | None = None) -> None:
        """The job's summary: its one INFO log line."""
        core = self.core
        core.count(delivered=1)
        body = record.body or {}
        ms = body.get("metrics", {}).get("duration_ms") if isinstance(body, dict) else None
        duration = round(ms / 1000, 3) if isinstance(ms, int | float) else None
        outcome = record.outcome.value if record.outcome else None
        text = f"job {record.job_id} ({record.job_type or '?'}) {outcome or 'ended'}"
        if record.error_code:
            text += f" {record.error_code}: {str(body.get('error_message', ''))[:200]}"
        text += (f" in {duration:.2f}s" if duration is not None else "") + (
            f" on {record.slot}" if record.slot else "")
        text += f"; /{record.endpoint} delivered"
        if receipt is not None:
            text += f", receipt {receipt.receipt_id} {exact_aitbc(receipt.price)}"
        core.emit(OutcomeDelivered(
            at=core.clock(), job_id=record.job_id, endpoint=record.endpoint or "?",
            attempts=record.attempts + 1, job_type=record.job_type, outcome=outcome,
            code=record.error_code, duration_s=duration, slot=record.slot,
            receipt_id=receipt.receipt_id if receipt else None,
            price=receipt.price if receipt else None, message=text))

    async def _resolve(self, record: JobRecord) -> bool:
        """Settle an uncertain delivery; True when it turned out delivered."""
        core = self.core
        if record.endpoint == "result" and core.lookup_supported is not False:
            try:
                earnings = await core.client.earnings()
            except CoordinatorError as exc:
                self._problem(record, record.attempts, 1.0, f"cannot look the job up yet: {exc}")
                await asyncio.sleep(core.rng.uniform(0.5, 1.5))
                return False
            core.lookup_supported = earnings is not None
            if earnings is not None:
                if any(e.job_id == record.job_id for e in earnings.earnings_history):
                    await core.journal.mark_delivered(
                        record.job_id, "the coordinator lists it (earnings); receipt not received")
                    self._delivered(record)
                    return True
                await core.journal.mark_staged_again(
                    record.job_id, "the coordinator has no record of it; resending")
                return False
        policy = (
            "resending /fail: a repeated failure report makes no receipt and no charge"
            if record.endpoint == "fail"
            else "this coordinator cannot be asked; policy: resend, and count one receipt per job"
        )
        if record.endpoint == "result":
            self._resent_blind.add(record.job_id)
        await core.journal.mark_staged_again(record.job_id, policy)
        return False

    async def _store_receipt(self, record: JobRecord, receipt: dict[str, Any], *,
                             resent: bool = False) -> ReceiptRecord:
        core = self.core
        metrics = (record.body or {}).get("metrics", {})
        units = metrics.get("units")
        if not isinstance(units, int | float):
            units = metrics.get("duration_ms", 0) / 1000
        check = verify(receipt, pinned_key=core.tuning.pinned_key, job_id=record.job_id,
                       providers=frozenset({core.tuning.miner_id, core.miner_key}),
                       units=float(units))
        stored = await core.journal.store_receipt(
            record.job_id, receipt, verdict=check.verdict.value, reason=check.reason,
            key_id=check.key_id, counted=check.counted, resent=resent)
        if stored.replaced_counted is None:
            core.receipts = core.receipts.push(ReceiptView.of(stored))
            core.count(receipts=1, receipts_flagged=0 if stored.counted else 1)
        else:  # the same receipt stored again: its row was replaced, not added
            core.receipts = core.receipts.without(stored.receipt_id).push(ReceiptView.of(stored))
            core.count(receipts_flagged=int(stored.replaced_counted) - int(stored.counted))
        core.earnings_dirty.set()
        # the flag leads the message, so a line cut short (a terminal, a log viewer) keeps it
        if not stored.counted:
            flag, why = (("DUPLICATE", "not counted") if stored.duplicate
                         else ("NOT COUNTED", check.reason))
        elif stored.duplicate:
            flag, why = ("POSSIBLE DUPLICATE", "/result was resent after an uncertain "
                         "delivery; counted once, the coordinator may hold a second receipt")
        else:
            flag, why = "", ""
        text = (f"receipt {stored.receipt_id} for job {record.job_id}: "
                f"{exact_aitbc(stored.price)}, {check.verdict.value}")
        core.emit(ReceiptStored(at=core.clock(), job_id=record.job_id,
                                receipt_id=stored.receipt_id, price=stored.price,
                                verdict=check.verdict.value, counted=stored.counted,
                                duplicate=stored.duplicate,
                                message=f"{flag}: {text}; {why}" if flag else text))
        return stored

    def _problem(self, record: JobRecord, attempt: int, delay: float | None, reason: str) -> None:
        core = self.core
        then = f"; retrying in {delay:.1f}s" if delay is not None else ""
        core.emit(DeliveryProblem(at=core.clock(), job_id=record.job_id,
                                  endpoint=record.endpoint or "?", attempt=attempt,
                                  delay_s=None if delay is None else round(delay, 3),
                                  reason=reason,
                                  message=f"job {record.job_id}: /{record.endpoint} attempt "
                                  f"{attempt}: {reason}{then}"))


def exact_aitbc(price: object) -> str:
    """A receipt's price as the coordinator gave it, in plain digits: ``0.00002 AITBC``,
    never ``2e-05``; ``no price`` when it has none."""
    amount = amount_of(price)
    return "no price" if amount is None else f"{amount:f} AITBC"
