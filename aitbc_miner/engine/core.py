"""The engine's shared state: flags, held jobs, counters, and the ways loops report.

The loops (session, poller, outbox, job tasks) each own their part of the work and
share this one object. Anything that changes what a viewer would see calls
``changed()``; anything worth telling calls ``emit()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import __version__
from ..coordinator import CoordinatorClient
from ..energy import EnergyMeter, Tariff
from ..gpu import Sampler
from ..identity.signed_result import ResultSigner
from ..journal import Journal
from ..runners import RunnerRegistry
from ..untrusted import scrub
from .bus import EventBus
from .fleetlink import FleetLink
from .receipt_window import ReceiptWindow
from .slots import Slot, SlotPool
from .snapshot import (
    FLEET_UNREACHABLE,
    ConnectionView,
    Counters,
    DiskView,
    Earnings,
    Event,
    FleetStatus,
    GpuStatus,
    Link,
    LinkChanged,
    LoopView,
    Mode,
    OutcomeView,
    RunningJob,
    Snapshot,
)

log = logging.getLogger("aitbc_miner.engine")

RECENT_OUTCOMES = 50  # outcomes kept for the status view
RECENT_RECEIPTS = 10_000  # receipts kept in memory for the console's table


@dataclass
class HeldJob:
    """A job between claim and staging: queued for a slot, or running in one."""

    job_id: str
    job_type: str
    claimed_at: float
    task: asyncio.Task[None] | None = None
    slot: Slot | None = None
    started_at: float | None = None
    cancel_reason: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    payload_view: tuple[tuple[str, str], ...] = ()
    staged: bool = False  # its outcome is being (or has been) written: too late to cancel


SECRET_LOOKING = re.compile(r"key|token|secret|passw|auth|cookie|credential", re.I)
SHOWN_CHARS = 200  # a payload value longer than this is cut in views


def payload_view(payload: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A payload as the console may show it: secret-looking keys masked, long values cut."""
    shown = []
    for key, value in payload.items():
        text = "***" if SECRET_LOOKING.search(str(key)) else (
            value if isinstance(value, str) else json.dumps(value, default=str))
        shown.append((scrub(str(key)), scrub(text, max_chars=SHOWN_CHARS)))
    return tuple(shown)


@dataclass(frozen=True)
class Tuning:
    """Engine knobs that come from the config (kept small so tests can build one)."""

    miner_id: str
    coordinator_url: str
    heartbeat_interval_s: float = 15.0
    poll_min_s: float = 0.25
    poll_max_s: float = 1.0
    default_timeout_s: float = 600.0
    max_timeout_s: float = 3600.0
    drain_grace_s: float = 300.0
    region: str | None = None
    price: float | None = None
    pinned_key: str | None = None
    outbox_workers: int = 4
    retention_jobs: int = 200
    retention_days: float = 7.0
    flush_timeout_s: float = 10.0  # how long a stop waits for the outbox to empty
    min_free_mb: float = 0.0  # data-disk floor: below it nothing is claimed (0: none)
    disk_check_s: float = 5.0  # how often free space is measured
    tariff: Tariff | None = None  # electricity price and AITBC rate: profitability


class Core:
    def __init__(
        self,
        tuning: Tuning,
        *,
        client: CoordinatorClient,
        journal: Journal,
        pool: SlotPool,
        registry: RunnerRegistry,
        workspace_root: Any,
        miner_key: str,
        rng: random.Random,
        clock: Callable[[], float] = time.time,
        telemetry: Sampler | None = None,
    ) -> None:
        self.tuning = tuning
        self.telemetry = telemetry  # GPU sampler; None: no GPU side at all
        self.signer: ResultSigner | None = None  # signs each result with the rig key
        self.client = client
        self.journal = journal
        self.pool = pool
        self.registry = registry
        self.workspace_root = workspace_root
        self.miner_key = miner_key
        self.rng = rng
        self.clock = clock
        self.bus = EventBus()

        self.warnings: tuple[str, ...] = ()  # the registry's standing warnings, set at start
        self.fleet: FleetLink | None = None  # set by a fleet (docs/fleet.md); None: a lone rig
        self.fleet_status = FleetStatus()
        self.paused = False
        self.draining = False
        self.exit_when_drained = False
        self.stopping = False
        self.started = False
        self.started_at = clock()  # the agent's start, for its uptime in every viewer
        self.stopped = asyncio.Event()

        self.link = Link.CONNECTING
        self.link_reason: str | None = None
        self.backoff_until: float | None = None
        self.last_heartbeat_at: float | None = None
        self.lookup_supported: bool | None = None
        self.registered_concurrency = 0

        self.held: dict[str, HeldJob] = {}
        self.counters = Counters()
        self.outbox_size = 0
        self.recent: deque[OutcomeView] = deque(maxlen=RECENT_OUTCOMES)
        self.receipts = ReceiptWindow(RECENT_RECEIPTS)  # newest first
        self.earnings = Earnings()
        self.earnings_dirty = asyncio.Event()
        self.energy = EnergyMeter()  # the GPUs' energy, put down to their jobs
        self.gpu = GpuStatus()
        self.disk = DiskView()
        self.loops: dict[str, LoopView] = {}
        self.poll_interval_s = tuning.poll_min_s
        self.polls_in_flight = 0

        # Wake-ups: each loop waits on its own event besides its timer.
        self.wake_poll = asyncio.Event()
        self.wake_session = asyncio.Event()
        self.wake_outbox = asyncio.Event()
        self.wake_disk = asyncio.Event()  # a job found the disk full: measure it now
        self.need_register = True
        self._seq = 0
        self._waiters: list[tuple[Callable[[Snapshot], bool], asyncio.Future[Snapshot]]] = []
        self._check_scheduled = False
        self._dirty = asyncio.Event()

    # --- what viewers see ---------------------------------------------------------

    @property
    def mode(self) -> Mode:
        if not self.started:
            return Mode.STARTING
        if self.stopped.is_set():
            return Mode.STOPPED
        if self.stopping:
            return Mode.STOPPING
        if self.draining:
            return Mode.DRAINED if not self.held else Mode.DRAINING
        return Mode.PAUSED if self.paused else Mode.RUNNING

    @property
    def claiming(self) -> bool:
        """Whether the poller may claim work now."""
        return (
            self.started and not (self.paused or self.draining or self.stopping)
            and self.link is not Link.AUTH_REFUSED and not self.disk.low
        )

    def capabilities_changed(self) -> None:
        """A runner's offer changed (models, backend up/down): register it again."""
        self.need_register = True
        self.wake_session.set()

    def capacity_free(self) -> bool:
        """Whether the coordinator would hand us a job now.

        It counts a job ours from poll until its outcome arrives (spec fact 2), so jobs
        we hold and outcomes still in the outbox both fill its ``concurrency``; polling
        beyond that only earns a 204.
        """
        return len(self.held) + self.outbox_size < self.pool.usable()

    def snapshot(self) -> Snapshot:
        jobs = tuple(
            RunningJob(
                job_id=h.job_id,
                job_type=h.job_type,
                slot_id=h.slot.slot_id if h.slot else None,
                claimed_at=h.claimed_at,
                started_at=h.started_at,
                state="canceling" if h.cancel_reason else ("running" if h.slot else "queued"),
                progress=tuple(sorted(h.progress.items())),
                model=h.model,
                payload=h.payload_view,
            )
            for h in self.held.values()
        )
        return Snapshot(
            seq=self._seq,
            at=self.clock(),
            version=__version__,
            miner_id=self.tuning.miner_id,
            mode=self.mode,
            connection=ConnectionView(
                link=self.link,
                url=self.tuning.coordinator_url,
                last_heartbeat_at=self.last_heartbeat_at,
                backoff_until=self.backoff_until,
                reason=self.link_reason,
                lookup_supported=self.lookup_supported,
                concurrency=self.registered_concurrency,
            ),
            loops=tuple(self.loops[k] for k in sorted(self.loops)),
            slots=self.pool.views(claiming=self.claiming, draining=self.draining or self.stopping),
            jobs=jobs,
            counters=self.counters,
            outbox=self.outbox_size,
            recent=tuple(reversed(self.recent)),
            poll_interval_s=self.poll_interval_s,
            polls_in_flight=self.polls_in_flight,
            warnings=self.warnings + self.gpu.warnings + ((FLEET_UNREACHABLE,)
                                      if self.fleet_status.state == "unreachable" else ()),
            receipts=self.receipts,
            earnings=self.earnings,
            gpu=self.gpu,
            disk=self.disk,
            started_at=self.started_at,
            fleet=self.fleet_status,
        )

    def changed(self) -> None:
        self._seq += 1
        self._dirty.set()
        if self._waiters and not self._check_scheduled:
            self._check_scheduled = True
            asyncio.get_running_loop().call_soon(self._check_waiters)

    def _check_waiters(self) -> None:
        self._check_scheduled = False
        snap = self.snapshot()
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate(snap):
                future.set_result(snap)

    async def wait_until(
        self, predicate: Callable[[Snapshot], bool], timeout: float | None
    ) -> Snapshot:
        """Wait until a snapshot satisfies ``predicate`` (tests and the CLI; no polling)."""
        snap = self.snapshot()
        if predicate(snap):
            return snap
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiters.remove(waiter)

    async def publish_snapshots(self, min_interval_s: float = 0.2) -> None:
        """Coalesce changes into at most one published snapshot per ``min_interval_s``."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self.bus.publish_snapshot(self.snapshot())
            await asyncio.sleep(min_interval_s)

    def count(self, **deltas: int) -> None:
        self.counters = replace(
            self.counters, **{k: getattr(self.counters, k) + v for k, v in deltas.items()}
        )
        self.changed()

    def set_loop(self, name: str, activity: str, error: str | None = None) -> None:
        current = self.loops.get(name)
        last_error = error if error is not None else (current.last_error if current else None)
        self.loops[name] = LoopView(name, activity, last_error)
        self.changed()

    def set_link(self, link: Link, reason: str | None = None, until: float | None = None) -> None:
        if link is not self.link or reason != self.link_reason:
            previous = self.link
            self.link, self.link_reason, self.backoff_until = link, reason, until
            if link is not previous:
                # The poller parks while the link is down; a change must re-check that,
                # else a miner whose heartbeat recovered first never polls again.
                self.wake_poll.set()
                self.emit(LinkChanged(at=self.clock(), link=link.value, reason=reason,
                                      message=f"coordinator link {link.value}"
                                      + (f": {reason}" if reason else "")))
        self.backoff_until = until
        self.changed()

    def emit(self, event: Event) -> None:
        level = logging.getLevelName(event.log_severity())
        log.log(level, event.message or event.name, extra={"event_name": event.name,
                                                           **event.fields()})
        self.bus.publish(event)
        self.changed()

    async def sleep(self, delay: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep ``delay`` seconds, or less if ``wake`` is set; True when woken."""
        if wake is None:
            await asyncio.sleep(delay)
            return False
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            return False
        return True
