"""GPU telemetry: a sampler that reads NVML off the event loop into immutable snapshots.

Every ``interval_s`` (about 1 s, as nvitop refreshes devices) the :class:`Sampler` reads
all devices in a worker thread (``asyncio.to_thread``), so a slow or hung driver never
stalls the loop; processes are read every ``process_every``-th sample (nvitop: 2 s).
Each result is folded, on the loop, into a frozen :class:`TelemetrySnapshot` with a
bounded history per device (for sparklines) and per-job figures (mean utilization, peak
VRAM). A device that becomes lost is reported once through ``on_lost``, on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .model import (
    NA,
    DriverState,
    GpuSample,
    GpuState,
    MaybeFloat,
    MaybeInt,
    MaybeStr,
    or_none,
)
from .nvml import DriverInfo, Nvml

log = logging.getLogger("aitbc_miner.gpu")

DEFAULT_INTERVAL_S: Final = 1.0  # seconds between device samples (nvitop's default)
DEFAULT_PROCESS_EVERY: Final = 2  # read per-process VRAM every 2nd sample (~2 s)
DEFAULT_HISTORY: Final = 300  # samples kept per device: 5 min at 1 s, memory stays flat


@dataclass(frozen=True, slots=True)
class GpuView:
    """A device as the panel shows it: its newest sample and its bounded history."""

    sample: GpuSample
    util_history: tuple[MaybeInt, ...] = ()  # GPU utilization %, oldest first
    memory_history: tuple[MaybeInt, ...] = ()  # used MiB, oldest first
    lost_at: float | None = None

    @property
    def index(self) -> str:
        return self.sample.index

    @property
    def uuid(self) -> str:
        return self.sample.uuid

    @property
    def name(self) -> str:
        return self.sample.name

    @property
    def state(self) -> GpuState:
        return self.sample.state

    @property
    def lost(self) -> bool:
        return self.sample.lost


@dataclass(frozen=True, slots=True)
class JobGpuStats:
    """What one job did on its GPU while we watched it.

    ``peak_vram_mib`` is the peak of the job's own processes' VRAM when its PIDs are
    known, else the peak of the whole device's used memory (exact when the job has the
    GPU alone, the default of one slot per GPU).
    """

    job_id: str
    gpu_uuid: str
    samples: int = 0
    mean_util_pct: MaybeFloat = NA
    peak_vram_mib: MaybeInt = NA
    gpu_lost: bool = False


@dataclass(frozen=True, slots=True)
class TelemetrySnapshot:
    """Everything the GPU panel needs, frozen; a new one replaces it every sample."""

    seq: int
    at: float
    state: DriverState
    message: str
    driver_version: MaybeStr = NA
    cuda_version: MaybeStr = NA
    simulated: bool = False
    gpus: tuple[GpuView, ...] = ()
    jobs: tuple[JobGpuStats, ...] = ()
    sample_cost_s: float = 0.0  # how long the last read took (in its worker thread)
    detail: str = ""  # the cause alone, for a console that prints the state in its own words

    def gpu(self, key: str) -> GpuView | None:
        """The device with this UUID or index."""
        return next((g for g in self.gpus if key in (g.uuid, g.index)), None)

    def job(self, job_id: str) -> JobGpuStats | None:
        return next((j for j in self.jobs if j.job_id == job_id), None)

    @property
    def lost(self) -> tuple[GpuView, ...]:
        return tuple(g for g in self.gpus if g.lost)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``NA`` -> ``None``), for the control socket and ``status --json``."""
        return {
            "seq": self.seq, "at": self.at, "state": self.state.value, "message": self.message,
            "detail": self.detail, "driver_version": or_none(self.driver_version),
            "cuda_version": or_none(self.cuda_version), "simulated": self.simulated,
            "sample_cost_s": self.sample_cost_s,
            "gpus": [{**g.sample.as_dict(), "lost_at": g.lost_at,
                      "util_history": [or_none(v) for v in g.util_history],
                      "memory_history": [or_none(v) for v in g.memory_history]}
                     for g in self.gpus],
            "jobs": [{"job_id": j.job_id, "gpu_uuid": j.gpu_uuid, "samples": j.samples,
                      "mean_util_pct": or_none(j.mean_util_pct),
                      "peak_vram_mib": or_none(j.peak_vram_mib), "gpu_lost": j.gpu_lost}
                     for j in self.jobs],
        }


@dataclass(slots=True)
class _JobAcc:
    """Running totals for one tracked job (mutated on the loop only)."""

    gpu_uuid: str
    pids: frozenset[int] | None
    samples: int = 0
    util_sum: float = 0.0
    util_n: int = 0
    peak: MaybeInt = NA
    gpu_lost: bool = False

    def add(self, sample: GpuSample) -> None:
        self.samples += 1
        if sample.lost:
            self.gpu_lost = True
            return
        if isinstance(sample.util_gpu_pct, int):
            self.util_sum += sample.util_gpu_pct
            self.util_n += 1
        vram = self._vram(sample)
        if isinstance(vram, int) and (self.peak is NA or vram > self.peak):  # type: ignore[operator]
            self.peak = vram

    def _vram(self, sample: GpuSample) -> MaybeInt:
        if self.pids is None:
            return sample.memory_used_mib
        mine = [sample.processes[p] for p in self.pids if p in sample.processes]
        if not mine or any(v is NA for v in mine):
            return NA
        return sum(mine)  # type: ignore[arg-type]

    def stats(self, job_id: str) -> JobGpuStats:
        mean: MaybeFloat = round(self.util_sum / self.util_n, 1) if self.util_n else NA
        return JobGpuStats(job_id, self.gpu_uuid, self.samples, mean, self.peak, self.gpu_lost)


@dataclass(slots=True)
class _History:
    util: deque[MaybeInt]
    memory: deque[MaybeInt]
    lost_at: float | None = None


LostCallback = Callable[[GpuView], None]
SnapshotCallback = Callable[[TelemetrySnapshot], None]


@dataclass
class Sampler:
    """Samples every device every ``interval_s`` into :attr:`snapshot`.

    ``run()`` loops forever (a failed sample is logged and the loop goes on); tests and
    the engine's start-up call :meth:`sample_once` directly. ``on_lost`` is called once
    per device that becomes lost, on the event loop (safe to touch the slot pool);
    ``on_snapshot`` after every sample.
    """

    nvml: Nvml
    interval_s: float = DEFAULT_INTERVAL_S
    history: int = DEFAULT_HISTORY
    process_every: int = DEFAULT_PROCESS_EVERY
    on_lost: LostCallback | None = None
    on_snapshot: SnapshotCallback | None = None
    clock: Callable[[], float] = time.time
    _snapshot: TelemetrySnapshot = field(init=False)
    _histories: dict[str, _History] = field(init=False, default_factory=dict)
    _jobs: dict[str, _JobAcc] = field(init=False, default_factory=dict)
    _count: int = field(init=False, default=0)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.history < 1 or self.process_every < 1:
            raise ValueError("interval_s > 0, history >= 1 and process_every >= 1 are required")
        info = self.nvml.info
        self._snapshot = TelemetrySnapshot(0, self.clock(), info.state, info.message,
                                           simulated=self.nvml.simulated)

    @property
    def snapshot(self) -> TelemetrySnapshot:
        """The newest snapshot (never blocks, never changes once handed out)."""
        return self._snapshot

    # --- jobs ----------------------------------------------------------------------

    def track_job(self, job_id: str, gpu_uuid: str, pids: Iterable[int] | None = None) -> None:
        """Start accounting ``job_id`` on the GPU ``gpu_uuid``. ``pids``: the job's own
        processes (None: count the whole device's memory, see :class:`JobGpuStats`)."""
        self._jobs[job_id] = _JobAcc(gpu_uuid, None if pids is None else frozenset(pids))

    def set_job_pids(self, job_id: str, pids: Iterable[int]) -> None:
        """The job's processes changed (it started its worker, or a child)."""
        acc = self._jobs.get(job_id)
        if acc is not None:
            acc.pids = frozenset(pids)

    def job_stats(self, job_id: str) -> JobGpuStats | None:
        acc = self._jobs.get(job_id)
        return None if acc is None else acc.stats(job_id)

    def end_job(self, job_id: str) -> JobGpuStats | None:
        """Stop accounting ``job_id``; its final figures (for the job's ``metrics``)."""
        acc = self._jobs.pop(job_id, None)
        return None if acc is None else acc.stats(job_id)

    # --- sampling ------------------------------------------------------------------

    async def run(self) -> None:
        """Sample until cancelled. Without a driver there is nothing to sample: it returns."""
        while True:
            started = time.monotonic()
            try:
                snap = await self.sample_once()
            except Exception:  # never die quietly; the next sample may work
                log.exception("GPU sample failed; next try in %.1fs", self.interval_s)
            else:
                if snap.state in (DriverState.NO_DRIVER, DriverState.NO_DEVICES,
                                  DriverState.FAILED):
                    log.info("GPU telemetry stops: %s", snap.message)
                    return
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def sample_once(self) -> TelemetrySnapshot:
        """Read every device once (in a worker thread) and publish a new snapshot."""
        async with self._lock:
            at, processes, previous = self._next()
            info, samples, cost = await asyncio.to_thread(self._read, at, processes, previous)
            return self._publish(info, samples, at, cost)

    def sample_blocking(self) -> TelemetrySnapshot:
        """One sample in the calling thread: for start-up, before the event loop runs
        (the engine's GPU slots are built from it). Never call it from a coroutine."""
        at, processes, previous = self._next()
        info, samples, cost = self._read(at, processes, previous)
        return self._publish(info, samples, at, cost)

    def _next(self) -> tuple[float, bool, dict[str, GpuSample]]:
        processes = self._count % self.process_every == 0
        self._count += 1
        return self.clock(), processes, {g.index: g.sample for g in self._snapshot.gpus}

    def _read(self, at: float, processes: bool, previous: Mapping[str, GpuSample],
              ) -> tuple[DriverInfo, tuple[GpuSample, ...], float]:
        started = time.perf_counter()
        self.nvml.init()
        samples = self.nvml.read_all(at, processes=processes, previous=previous)
        return self.nvml.info, samples, time.perf_counter() - started

    def _publish(self, info: DriverInfo, samples: tuple[GpuSample, ...], at: float,
                 cost: float) -> TelemetrySnapshot:
        by_uuid = {s.uuid: s for s in samples}
        for acc in self._jobs.values():
            sample = by_uuid.get(acc.gpu_uuid)
            if sample is not None:
                acc.add(sample)
        newly_lost: list[GpuView] = []
        views = []
        for sample in samples:
            view = self._fold(sample)
            views.append(view)
            if sample.lost and view.lost_at == at:
                newly_lost.append(view)
        snap = TelemetrySnapshot(
            seq=self._snapshot.seq + 1, at=at, state=info.state, message=info.message,
            driver_version=info.driver_version, cuda_version=info.cuda_version,
            simulated=info.simulated, gpus=tuple(views),
            jobs=tuple(acc.stats(job_id) for job_id, acc in self._jobs.items()),
            sample_cost_s=cost, detail=info.detail)
        self._snapshot = snap
        for view in newly_lost:
            self._report_lost(view)
        if self.on_snapshot is not None:
            try:
                self.on_snapshot(snap)
            except Exception:
                log.exception("GPU snapshot listener failed")
        return snap

    def _fold(self, sample: GpuSample) -> GpuView:
        hist = self._histories.get(sample.index)
        if hist is None:
            hist = self._histories[sample.index] = _History(
                deque(maxlen=self.history), deque(maxlen=self.history))
        if sample.lost:
            if hist.lost_at is None:
                hist.lost_at = sample.at
        else:
            hist.util.append(sample.util_gpu_pct)
            hist.memory.append(sample.memory_used_mib)
        return GpuView(sample, tuple(hist.util), tuple(hist.memory), hist.lost_at)

    def _report_lost(self, view: GpuView) -> None:
        log.error("GPU %s (%s, %s) is lost: %s; its slots take no more work, the other "
                  "GPUs go on", view.index, view.name, view.uuid, view.sample.reason)
        if self.on_lost is not None:
            try:
                self.on_lost(view)
            except Exception:
                log.exception("GPU-lost listener failed for GPU %s", view.index)
