"""``--simulate-gpus N``: fake NVIDIA devices for the demo, loudly marked SIMULATED.

The simulated module answers the same pynvml calls the choke point makes, with the real
pynvml's error classes and structs, so the whole GPU path (sampling, slots, admission,
capabilities) runs unchanged. Every device name starts with ``SIMULATED``, the driver
message says so, every sample carries ``simulated=True``, and the capabilities carry
``"simulated": true``: nothing can pass these devices off as real hardware.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from .model import SIMULATED_PREFIX
from .nvml import Nvml

SIM_DRIVER_VERSION = "SIMULATED"
SIM_CUDA_VERSION = 12040  # "12.4"
MAX_SIMULATED = 64  # more than a chassis holds; a typo guard


def simulated_module(count: int, *, name: str = "NVIDIA H100 80GB HBM3",
                     memory_mib: int = 81559, clock: Callable[[], float] = time.monotonic,
                     ) -> Any:
    """A pynvml stand-in with ``count`` healthy devices whose load drifts with ``clock``."""
    if not 0 <= count <= MAX_SIMULATED:
        raise ValueError(f"simulate between 0 and {MAX_SIMULATED} GPUs, not {count}")
    import pynvml as real  # errors and structs only; no NVML call is made

    started = clock()

    def wave(i: int, period: float, low: float, high: float) -> float:
        phase = (clock() - started) / period + i * 0.7
        return low + (high - low) * (0.5 + 0.5 * math.sin(2 * math.pi * phase))

    def check(handle: Any) -> int:
        if not isinstance(handle, int) or not 0 <= handle < count:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    def memory(handle: Any, version: Any = None) -> Any:
        i = check(handle)
        total = memory_mib << 20
        used = int(total * wave(i, 47.0, 0.05, 0.6))
        return real.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def utilization(handle: Any) -> Any:
        i = check(handle)
        return real.c_nvmlUtilization_t(gpu=int(wave(i, 13.0, 0, 100)),
                                        memory=int(wave(i, 17.0, 0, 60)))

    def uuid(handle: Any) -> str:
        return f"GPU-51M0LA7E-0000-0000-0000-{check(handle):012d}"

    def device_name(handle: Any) -> str:
        check(handle)
        return SIMULATED_PREFIX + name

    def power_limit(handle: Any) -> int:
        check(handle)
        return 700_000  # mW

    def processes(handle: Any) -> list[Any]:
        check(handle)
        return []  # simulated devices run nothing

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
        nvmlDeviceGetTemperature=lambda h, sensor: int(wave(check(h), 61.0, 38, 71)),
        nvmlDeviceGetPowerUsage=lambda h: int(wave(check(h), 13.0, 70_000, 650_000)),
        nvmlDeviceGetEnforcedPowerLimit=power_limit,
        nvmlDeviceGetComputeRunningProcesses=processes,
    )


def simulated_nvml(count: int, **kwargs: Any) -> Nvml:
    """An :class:`Nvml` over ``count`` simulated devices (see :func:`simulated_module`)."""
    return Nvml(simulated_module(count, **kwargs), simulated=True)
