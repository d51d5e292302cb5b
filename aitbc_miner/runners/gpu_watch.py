"""GPU figures of an inference job, read from the miner's own telemetry (never NVML here):
mean and peak utilization and VRAM while the job streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from .base import RunContext

log = logging.getLogger(__name__)

GPU_SAMPLE_EVERY_S = 0.5

# --- GPU sampling -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuReading:
    """The job's GPU at one moment; ``at`` tells repeated readings of one sample apart."""

    utilization_pct: float
    memory_used_mib: float
    at: float | None = None


class GpuSampler(Protocol):
    """Reads the GPU a job runs on (``ctx.gpu_uuid``); None when it cannot. Must not block:
    it is called on the event loop."""

    def sample(self, ctx: RunContext) -> GpuReading | None: ...


class TelemetryGpuSampler:
    """Reads the newest snapshot of the GPU package's telemetry ``Sampler`` (it owns NVML;
    nothing here calls the driver): utilization and used VRAM of the job's device."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry  # aitbc_miner.gpu.Sampler (anything with .snapshot.gpu())

    def sample(self, ctx: RunContext) -> GpuReading | None:
        if ctx.gpu_uuid is None:
            return None
        view = self.telemetry.snapshot.gpu(ctx.gpu_uuid)
        if view is None or view.lost:
            return None
        sample = view.sample
        util, used = sample.util_gpu_pct, sample.memory_used_mib
        if not isinstance(util, int | float) or not isinstance(used, int | float):
            return None  # NA: the device cannot say
        return GpuReading(float(util), float(used), sample.at)


class GpuWatch:
    """Samples the job's GPU while it runs; ``metrics()`` is mean/peak utilization, VRAM."""

    def __init__(self, sampler: GpuSampler | None, ctx: RunContext,
                 every_s: float = GPU_SAMPLE_EVERY_S) -> None:
        self.sampler = sampler
        self.ctx = ctx
        self.every_s = every_s
        self.samples: list[GpuReading] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GpuWatch:
        if self.sampler is not None:
            self._take()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if exc[0] is None:
                self._take()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self._take()

    def _take(self) -> None:
        assert self.sampler is not None
        try:
            reading = self.sampler.sample(self.ctx)
        except Exception:
            log.debug("GPU sampler raised", exc_info=True)
            return
        if reading is None:
            return
        if reading.at is not None and self.samples and self.samples[-1].at == reading.at:
            return  # the same telemetry sample again
        self.samples.append(reading)

    def metrics(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        util = [s.utilization_pct for s in self.samples]
        memory = [s.memory_used_mib for s in self.samples]
        return {
            "gpu_utilization": round(sum(util) / len(util), 1),
            "gpu_utilization_peak": round(max(util), 1),
            "memory_used": int(memory[-1]),
            "memory_peak": int(max(memory)),
            "gpu_samples": len(self.samples),
        }


# --- the result ---------------------------------------------------------------------------


