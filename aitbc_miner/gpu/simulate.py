"""``--simulate-gpus N``: fake NVIDIA devices for the demo, loudly marked SIMULATED.

The simulated module answers the same pynvml calls the choke point makes, with the real
pynvml's error classes and structs, so the whole GPU path (sampling, processes, slots,
admission, capabilities) runs unchanged. Every device name starts with ``SIMULATED``,
the driver message says so, every sample carries ``simulated=True``, and the
capabilities carry ``"simulated": true``: nothing can pass these devices off as real
hardware.

The devices follow the load the miner puts on them (``load``: the sampler's
``workload``, GPU uuid -> one PID set per job running there): with no job a device idles
(0 % utilization, about a tenth of its power limit, a few hundred MiB of VRAM, no
process); each running job adds utilization, power, heat and a model's worth of VRAM,
held by the job's own process or, for a job that runs through an inference server (no
PID of its own), by the server (``backend_pid``; the demo's is in-process: the miner's).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .model import SIMULATED_PREFIX
from .nvml import Nvml

SIM_DRIVER_VERSION = "SIMULATED"
SIM_CUDA_VERSION = 12040  # "12.4"
MAX_SIMULATED = 64  # more than a chassis holds; a typo guard
IDLE_POWER_FRACTION = 0.1  # of the power limit, with nothing running
IDLE_TEMPERATURE_C = 34.0
IDLE_VRAM_MIB = 310  # the driver's own context
JOB_VRAM_FRACTION = 0.22  # of the device's memory, per running job (a model's weights)

#: GPU uuid -> one PID set per job running on it (empty: the job has no PID of its own).
Load = Callable[[], Mapping[str, tuple[frozenset[int], ...]]]


def _no_load() -> Mapping[str, tuple[frozenset[int], ...]]:
    return {}


def simulated_module(count: int, *, name: str = "NVIDIA H100 80GB HBM3",
                     memory_mib: int = 81559, clock: Callable[[], float] = time.monotonic,
                     load: Load = _no_load, backend_pid: int | None = None,
                     power_limit_w: int = 700,
                     lost: Callable[[int], bool] | None = None) -> Any:
    """A pynvml stand-in with ``count`` devices that follow ``load`` (idle without it);
    a device for which ``lost(index)`` is true answers as a GPU fallen off the bus."""
    if not 0 <= count <= MAX_SIMULATED:
        raise ValueError(f"simulate between 0 and {MAX_SIMULATED} GPUs, not {count}")
    import pynvml as real  # errors and structs only; no NVML call is made

    started = clock()
    server = os.getpid() if backend_pid is None else backend_pid

    def wave(i: int, period: float, low: float, high: float) -> float:
        phase = (clock() - started) / period + i * 0.7
        return low + (high - low) * (0.5 + 0.5 * math.sin(2 * math.pi * phase))

    def check(handle: Any) -> int:
        if not isinstance(handle, int) or not 0 <= handle < count:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        if lost is not None and lost(handle):
            raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)
        return handle

    def uuid_of(i: int) -> str:
        return f"GPU-51M0LA7E-0000-0000-0000-{i:012d}"

    def jobs_on(i: int) -> tuple[frozenset[int], ...]:
        try:
            return tuple(load().get(uuid_of(i), ()))
        except Exception:  # a load source that fails reads as idle, never as an NVML error
            return ()

    def busy(i: int) -> float:
        """0 when idle, up to 1 with the device full of work."""
        jobs = len(jobs_on(i))
        return 0.0 if not jobs else min(1.0, jobs * wave(i, 13.0, 0.72, 0.97))

    def job_mib(i: int) -> int:
        return int(memory_mib * JOB_VRAM_FRACTION) - 64 * (i % 4)  # a model's weights

    def memory(handle: Any, version: Any = None) -> Any:
        i = check(handle)
        total = memory_mib << 20
        used_mib = min(memory_mib, IDLE_VRAM_MIB + job_mib(i) * len(jobs_on(i)))
        used = used_mib << 20
        return real.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def utilization(handle: Any) -> Any:
        i = check(handle)
        load_now = busy(i)
        return real.c_nvmlUtilization_t(gpu=int(100 * load_now), memory=int(55 * load_now))

    def uuid(handle: Any) -> str:
        return uuid_of(check(handle))

    def device_name(handle: Any) -> str:
        check(handle)
        return SIMULATED_PREFIX + name

    def power(handle: Any) -> int:
        i = check(handle)
        idle = IDLE_POWER_FRACTION * power_limit_w
        return int(1000 * (idle + (0.93 * power_limit_w - idle) * busy(i)))

    def temperature(handle: Any, sensor: int) -> int:
        return int(IDLE_TEMPERATURE_C + 40 * busy(check(handle)))

    def power_limit(handle: Any) -> int:
        check(handle)
        return power_limit_w * 1000  # mW

    def processes(handle: Any) -> list[Any]:
        """One entry per process holding VRAM, as the real v3 call gives them."""
        i = check(handle)
        held: dict[int, int] = {}
        for pids in jobs_on(i):
            pid = min(pids) if pids else server
            held[pid] = held.get(pid, 0) + job_mib(i)
        return [real.nvmlStructToFriendlyObject(real.c_nvmlProcessInfo_v3_t(
            pid=pid, usedGpuMemory=mib << 20, gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF)) for pid, mib in sorted(held.items())]

    def no_graphics(handle: Any) -> list[Any]:
        check(handle)
        return []  # a headless data-centre card runs no graphics

    def process_utilization(handle: Any, time_stamp: int) -> list[Any]:
        """Each process's share of the SMs (the device's utilization split among its
        jobs), as the real call answers; NOT_FOUND when nothing runs."""
        i = check(handle)
        procs = processes(i)
        if not procs:
            raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)
        now_us = max(int(time.time() * 1_000_000), time_stamp + 1)
        share = int(100 * busy(i) / len(procs))
        return [real.c_nvmlProcessUtilizationSample_t(pid=p.pid, timeStamp=now_us, smUtil=share,
                                                      memUtil=0, encUtil=0, decUtil=0)
                for p in procs]

    def not_supported(*_args: Any) -> Any:
        raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)

    def nothing() -> None:
        return None

    return SimpleNamespace(
        __name__="pynvml (SIMULATED)",
        NVMLError=real.NVMLError,
        NVMLLibraryMismatchError=real.NVMLLibraryMismatchError,
        NVML_TEMPERATURE_GPU=real.NVML_TEMPERATURE_GPU,
        NVML_DEVICE_MIG_ENABLE=real.NVML_DEVICE_MIG_ENABLE,
        **{n: getattr(real, n) for n in dir(real) if n.startswith("NVML_ERROR_")},
        nvmlInit=nothing,
        nvmlShutdown=nothing,
        nvmlSystemGetDriverVersion=lambda: SIM_DRIVER_VERSION,
        nvmlSystemGetCudaDriverVersion=lambda: SIM_CUDA_VERSION,
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda index: check(index),
        nvmlDeviceGetUUID=uuid,
        nvmlDeviceGetName=device_name,
        nvmlDeviceGetMigMode=not_supported,
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetTemperature=temperature,
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetEnforcedPowerLimit=power_limit,
        nvmlDeviceGetComputeRunningProcesses=processes,
        nvmlDeviceGetGraphicsRunningProcesses=no_graphics,
        nvmlDeviceGetProcessUtilization=process_utilization,
    )


def lost_file(path: Path) -> Callable[[int], bool]:
    """``lost`` for :func:`simulated_module`: while ``path`` exists, the devices whose
    indexes it lists (one per line; none listed: all) are lost (demos and tests)."""

    def lost(index: int) -> bool:
        try:
            text = path.read_text()
        except OSError:
            return False
        listed = {int(w) for w in text.split() if w.isdigit()}
        return not listed or index in listed

    return lost


def simulated_nvml(count: int, **kwargs: Any) -> Nvml:
    """An :class:`Nvml` over ``count`` simulated devices (see :func:`simulated_module`)."""
    return Nvml(simulated_module(count, **kwargs), simulated=True)
