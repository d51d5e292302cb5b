"""A scripted engine for snapshot tests, the benchmark and screenshots.

``FakeEngine`` satisfies ``EngineLike``: it serves a fixed snapshot, records every
command, applies the obvious ones to its snapshot (pause -> PAUSED ...) and publishes
the result like the real engine. ``sample_snapshot`` builds rig states by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from aitbc_miner.engine import JobRecord, JobState, Outcome
from aitbc_miner.engine.bus import EventBus, Subscription
from aitbc_miner.engine.snapshot import (
    ConnectionView,
    Counters,
    Earnings,
    Event,
    GpuHistory,
    GpuProcess,
    GpuStatus,
    GpuView,
    Link,
    LoopView,
    Mode,
    Money,
    OutcomeView,
    ProcessRole,
    Profitability,
    ProfitLine,
    ReceiptView,
    RunningJob,
    Series,
    SlotState,
    SlotView,
    Snapshot,
)

T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC: the frozen "now" of snapshot tests


class FakeEngine:
    """An ``EngineLike`` over hand-made snapshots; ``calls`` records each command."""

    def __init__(self, snapshot: Snapshot, events: Iterable[Event] = ()) -> None:
        self._snapshot = snapshot
        self._bus = EventBus(recent=10_000)  # the engine's own fan-out, replaying to late viewers
        for event in events:
            self._bus.publish(event)
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.snapshot_calls = 0
        self.records: dict[str, JobRecord] = {}  # the "journal": every job ever held
        self.record_reads: list[str] = []

    # --- reading -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        self.snapshot_calls += 1
        return self._snapshot

    def add_listener(self, listener: Callable[[Snapshot], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe(self) -> Subscription:
        return self._bus.subscribe()

    async def job_record(self, job_id: str) -> JobRecord | None:
        self.record_reads.append(job_id)
        return self.records.get(job_id)

    async def job_receipts(self, job_id: str) -> tuple[ReceiptView, ...]:
        """Oldest first, as the journal answers (the snapshot's receipts are newest first)."""
        return tuple(r for r in reversed(self._snapshot.receipts) if r.job_id == job_id)

    # --- driving (tests) ---------------------------------------------------------------

    def finish(self, job_id: str, record: JobRecord, *receipts: ReceiptView) -> None:
        """The job ends: it leaves the snapshot's jobs, its record (and receipts) stay."""
        self.records[job_id] = record
        self._change(jobs=tuple(j for j in self._snapshot.jobs if j.job_id != job_id),
                     receipts=(*receipts, *self._snapshot.receipts))

    def publish(self, snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:
            self._snapshot = snapshot
        for listener in tuple(self._listeners):
            listener(self._snapshot)

    def emit(self, event: Event) -> None:
        self._bus.publish(event)

    def close(self) -> None:
        self._bus.close()

    def _change(self, **changes: Any) -> None:
        self._snapshot = dataclasses.replace(self._snapshot, seq=self._snapshot.seq + 1, **changes)
        self.publish()

    # --- commands ----------------------------------------------------------------------

    def pause(self) -> None:
        self.calls.append(("pause", ()))
        if self._snapshot.mode is Mode.RUNNING:
            self._change(mode=Mode.PAUSED)

    def resume(self) -> None:
        self.calls.append(("resume", ()))
        if self._snapshot.mode is Mode.PAUSED:
            self._change(mode=Mode.RUNNING)

    def drain(self, *, exit_when_drained: bool = False, grace_s: float | None = None) -> None:
        self.calls.append(("drain", (exit_when_drained, grace_s)))
        self._change(mode=Mode.DRAINING if self._snapshot.jobs else Mode.DRAINED)

    def undrain(self) -> None:
        self.calls.append(("undrain", ()))
        self._change(mode=Mode.RUNNING)

    def cancel(self, job_id: str, reason: str = "operator") -> bool:
        self.calls.append(("cancel", (job_id,)))
        job = self._snapshot.job(job_id)
        if job is None:
            return False
        jobs = tuple(dataclasses.replace(j, state="canceling") if j.job_id == job_id else j
                     for j in self._snapshot.jobs)
        self._change(jobs=jobs)
        return True

    def cancel_all(self, reason: str = "operator") -> int:
        self.calls.append(("cancel_all", ()))
        return sum(self.cancel(j.job_id, reason) for j in self._snapshot.jobs)

    def stop(self, *, cancel_running: bool = False) -> None:
        self.calls.append(("stop", (cancel_running,)))


# --- hand-made rig states --------------------------------------------------------------


def _slots(
    n_cpu: int, gpu: GpuStatus, jobs: Iterable[RunningJob], mode: Mode
) -> tuple[SlotView, ...]:
    on_slot = {j.slot_id: j.job_id for j in jobs if j.slot_id}
    draining = mode in (Mode.DRAINING, Mode.DRAINED, Mode.STOPPING)
    claiming = mode is Mode.RUNNING
    views = []
    ids = [f"cpu:{i}" for i in range(n_cpu)] + [s for g in gpu.gpus for s in g.slot_ids]
    lost = {s for g in gpu.gpus if g.state == "lost" for s in g.slot_ids}
    for slot_id in ids:
        job_id = on_slot.get(slot_id)
        if slot_id in lost:
            state = SlotState.LOST
        elif job_id:
            state = SlotState.DRAINING if draining else SlotState.RUNNING
        else:
            state = SlotState.IDLE if claiming else SlotState.PAUSED
        views.append(SlotView(slot_id, "gpu" if slot_id.startswith("gpu") else "cpu", state,
                              job_id))
    return tuple(views)


def gpu_history(util: Iterable[float | None], vram: float, temp: float, power: float,
                end: float = T0) -> GpuHistory:
    """Ten minutes of 5 s bucket means: ``util`` as given (None: a gap), the others
    following it (VRAM in MiB, temperature and power at full load)."""
    u = tuple(util)
    counts = tuple(0 if v is None else 5 for v in u)

    def follow(top: float, floor: float) -> Series:
        return Series(5.0, end, tuple(None if v is None else round(floor + (top - floor) * v / 100,
                                                                   1) for v in u), counts)

    return GpuHistory(Series(5.0, end, u, counts), follow(vram, vram * 0.8),
                      follow(temp, 35.0), follow(power, 20.0))


def two_gpus(*, lost: bool = False, simulated: bool = False) -> GpuStatus:
    """GPU 0 busy with an inference job through Ollama; GPU 1 idle for the miner, but
    someone else's process holds 1.9 GiB on it."""
    history_a = tuple(None if 20 <= i < 26 else float(min(100, 40 + (i * 37) % 61))
                      for i in range(120))
    history_b = tuple(float((i * 11) % 30) for i in range(120))
    prefix = "SIMULATED " if simulated else ""
    a = GpuView(0, "GPU-0a1b2c3d-0000", f"{prefix}NVIDIA GeForce RTX 4060 Ti", "ok",
                memory_used_mb=11_469, memory_total_mb=16_380, util_gpu_pct=87, util_mem_pct=40,
                temperature_c=68, power_w=142, power_limit_w=165,
                util_history=tuple(v for v in history_a if v is not None),
                slot_ids=("gpu:GPU-0a1b2c3d-0000",), simulated=simulated,
                history=gpu_history(history_a, 11_469, 68, 142), energy_wh=812.5,
                processes=(GpuProcess(2981, ProcessRole.BACKEND, 10_950, "C", "ollama",
                                      "ollama", sm_pct=83),))
    foreign = GpuProcess(41_877, ProcessRole.FOREIGN, 1_946, "C", "bob", "python3")
    if lost:
        b = GpuView(1, "GPU-9f8e7d6c-1111", f"{prefix}NVIDIA GeForce RTX 4060 Ti", "lost",
                    slot_ids=("gpu:GPU-9f8e7d6c-1111",), simulated=simulated,
                    lost_reason="NVML: GPU is lost")
    else:
        b = GpuView(1, "GPU-9f8e7d6c-1111", f"{prefix}NVIDIA GeForce RTX 4060 Ti", "ok",
                    memory_used_mb=2_150, memory_total_mb=16_380, util_gpu_pct=0, util_mem_pct=1,
                    temperature_c=41, power_w=18, power_limit_w=165, util_history=history_b,
                    slot_ids=("gpu:GPU-9f8e7d6c-1111",), simulated=simulated,
                    history=gpu_history(history_b, 2_150, 41, 18), energy_wh=64.0,
                    processes=(foreign,))
    warnings = () if lost else (f"GPU 1: someone else is on it: {foreign.describe()} holds "
                                "1.9 GiB",)
    return GpuStatus(state="ok", message="NVIDIA driver ready", simulated=simulated, gpus=(a, b),
                     warnings=warnings)


def receipts(
    n: int, *, now: float = T0, bad_every: int = 0, start: int = 0
) -> tuple[ReceiptView, ...]:
    """``n`` receipts, newest first (ids ``r<number>``), one per ~20 s back from ``now``."""
    out = []
    for k in range(start + n - 1, start - 1, -1):
        bad = bad_every and k % bad_every == bad_every - 1
        out.append(ReceiptView(
            receipt_id=f"r{k:07d}", job_id=f"{(k * 2654435761) % (1 << 32):08x}",
            received_at=now - 20.0 * (start + n - 1 - k) - 3, units=round(1 + (k % 17) * 0.73, 2),
            unit_type="gpu_seconds", price=Decimal(str(round(0.02 * (1 + (k % 17) * 0.73), 4))),
            verdict="invalid_signature" if bad else "valid_pinned",
            reason="signature does not verify with the pinned key" if bad else "",
            counted=not bad, duplicate=False))
    return tuple(out)


def sample_snapshot(kind: str = "busy", *, now: float = T0, n_jobs: int | None = None,
                    n_receipts: int | None = None) -> Snapshot:
    """Rig states by name: idle, busy, paused, draining, lost_gpu, offline, auth, no_driver."""
    gpu = GpuStatus(state="no_driver", message="no NVIDIA driver found")
    if kind in ("busy", "paused", "draining", "lost_gpu"):
        gpu = two_gpus(lost=kind == "lost_gpu")
    mode = {"paused": Mode.PAUSED, "draining": Mode.DRAINING}.get(kind, Mode.RUNNING)
    jobs: list[RunningJob] = []
    n_cpu = 4
    if kind != "idle" and kind not in ("offline", "auth", "no_driver"):
        gpu_slots = [s for g in gpu.gpus if g.state == "ok" for s in g.slot_ids]
        jobs.append(RunningJob("3f2a9c01d2e34f5a", "inference", gpu_slots[0], now - 14.2,
                               now - 12.4, "running",
                               (("model", "llama3.2"), ("tokens", 512), ("tokens_per_s", 41.2))))
        jobs.append(RunningJob("9b1c0d2e77aa4410", "sha256", "cpu:0", now - 0.9, now - 0.3,
                               "running"))
        jobs.append(RunningJob("5d6e7f80aa11bb22", "sleep", "cpu:1", now - 4.0, now - 3.9,
                               "running", (("pct", 45),)))
    if n_jobs is not None:
        n_cpu = max(n_cpu, n_jobs)
        jobs = [RunningJob(f"{i:04x}{(i * 7919) % 65536:04x}cafe0000", "sleep", f"cpu:{i}",
                           now - 5 - i % 30, now - 4 - i % 30, "running", (("pct", i % 100),))
                for i in range(n_jobs)]
    n_rec = {"idle": 0}.get(kind, 6) if n_receipts is None else n_receipts
    recs = receipts(n_rec, now=now, bad_every=5 if n_receipts is None else 50)
    link, reason, backoff = Link.REGISTERED, None, None
    if kind == "offline":
        link, reason, backoff = Link.BACKING_OFF, "connection refused", now + 4
    if kind == "auth":
        link, reason = Link.AUTH_REFUSED, "401 on /v1/miners/register"
    earnings = sample_earnings(now) if kind != "idle" else Earnings()
    slots = _slots(n_cpu, gpu, jobs, mode)
    return Snapshot(
        seq=1, at=now, version="0.1.0", miner_id="rig-01", mode=mode,
        connection=ConnectionView(link, "http://127.0.0.1:18000", last_heartbeat_at=now - 3,
                                  backoff_until=backoff, reason=reason, concurrency=len(slots)),
        loops=(LoopView("poll", "polling every 0.50s"),),
        slots=slots, jobs=tuple(jobs),
        counters=Counters(claimed=1_210, completed=1_200, failed=3, canceled=1, delivered=1_204,
                          receipts=len(recs),
                          receipts_flagged=sum(1 for r in recs if not r.counted)),
        outbox=0, recent=(OutcomeView("71de33aa", "sleep", "completed", None, now - 2, 11.8),),
        poll_interval_s=0.5, polls_in_flight=1 if mode is Mode.RUNNING else 0,
        receipts=recs, earnings=earnings, gpu=gpu,
    )


def sample_earnings(now: float = T0) -> Earnings:
    """A day of earnings on a two-GPU rig, with profitability at 0.30 EUR/kWh."""
    d = Decimal
    hourly = tuple((int(now - now % 3600) - h * 3600,
                    Money(d("0.3") + d(h % 5) * d("0.07") if h % 7 else d(0), 14 + h % 4))
                   for h in range(23, -1, -1))

    def line(name: str, earned: str, wh: str, cost: str, net: str, idle: str = "0"
             ) -> ProfitLine:
        return ProfitLine(name, d(earned), d(wh), d(cost), d(net), d(idle))

    profit = Profitability(
        currency="EUR", price_per_kwh=d("0.30"), aitbc_rate=d("2.50"), window_s=3600.0,
        rig=line("rig", "0.31", "290.5", "0.08715", "0.68785", "40.5"),
        idle=line("idle", "0", "40.5", "0.01215", "-0.01215"),
        by_gpu=(line("cpu", "0.01", "0", "0", "0.025"),
                line("gpu:0", "0.2", "150", "0.045", "0.455", "10"),
                line("gpu:1", "0.1", "100", "0.03", "0.22", "30.5")),
        by_model=(line("llama3.2", "0.3", "250", "0.075", "0.675"),
                  line("sha256", "0.01", "0", "0", "0.025")))
    return Earnings(
        today=Money(d("1.2345"), 52), last_7_days=Money(d("8.9012"), 391),
        last_hour=Money(d("0.31"), 14), issued=Money(d("42.06"), 1_202),
        verified=Money(d("42.0"), 1_200), paid=Money(d("30.0"), 857),
        flagged=Money(d("0.06"), 2), per_hour_now=d("0.342"), per_hour_last_hour=d("0.31"),
        per_hour_last_day=d("0.2871"), hourly=hourly,
        by_model=(("llama3.2", Money(d("30.1"), 800)), ("sha256", Money(d("11.9"), 400))),
        by_gpu=(("gpu:0", Money(d("20.5"), 520)), ("gpu:1", Money(d("9.6"), 280)),
                ("cpu", Money(d("11.9"), 400))),
        failures_by_code=(("E_TIMEOUT", 2), ("E_MODEL_NOT_FOUND", 1)),
        failures_last_hour=(("E_TIMEOUT", 1),), finished_last_hour=15,
        failure_rate_now=0.0, failure_rate_last_hour=1 / 15, profit=profit)


def job_record(job_id: str, *, now: float = T0, job_type: str = "inference",
               payload: dict[str, Any] | None = None, error_code: str | None = None,
               error_message: str = "", duration_s: float = 11.8,
               slot: str = "gpu:0/0") -> JobRecord:
    """A finished job as the journal keeps it: completed, or failed with ``error_code``."""
    failed = error_code is not None
    body: dict[str, Any] = ({"error_code": error_code, "error_message": error_message,
                             "metrics": {}} if failed else
                            {"result": {"output": "ok"}, "metrics": {"duration_s": duration_s}})
    return JobRecord(
        job_id=job_id, state=JobState.DELIVERED, job_type=job_type,
        payload=payload if payload is not None else {"type": job_type, "model": "llama3.2"},
        constraints={}, slot=slot, outcome=Outcome.FAILED if failed else Outcome.COMPLETED,
        error_code=error_code, endpoint="fail" if failed else "result", body=body, attempts=1,
        last_error=None, claimed_at=now - duration_s - 1.5, started_at=now - duration_s,
        finished_at=now, delivered_at=now + 0.2)


def sample_events(now: float = T0) -> list[Event]:
    from aitbc_miner.engine.snapshot import BackingOff, JobFinished, ReceiptStored

    return [
        ReceiptStored(at=now - 62, job_id="e812f0c4", receipt_id="r0000004", price=0.0622,
                      verdict="invalid_signature", counted=False, duplicate=False,
                      message="receipt for e812f0c4 has an invalid signature; not counted"),
        BackingOff(at=now - 4, loop="poll", delay_s=2.1, attempt=3, reason="503",
                   message="coordinator answered 503; backing off 2.1s (attempt 3)"),
        JobFinished(at=now - 2, job_id="71de33aa", outcome="completed", duration_s=11.8,
                    message="job 71de33aa completed in 11.8s; receipt 0.2369 AITBC verified"),
    ]
