"""GPU telemetry: a sampler that reads NVML off the event loop into immutable snapshots.

Every ``interval_s`` (about 1 s, as nvitop refreshes devices) the :class:`Sampler` reads
all devices in a worker thread (``asyncio.to_thread``), so a slow or hung driver never
stalls the loop; processes are read every ``process_every``-th sample (nvitop: 2 s), and
named (user, command) in that same thread. Each result is folded, on the loop, into a
frozen :class:`TelemetrySnapshot`:

- per device, a :class:`~.history.GpuHistory` of bucket means (utilization, VRAM,
  temperature, power; 120 x 5 s by default) and a day of power (1,440 x 1 min), both in
  fixed memory (``history.HistoryRing``), and the energy drawn since the start;
- per device, its processes with their VRAM and role (``job``, ``backend``, ``miner``,
  ``foreign``; see ``processes``);
- per tracked job, mean utilization, peak VRAM and its share of the energy.

A device that becomes lost is reported once through ``on_lost``, on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from .history import (
    DAY_BUCKET_S,
    DAY_BUCKETS,
    RECENT_BUCKET_S,
    RECENT_BUCKETS,
    GpuHistory,
    HistoryRing,
    Series,
    empty_history,
)
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
from .processes import GpuProcess, ProcessDirectory, ProcessInfo, role_of

log = logging.getLogger("aitbc_miner.gpu")

DEFAULT_INTERVAL_S: Final = 1.0  # seconds between device samples (nvitop's default)
DEFAULT_PROCESS_EVERY: Final = 2  # read per-process VRAM every 2nd sample (~2 s)
DEFAULT_HISTORY: Final = RECENT_BUCKETS  # buckets kept per device (of RECENT_BUCKET_S)
MAX_ENERGY_GAP_S: Final = 10.0  # power readings further apart than this add no energy


@dataclass(frozen=True, slots=True)
class GpuView:
    """A device as the panel shows it: its newest sample, its history and processes.

    ``history``: bucket means of utilization, VRAM, temperature and power (the screens).
    ``power_day``: power over the last day in 1-minute buckets, refreshed once a minute
    (energy figures: ``power_day.integral_h(since)`` is the Wh drawn since ``since``).
    ``energy_wh``: energy drawn since the sampler started (trapezoids between readings
    at most ``MAX_ENERGY_GAP_S`` apart). ``processes``: largest VRAM first.
    """

    sample: GpuSample
    history: GpuHistory = field(default_factory=empty_history)
    power_day: Series = field(default_factory=lambda: Series(DAY_BUCKET_S, 0.0))
    energy_wh: float = 0.0
    processes: tuple[GpuProcess, ...] = ()
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
    energy_wh: float = 0.0  # its share of the device's energy (split among the jobs on it)


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
                      "energy_wh": g.energy_wh,
                      "history": {"bucket_s": g.history.bucket_s, "end": g.history.end,
                                  **{name: list(getattr(g.history, name).means)
                                     for name in ("util_pct", "vram_mib", "temperature_c",
                                                  "power_w")}},
                      "processes": [{"pid": p.pid, "role": p.role.value,
                                     "vram_mib": p.vram_mib, "kind": p.kind, "user": p.user,
                                     "command": p.command, "job_id": p.job_id,
                                     "sm_pct": p.sm_pct}
                                    for p in g.processes]}
                     for g in self.gpus],
            "jobs": [{"job_id": j.job_id, "gpu_uuid": j.gpu_uuid, "samples": j.samples,
                      "mean_util_pct": or_none(j.mean_util_pct),
                      "peak_vram_mib": or_none(j.peak_vram_mib), "gpu_lost": j.gpu_lost,
                      "energy_wh": round(j.energy_wh, 6)}
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
    energy_wh: float = 0.0

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
        return JobGpuStats(job_id, self.gpu_uuid, self.samples, mean, self.peak, self.gpu_lost,
                           self.energy_wh)


@dataclass(slots=True)
class _Device:
    """One device's rings and energy (mutated on the loop only)."""

    recent: HistoryRing
    day: HistoryRing  # power only
    day_series: Series = field(default_factory=lambda: Series(DAY_BUCKET_S, 0.0))
    day_bucket: int | None = None  # the minute the day series was built in
    energy_wh: float = 0.0
    last_power: tuple[float, float] | None = None  # (at, W)
    lost_at: float | None = None

    def add_energy(self, at: float, power: MaybeFloat) -> float:
        """Fold a power reading in; the Wh it adds since the previous one."""
        if not isinstance(power, int | float):
            self.last_power = None
            return 0.0
        added = 0.0
        if self.last_power is not None:
            then, before = self.last_power
            if 0 < at - then <= MAX_ENERGY_GAP_S:
                added = (before + power) / 2 * (at - then) / 3600.0
        self.last_power = (at, float(power))
        self.energy_wh += added
        return added


LostCallback = Callable[[GpuView], None]
SnapshotCallback = Callable[[TelemetrySnapshot], None]


@dataclass
class Sampler:
    """Samples every device every ``interval_s`` into :attr:`snapshot`.

    ``run()`` loops forever (a failed sample is logged and the loop goes on); tests and
    the engine's start-up call :meth:`sample_once` directly. ``on_lost`` is called once
    per device that becomes lost, on the event loop (safe to touch the slot pool);
    ``on_snapshot`` after every sample. ``history`` buckets of ``bucket_s`` seconds are
    kept per device; ``backend_pids``: inference servers' PIDs the operator knows (known
    server command names are recognised without it, see ``processes``).
    """

    nvml: Nvml
    interval_s: float = DEFAULT_INTERVAL_S
    history: int = DEFAULT_HISTORY
    process_every: int = DEFAULT_PROCESS_EVERY
    on_lost: LostCallback | None = None
    on_snapshot: SnapshotCallback | None = None
    clock: Callable[[], float] = time.time
    bucket_s: float = RECENT_BUCKET_S
    backend_pids: frozenset[int] = frozenset()
    _snapshot: TelemetrySnapshot = field(init=False)
    _devices: dict[str, _Device] = field(init=False, default_factory=dict)
    _jobs: dict[str, _JobAcc] = field(init=False, default_factory=dict)
    _workload: Mapping[str, tuple[frozenset[int], ...]] = field(
        init=False, default_factory=lambda: MappingProxyType({}))
    _infos: Mapping[int, ProcessInfo] = field(init=False, default_factory=dict)
    _directory: ProcessDirectory = field(init=False, default_factory=ProcessDirectory)
    _count: int = field(init=False, default=0)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if (self.interval_s <= 0 or self.history < 1 or self.process_every < 1
                or self.bucket_s <= 0):
            raise ValueError("interval_s > 0, history >= 1, process_every >= 1 and "
                             "bucket_s > 0 are required")
        info = self.nvml.info
        self._snapshot = TelemetrySnapshot(0, self.clock(), info.state, info.message,
                                           simulated=self.nvml.simulated)

    @property
    def snapshot(self) -> TelemetrySnapshot:
        """The newest snapshot (never blocks, never changes once handed out)."""
        return self._snapshot

    @property
    def workload(self) -> Mapping[str, tuple[frozenset[int], ...]]:
        """GPU uuid -> one PID set per job running there (empty while a job's PIDs are
        unknown). Replaced whole on every change, so any thread may read it: the
        simulated devices follow it (``simulate``)."""
        return self._workload

    @property
    def process_lookups(self) -> int:
        """How many processes have been named with psutil so far (the cache's misses)."""
        return self._directory.lookups

    # --- jobs ----------------------------------------------------------------------

    def track_job(self, job_id: str, gpu_uuid: str, pids: Iterable[int] | None = None) -> None:
        """Start accounting ``job_id`` on the GPU ``gpu_uuid``. ``pids``: the job's own
        processes (None: count the whole device's memory, see :class:`JobGpuStats`)."""
        self._jobs[job_id] = _JobAcc(gpu_uuid, None if pids is None else frozenset(pids))
        self._jobs_changed()

    def set_job_pids(self, job_id: str, pids: Iterable[int]) -> None:
        """The job's processes changed (it started its worker, or a child)."""
        acc = self._jobs.get(job_id)
        if acc is not None:
            acc.pids = frozenset(pids)
            self._jobs_changed()

    def job_stats(self, job_id: str) -> JobGpuStats | None:
        acc = self._jobs.get(job_id)
        return None if acc is None else acc.stats(job_id)

    def end_job(self, job_id: str) -> JobGpuStats | None:
        """Stop accounting ``job_id``; its final figures (for the job's ``metrics``)."""
        acc = self._jobs.pop(job_id, None)
        self._jobs_changed()
        return None if acc is None else acc.stats(job_id)

    def _jobs_changed(self) -> None:
        load: dict[str, list[frozenset[int]]] = {}
        for acc in self._jobs.values():
            load.setdefault(acc.gpu_uuid, []).append(acc.pids or frozenset())
        self._workload = MappingProxyType({k: tuple(v) for k, v in load.items()})

    def energy_wh(self, gpu: str, since: float | None = None,
                  until: float | None = None) -> float:
        """Wh drawn by the device (uuid or index) from its day of power in 1-minute
        buckets (``since``/``until``: time.time() values; none: the whole day held)."""
        view = self._snapshot.gpu(gpu)
        return 0.0 if view is None else view.power_day.integral_h(since, until)

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
            read = await asyncio.to_thread(self._read, at, processes, previous)
            return self._publish(*read, at)

    def sample_blocking(self) -> TelemetrySnapshot:
        """One sample in the calling thread: for start-up, before the event loop runs
        (the engine's GPU slots are built from it). Never call it from a coroutine."""
        at, processes, previous = self._next()
        return self._publish(*self._read(at, processes, previous), at)

    def _next(self) -> tuple[float, bool, dict[str, GpuSample]]:
        processes = self._count % self.process_every == 0
        self._count += 1
        return self.clock(), processes, {g.index: g.sample for g in self._snapshot.gpus}

    def _read(self, at: float, processes: bool, previous: Mapping[str, GpuSample],
              ) -> tuple[DriverInfo, tuple[GpuSample, ...], Mapping[int, ProcessInfo] | None,
                         float]:
        """In the worker thread: NVML, and (when processes were read) psutil."""
        started = time.perf_counter()
        self.nvml.init()
        samples = self.nvml.read_all(at, processes=processes, previous=previous)
        infos = None
        if processes:
            try:
                infos = self._directory.resolve(p for s in samples for p in s.processes)
            except Exception:  # naming processes is a nicety; the sample stands without it
                log.exception("naming the GPU processes failed")
        return self.nvml.info, samples, infos, time.perf_counter() - started

    def _publish(self, info: DriverInfo, samples: tuple[GpuSample, ...],
                 infos: Mapping[int, ProcessInfo] | None, cost: float,
                 at: float) -> TelemetrySnapshot:
        if infos is not None:
            self._infos = infos
        by_uuid: dict[str, list[_JobAcc]] = {}
        for acc in self._jobs.values():
            by_uuid.setdefault(acc.gpu_uuid, []).append(acc)
        job_pids = {pid: job_id for job_id, acc in self._jobs.items() for pid in acc.pids or ()}
        newly_lost: list[GpuView] = []
        views = []
        for sample in samples:
            view, energy = self._fold(sample, job_pids)
            views.append(view)
            on_it = by_uuid.get(sample.uuid, ())
            for acc in on_it:
                acc.add(sample)
                acc.energy_wh += energy / len(on_it)
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

    def _fold(self, sample: GpuSample, job_pids: Mapping[int, str]) -> tuple[GpuView, float]:
        """The device's view, and the Wh this sample adds to it."""
        dev = self._devices.get(sample.index)
        if dev is None:
            dev = self._devices[sample.index] = _Device(
                HistoryRing(self.bucket_s, self.history), HistoryRing(DAY_BUCKET_S, DAY_BUCKETS, 1))
        energy = 0.0
        if sample.lost:
            if dev.lost_at is None:
                dev.lost_at = sample.at
            dev.last_power = None
        else:
            power = or_none(sample.power_w)
            dev.recent.add(sample.at, (or_none(sample.util_gpu_pct),
                                       or_none(sample.memory_used_mib),
                                       or_none(sample.temperature_c), power))
            dev.day.add(sample.at, (power,))
            energy = dev.add_energy(sample.at, sample.power_w)
        minute = int(sample.at // DAY_BUCKET_S)
        if minute != dev.day_bucket:
            dev.day_bucket, dev.day_series = minute, dev.day.series(0, sample.at)
        view = GpuView(sample, dev.recent.history(sample.at), dev.day_series, dev.energy_wh,
                       self._processes(sample, job_pids), dev.lost_at)
        return view, energy

    def _processes(self, sample: GpuSample,
                   job_pids: Mapping[int, str]) -> tuple[GpuProcess, ...]:
        out = []
        for pid, mib in sample.processes.items():
            info = self._infos.get(pid) or ProcessInfo(pid)
            role, job_id = role_of(info, job_pids, self.backend_pids)
            out.append(GpuProcess(pid, role, or_none(mib), sample.process_kinds.get(pid, "C"),
                                  info.user, info.command, job_id,
                                  sample.process_sm_pct.get(pid)))
        out.sort(key=lambda p: (-(p.vram_mib or 0), p.pid))
        return tuple(out)

    def _report_lost(self, view: GpuView) -> None:
        log.error("GPU %s (%s, %s) is lost: %s; its slots take no more work, the other "
                  "GPUs go on", view.index, view.name, view.uuid, view.sample.reason)
        if self.on_lost is not None:
            try:
                self.on_lost(view)
            except Exception:
                log.exception("GPU-lost listener failed for GPU %s", view.index)

