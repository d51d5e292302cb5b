"""The Engine: the one object the CLI, the console and remote viewers hold.

``await engine.run()`` owns every loop in one TaskGroup until it is stopped. Viewers read
``snapshot()``, ``subscribe()`` to events or ``add_listener()`` for snapshots, and act
only through the command methods (``pause``, ``resume``, ``drain``, ``undrain``,
``cancel``, ``stop``), each of which returns at once and shows in the next snapshot.
The engine installs no signal handlers: that belongs to the entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .. import workspace
from ..codes import ErrorCode
from ..coordinator import CoordinatorClient, ExchangeObserver
from ..gpu import GpuView as TelemetryGpuView
from ..gpu import Sampler, TelemetrySnapshot
from ..identity.signed_result import ResultSigner
from ..journal import JobRecord, Journal, Outcome
from ..protocol import AssignedJob, is_job_id, shown_job_id
from ..runners import RunnerRegistry
from ..runners.builtin import BuiltinRunner
from ..untrusted import name_problem, payload_problem
from .bus import EventListener, SnapshotListener, Subscription
from .core import Core, HeldJob, Tuning, payload_view
from .disk import check_disk, watch_disk
from .earnings import keep_earnings, observe_energy
from .gpu import gpu_status
from .jobrun import DRAIN_GRACE_REASON, GPU_LOST_REASON, JobRun
from .outbox import Outbox
from .payments import sync_payments
from .poller import Poller
from .session import Session
from .slots import SlotPool
from .snapshot import (
    GpuLost,
    JobClaimed,
    JobFinished,
    ModeChanged,
    ReceiptView,
    Snapshot,
)

log = logging.getLogger("aitbc_miner.engine")

RETENTION_EVERY_S = 60.0  # how often finished job folders are pruned


class Engine:
    def __init__(
        self,
        tuning: Tuning,
        *,
        miner_key: str,
        journal_path: Path,
        workspace_root: Path,
        pool: SlotPool | None = None,
        registry: RunnerRegistry | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        telemetry: Sampler | None = None,
        signer: ResultSigner | None = None,
    ) -> None:
        self._journal_path = journal_path
        workspace_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = CoordinatorClient(
            tuning.coordinator_url, miner_key, tuning.miner_id,
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            transport=transport)
        self.core = Core(
            tuning, client=client, journal=None,  # type: ignore[arg-type]  # opened in run()
            pool=pool or SlotPool.from_counts(cpu=2, gpu=0),
            registry=registry or RunnerRegistry([BuiltinRunner()]),
            workspace_root=workspace_root, miner_key=miner_key,
            rng=random.Random(seed), clock=clock, telemetry=telemetry)
        self.core.signer = signer  # None: results go unsigned (tests, the demo)
        if telemetry is not None:
            telemetry.on_lost = self._on_gpu_lost
            telemetry.on_snapshot = self._on_gpu_snapshot
            self.core.gpu = gpu_status(telemetry.snapshot, self.core.pool.slots)
        for runner in self.core.registry.runners:
            if hasattr(runner, "on_change"):  # backends whose offer changes (models)
                runner.on_change = self.core.capabilities_changed
        self.outbox = Outbox(self.core)
        self.session = Session(self.core)
        self.jobs = JobRun(self.core, self.outbox.enqueue)
        self.poller = Poller(self.core, self._start_job)
        self._stop_requested = asyncio.Event()
        self._cancel_on_stop = False
        self._tg: asyncio.TaskGroup | None = None
        self._ran = False
        self._grace_task: asyncio.Task[None] | None = None

    # --- what viewers read ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self.core.snapshot()

    def subscribe(self, maxlen: int = 1000) -> Subscription:
        return self.core.bus.subscribe(maxlen)

    def add_listener(self, listener: SnapshotListener) -> Callable[[], None]:
        return self.core.bus.add_listener(listener)

    def add_event_listener(self, listener: EventListener) -> Callable[[], None]:
        """``listener(event)`` for every event, synchronously (metrics); returns the remover."""
        return self.core.bus.add_event_listener(listener)

    def observe_requests(self, observer: ExchangeObserver | None) -> None:
        """``observer(exchange)`` after every call to the coordinator, answered or not."""
        self.core.client.on_exchange = observer

    @property
    def running(self) -> bool:
        """Whether ``run()`` is in progress (started and not yet finished)."""
        return self._ran and not self.core.stopped.is_set()

    async def wait_until(self, predicate: Callable[[Snapshot], bool],
                         timeout: float | None = 30.0) -> Snapshot:
        return await self.core.wait_until(predicate, timeout)

    async def receipt_body(self, receipt_id: str) -> dict[str, Any] | None:
        """A stored receipt as the coordinator signed it (the miner key masked)."""
        body = await self.core.journal.receipt_body(receipt_id)
        if body is not None and body.get("provider") == self.core.miner_key:
            body["provider"] = "***"  # 2026-01 names a miner by its key
        return body

    async def job_record(self, job_id: str) -> JobRecord | None:
        """A job as the journal keeps it, running or long finished (None: never held):
        its state, outcome, error code, timings and the body it delivered. The payload
        is shown as the console may show it: secret-looking keys masked, long values cut."""
        record = await self.core.journal.get(job_id)
        if record is None:
            return None
        return dataclasses.replace(record, payload=dict(payload_view(record.payload)))

    async def job_receipts(self, job_id: str) -> tuple[ReceiptView, ...]:
        """The receipts stored for a job, oldest first (a second one is a duplicate)."""
        return tuple(ReceiptView.of(r) for r in await self.core.journal.receipts(job_id))

    @property
    def journal(self) -> Journal:
        return self.core.journal

    # --- commands --------------------------------------------------------------------

    def pause(self) -> None:
        """Stop claiming new jobs; running jobs go on."""
        self._set(paused=True)

    def resume(self) -> None:
        self._set(paused=False)

    def drain(self, *, exit_when_drained: bool = False, grace_s: float | None = None) -> None:
        """Take nothing new; let running jobs finish (cancel them after ``grace_s``)."""
        core = self.core
        core.exit_when_drained = core.exit_when_drained or exit_when_drained
        self._set(draining=True)
        if grace_s is not None and self._grace_task is None and core.started:
            self._grace_task = asyncio.get_running_loop().create_task(self._grace(grace_s))
        self._check_drained()

    def undrain(self) -> None:
        self.core.exit_when_drained = False
        if self._grace_task is not None:
            self._grace_task.cancel()
            self._grace_task = None
        self._set(draining=False)

    def cancel(self, job_id: str, reason: str = "operator") -> bool:
        """Stop a job; it is reported with ``E_CANCELED``. False if we do not hold it."""
        held = self.core.held.get(job_id)
        if (held is None or held.task is None or held.cancel_reason is not None
                or held.staged):
            return False
        held.cancel_reason = reason
        held.task.cancel()
        self.core.changed()
        return True

    def cancel_all(self, reason: str = "operator") -> int:
        return sum(self.cancel(job_id, reason) for job_id in list(self.core.held))

    def stop(self, *, cancel_running: bool = False) -> None:
        """Leave ``run()``: running jobs finish first unless ``cancel_running``."""
        self._cancel_on_stop = self._cancel_on_stop or cancel_running
        if cancel_running:
            self.cancel_all("shutdown")
        self._stop_requested.set()

    def _set(self, **flags: bool) -> None:
        core = self.core
        before = core.mode
        for name, value in flags.items():
            setattr(core, name, value)
        core.wake_poll.set()
        if core.mode is not before:
            core.emit(ModeChanged(at=core.clock(), mode=core.mode.value,
                                  message=f"mode {before.value} -> {core.mode.value}"))
        core.changed()

    def _check_drained(self) -> None:
        core = self.core
        if core.draining and not core.held and core.exit_when_drained:
            self._stop_requested.set()

    async def _grace(self, grace_s: float) -> None:
        await asyncio.sleep(grace_s)
        if self.core.held:
            log.warning("drain grace of %.0fs is over; canceling %d job(s)", grace_s,
                        len(self.core.held))
            self.cancel_all(DRAIN_GRACE_REASON)

    # --- running ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop()`` (or a drain with ``exit_when_drained``) completes."""
        if self._ran:
            raise RuntimeError("an Engine runs once; make a new one")
        self._ran = True
        core = self.core
        core.journal = await Journal.open(self._journal_path)
        try:
            await self._recover()
            await check_disk(core)  # a full data disk claims nothing, even the first time
            for runner in self._backends("refresh"):  # the first registration lists models
                await runner.refresh()
            core.warnings = core.registry.warnings()
            for text in core.warnings:
                log.warning("%s", text)
            core.started = True
            core.changed()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                loops = [
                    tg.create_task(self.session.run(), name="session"),
                    tg.create_task(self.poller.run(), name="poll"),
                    tg.create_task(core.publish_snapshots(), name="publish"),
                    tg.create_task(self._retention(), name="retention"),
                    tg.create_task(watch_disk(core), name="disk"),
                    tg.create_task(sync_payments(core), name="payments"),
                    tg.create_task(keep_earnings(core), name="earnings"),
                ]
                loops += [tg.create_task(self.outbox.worker(), name=f"outbox-{i}")
                          for i in range(core.tuning.outbox_workers)]
                if core.telemetry is not None:
                    loops.append(tg.create_task(core.telemetry.run(), name="gpu"))
                loops += [tg.create_task(r.watch(), name=f"refresh-{r.name}")
                          for r in self._backends("watch")]
                await self._stop_requested.wait()
                await self._shutdown(loops)
        finally:
            core.stopped.set()
            core.changed()
            core.bus.close()
            await core.client.aclose()
            for runner in self._backends("aclose"):
                await runner.aclose()
            await core.journal.close()

    def _backends(self, method: str) -> list[Any]:
        """Runners that talk to a backend and so have ``refresh``/``watch``/``aclose``."""
        return [r for r in self.core.registry.runners if hasattr(r, method)]

    def _on_gpu_snapshot(self, tele: TelemetrySnapshot) -> None:
        self.core.gpu = gpu_status(tele, self.core.pool.slots)
        observe_energy(self.core)
        self.core.changed()

    def _on_gpu_lost(self, view: TelemetryGpuView) -> None:
        """Its slots take no more work; the jobs on it fail with E_GPU_LOST; we re-register
        with the smaller concurrency at once. The other GPUs go on."""
        core = self.core
        jobs = core.pool.mark_gpu_lost(view.uuid)
        for job_id in jobs:
            self.cancel(job_id, reason=GPU_LOST_REASON)
        core.emit(GpuLost(at=core.clock(), gpu_index=view.index, gpu_uuid=view.uuid,
                          jobs=tuple(jobs), message=f"GPU {view.index} ({view.name}) is lost"
                          + (f"; job(s) {', '.join(jobs)} stop: "
                             + ("handed to the fleet, or failed with E_GPU_LOST"
                                if core.fleet is not None else "failing them with E_GPU_LOST")
                             if jobs else "")))
        core.wake_session.set()

    async def _recover(self) -> None:
        core = self.core
        for job_id in await core.journal.recover():
            core.emit(JobFinished(at=core.clock(), job_id=job_id, outcome="interrupted",
                                  code="E_INTERRUPTED",
                                  message=f"job {job_id} was running when the miner stopped; "
                                  "reporting E_INTERRUPTED (it is not re-run)"))
        counts = await core.journal.counts()
        core.count(
            claimed=sum(v for k, v in counts.items() if not k.startswith("outcome:")),
            completed=counts.get("outcome:completed", 0),
            failed=counts.get("outcome:failed", 0),
            canceled=counts.get("outcome:canceled", 0),
            interrupted=counts.get("outcome:interrupted", 0),
            delivered=counts.get("delivered", 0),
            rejected=counts.get("rejected", 0),
        )
        newest = await core.journal.receipts(newest=core.receipts.limit)
        receipts, flagged = await core.journal.receipt_counts()
        core.receipts = core.receipts.extend(ReceiptView.of(r) for r in newest)
        core.count(receipts=receipts, receipts_flagged=flagged)
        core.earnings_dirty.set()
        await self.outbox.load()

    async def _shutdown(self, loops: list[asyncio.Task[Any]]) -> None:
        """Stop claiming, let jobs end, flush the outbox, say goodbye, stop the loops."""
        core = self.core
        self._set(stopping=True)
        jobs = [h.task for h in core.held.values() if h.task is not None]
        if jobs:
            await asyncio.wait(jobs)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(core.tuning.flush_timeout_s):
                await self.outbox.wait_empty()
        if core.outbox_size:
            log.warning("stopping with %d outcome(s) undelivered; they are kept in the journal "
                        "and delivered on the next start", core.outbox_size)
        for task in loops:
            task.cancel()
        if self._grace_task is not None:
            self._grace_task.cancel()
        await self.session.goodbye()

    async def _start_job(self, job: AssignedJob | dict[str, Any]) -> None:
        """Claim a polled job and start its task. Never raises: whatever goes wrong here
        ends that job (E_BADJOB / E_INTERNAL) or skips it, never the engine."""
        core = self.core
        job_id = job.job_id if isinstance(job, AssignedJob) else job.get("job_id")
        if not is_job_id(job_id):  # never stored, run or named in a URL or a path
            log.warning("the coordinator handed us a job whose id %s is not a job id; it is "
                        "skipped", shown_job_id(job_id))
            core.wake_session.set()  # the heartbeat repairs its in-flight count
            return
        held = HeldJob(job_id=job_id, job_type="?", claimed_at=core.clock())
        try:
            await self._claim(held, job)
        except Exception as exc:  # a bug, or a journal that refused the claim
            await self.jobs.rescue(held, exc)

    async def _claim(self, held: HeldJob, job: AssignedJob | dict[str, Any]) -> None:
        core, job_id = self.core, held.job_id
        payload, constraints, bad = _intake(job)
        if bad:  # journaled without its payload: it is never run; its outcome says why
            payload, constraints = {}, {}
        if not await core.journal.claim(job_id, payload, constraints):
            log.warning("the coordinator handed us job %s again; it is not run twice", job_id,
                        extra={"job_id": job_id})
            core.wake_session.set()  # the heartbeat repairs its in-flight count
            return
        self._hold(held, payload, f"claimed job {job_id}")
        if core.fleet is not None and not bad:
            await core.fleet.claimed(job_id, payload, constraints)
        assert self._tg is not None
        held.task = self._tg.create_task(self._job(held, payload, constraints, bad),
                                         name=f"job-{job_id}")

    def _hold(self, held: HeldJob, payload: dict[str, Any], what: str) -> None:
        core = self.core
        job_type, model = payload.get("type"), payload.get("model")
        held.job_type = job_type if isinstance(job_type, str) and job_type else "?"
        held.model = model if isinstance(model, str) else None
        held.payload_view = payload_view(payload)
        core.held[held.job_id] = held
        core.count(claimed=1)
        core.emit(JobClaimed(at=core.clock(), job_id=held.job_id, job_type=held.job_type,
                             message=f"{what} ({held.job_type})"))

    # --- what a fleet does (docs/fleet.md; the engine never imports Redis) ---------------

    async def run_fleet_job(self, job_id: str, payload: dict[str, Any],
                            constraints: dict[str, Any], *, claimed_by: str,
                            handed_by: str) -> bool:
        """Run a job another rig claimed and handed to the fleet; its outcome goes out
        through our outbox, fenced. False: we know this job already (it is never run twice
        here) or the engine is not running."""
        core = self.core
        if self._tg is None or not core.claiming or not is_job_id(job_id):
            return False  # not running, or paused, draining, stopping: another rig takes it
        if not await core.journal.claim(job_id, payload, constraints):
            return False
        me = core.fleet.rig_id if core.fleet is not None else core.tuning.miner_id
        await core.journal.record_fleet(job_id, claimed_by=claimed_by, ran_by=me,
                                        note=f"handed over by rig {handed_by}")
        held = HeldJob(job_id=job_id, job_type="?", claimed_at=core.clock())
        self._hold(held, payload, f"took job {job_id} from the fleet (rig {handed_by})")
        if core.fleet is not None:
            await core.fleet.claimed(job_id, payload, constraints)
        core.wake_session.set()  # the heartbeat counts it as ours: our /result releases it
        held.task = self._tg.create_task(self._job(held, payload, constraints, None),
                                         name=f"job-{job_id}")
        return True

    async def adopt_outcome(self, record: JobRecord, *, claimed_by: str, ran_by: str,
                            maybe_sent: bool = False) -> bool:
        """Deliver an outcome another rig staged and could not (its lease ran out): it is
        journaled here as staged and goes through our outbox, fenced. ``maybe_sent``: that
        rig may have sent it before it went, so it is journaled ``uncertain`` and settled
        as the outbox settles its own uncertain sends. False: known here."""
        core = self.core
        if not await core.journal.claim(record.job_id, record.payload, record.constraints):
            return False
        await core.journal.record_fleet(record.job_id, claimed_by=claimed_by, ran_by=ran_by,
                                        note="outcome adopted from a rig whose lease ran out",
                                        mirrored=True)
        codes = {c.value: c for c in ErrorCode}
        code = codes.get(record.error_code) if record.error_code else None
        await core.journal.stage(record.job_id, record.outcome or Outcome.FAILED,
                                 record.endpoint or "fail", record.body or {}, code)
        if maybe_sent:
            await core.journal.mark_uncertain(
                record.job_id, f"rig {ran_by} may have sent it before it went")
        self.outbox.enqueue(record.job_id)
        return True

    async def _job(self, held: HeldJob, payload: dict[str, Any], constraints: dict[str, Any],
                   bad: str | None) -> None:
        try:
            await self.jobs.run(held, payload, constraints, bad)
        except Exception as exc:  # past run()'s own handlers: one job never ends the engine
            await self.jobs.rescue(held, exc)
        finally:
            self._check_drained()
            if self.core.draining:
                self.core.changed()

    async def _retention(self) -> None:
        core = self.core
        while True:
            try:
                await asyncio.to_thread(workspace.prune, core.workspace_root,
                                        core.tuning.retention_jobs, core.tuning.retention_days,
                                        set(core.held))
            except OSError as exc:  # housekeeping: say so, try again later
                log.warning("cannot prune job folders: %s; next try in %.0fs", exc,
                            RETENTION_EVERY_S)
                core.set_loop("retention", "prune failed", str(exc))
            await asyncio.sleep(RETENTION_EVERY_S)


def _intake(job: AssignedJob | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                        str | None]:
    """A polled job's payload and constraints, and why it may not run (None: it may).

    A raw dict is a job whose message did not parse (or nested past the bound and was cut
    off); a parsed one is checked against the payload rules (docs/hostile-input.md)."""
    if isinstance(job, AssignedJob):
        payload, constraints = job.payload, job.constraints.model_dump(mode="json")
        bad = (payload_problem(payload) or payload_problem(constraints, what="constraints")
               or _names_problem(payload))
        return payload, constraints, bad
    return {}, {}, ("the coordinator's job message is malformed "
                    "(payload/constraints missing, mistyped or nested too deep)")


def _names_problem(payload: dict[str, Any]) -> str | None:
    """The payload's names (its type, its model) are stored and shown: they must be clean."""
    for key in ("type", "model"):
        value = payload.get(key)
        problem = name_problem(value) if isinstance(value, str) else None
        if problem:
            return f"payload {key!r} {problem}"
    return None
