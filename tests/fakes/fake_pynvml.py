"""A scriptable stand-in for ``pynvml`` (nvidia-ml-py), for machines without a GPU.

It follows the real module: the same function names and signatures, the real ctypes
structs (``c_nvmlMemory_t`` total/free/used in bytes, ``c_nvmlUtilization_t`` gpu/memory),
process lists as ``nvmlFriendlyObject`` with ``pid``/``usedGpuMemory`` (``None`` where NVML
has no figure), and the real error classes (``NVMLError_GpuIsLost`` is value 15, ...),
copied from the installed pynvml, which can be imported without a driver.
``tests/gpu/test_fake_pynvml.py`` checks the names, signatures and codes against it.

Script it per test::

    fake = FakeNvml.with_gpus(4)                 # or FakeNvml([FakeGpu(...), ...])
    fake.gpus[1].util_gpu = 90
    fake.gpus[2].lose()                          # now; or lose_after=N device calls
    FakeNvml.no_driver()                         # nvmlInit raises NVMLError_LibraryNotFound
    FakeNvml([FakeGpu.a100_mig(instances=3)])    # a GPU in MIG mode with 3 instances
    install(monkeypatch, fake)                   # sys.modules["pynvml"] = fake
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pynvml as _real

if getattr(_real, "IS_FAKE", False):  # imported after a fake was installed: find the real one
    _real = _real.REAL

MIB = 1 << 20
_uuids = itertools.count()

# What NVML answers on a MIG instance handle (per-instance utilization and sensors are
# the card's business; nvitop shows N/A there too).
MIG_UNSUPPORTED = frozenset({
    "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount",
})


@dataclass
class FakeGpu:
    """One device (a GPU, or a MIG instance inside ``mig``). Mutate it between samples."""

    name: str = "NVIDIA A100-SXM4-80GB"
    memory_total_mib: int = 81920
    memory_used_mib: int = 512
    util_gpu: int = 0
    util_mem: int = 0
    temperature_c: int = 35
    power_mw: int = 60_000
    power_limit_mw: int = 400_000
    processes: dict[int, int | None] = field(default_factory=dict)  # pid -> MiB (None: N/A)
    graphics: dict[int, int | None] = field(default_factory=dict)  # graphics processes, same
    process_util: dict[int, int] = field(default_factory=dict)  # pid -> SM % (its newest sample)
    unsupported: set[str] = field(default_factory=set)  # functions that raise NotSupported
    mig_capable: bool = False  # False: nvmlDeviceGetMigMode raises NotSupported
    mig: list[FakeGpu | None] | None = None  # MIG mode on: its instances (None = empty place)
    max_mig: int = 7
    uuid: str = ""
    lost: bool = False
    lost_error: str = "NVML_ERROR_GPU_IS_LOST"  # or NVML_ERROR_UNKNOWN, ...
    lose_after: int | None = None  # become lost once this many device calls have answered
    slow: dict[str, float] = field(default_factory=dict)  # function -> seconds it blocks
    calls: int = 0  # device calls answered or refused (not counting calls while lost)
    parent: FakeGpu | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.uuid:
            prefix = "MIG" if self.parent is not None else "GPU"
            self.uuid = f"{prefix}-fa4e0000-0000-4000-8000-{next(_uuids):012x}"
        for inst in self.mig or ():
            if inst is not None:
                inst.parent = self
                if inst.uuid.startswith("GPU-"):
                    inst.uuid = "MIG-" + inst.uuid[4:]
                inst.unsupported |= MIG_UNSUPPORTED

    def lose(self, error: str = "NVML_ERROR_GPU_IS_LOST") -> None:
        """Fall off the bus now: every call on this device raises ``error``."""
        self.lost, self.lost_error = True, error

    @classmethod
    def a100_mig(cls, instances: int = 2, *, instance_mib: int = 9856, **kw: Any) -> FakeGpu:
        """An A100 in MIG mode with ``instances`` 1g.10gb instances."""
        return cls(name="NVIDIA A100-SXM4-80GB", mig_capable=True, mig=[
            FakeGpu(name="NVIDIA A100-SXM4-80GB MIG 1g.10gb", memory_total_mib=instance_mib,
                    memory_used_mib=13) for _ in range(instances)], **kw)


class FakeHandle:
    """What ``nvmlDeviceGetHandleByIndex`` returns: opaque to callers, like the real one."""

    __slots__ = ("gpu",)

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu

    def __repr__(self) -> str:
        return f"<FakeHandle {self.gpu.uuid}>"


class FakeNvml(ModuleType):
    """``sys.modules["pynvml"]`` for a test; see the module docstring."""

    IS_FAKE = True
    REAL = _real

    def __init__(self, gpus: Iterable[FakeGpu] = (), *, driver: str | None = None,
                 driver_version: str = "550.54.15", cuda_version: int = 12040) -> None:
        super().__init__("pynvml", "fake pynvml (tests/fakes/fake_pynvml.py)")
        for name in dir(_real):  # constants, error classes, structs, helpers
            if name.startswith(("NVML_", "NVMLError", "c_nvml", "nvmlFriendly", "nvmlStruct",
                                "nvmlExceptionClass", "NVMLLibraryMismatchError")):
                setattr(self, name, getattr(_real, name))
        self.gpus = list(gpus)
        self.driver = driver  # None: loaded; else the NVML_ERROR_* name nvmlInit raises
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.initialized = 0  # NVML's reference count
        self.calls: Counter[str] = Counter()  # function name -> times called
        self._lock = threading.Lock()

    # --- scripting ---------------------------------------------------------------

    @classmethod
    def with_gpus(cls, count: int, **gpu: Any) -> FakeNvml:
        return cls([FakeGpu(**gpu) for _ in range(count)])

    @classmethod
    def no_driver(cls, error: str = "NVML_ERROR_LIBRARY_NOT_FOUND") -> FakeNvml:
        return cls(driver=error)

    def error(self, name: str) -> Exception:
        """The real exception for an ``NVML_ERROR_*`` name (``NVMLError_GpuIsLost``, ...)."""
        exc: Exception = self.NVMLError(getattr(self, name))
        return exc

    # --- plumbing ----------------------------------------------------------------

    def _enter(self, fn: str) -> None:
        with self._lock:
            self.calls[fn] += 1
        if self.driver is not None and fn != "nvmlInit":
            raise self.error("NVML_ERROR_UNINITIALIZED")  # the real one: library never loaded
        if fn != "nvmlInit" and self.initialized == 0:
            raise self.error("NVML_ERROR_UNINITIALIZED")

    def _device(self, fn: str, handle: Any) -> FakeGpu:
        self._enter(fn)
        if not isinstance(handle, FakeHandle):
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        gpu = handle.gpu
        delay = gpu.slow.get(fn, 0.0)
        if delay:
            time.sleep(delay)  # a slow driver call, not synchronisation
        parent_lost = gpu.parent is not None and gpu.parent.lost
        if gpu.lost or parent_lost:
            raise self.error(gpu.parent.lost_error if parent_lost and gpu.parent else
                             gpu.lost_error)
        gpu.calls += 1
        if gpu.lose_after is not None and gpu.calls > gpu.lose_after:
            gpu.lose(gpu.lost_error)
            raise self.error(gpu.lost_error)
        if fn in gpu.unsupported:
            raise self.error("NVML_ERROR_NOT_SUPPORTED")
        return gpu

    # --- init and system ---------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.driver is not None:
            raise self.error(self.driver)
        self.initialized += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        gpu = self.gpus[index]
        if gpu.lost:
            raise self.error(gpu.lost_error)
        return FakeHandle(gpu)

    # --- device identity -----------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        gpu = self._device("nvmlDeviceGetIndex", handle)
        if gpu.parent is not None:
            raise self.error("NVML_ERROR_NOT_SUPPORTED")
        return self.gpus.index(gpu)

    # --- readings ------------------------------------------------------------------

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        total, used = gpu.memory_total_mib * MIB, gpu.memory_used_mib * MIB
        if version:
            return self.c_nvmlMemory_v2_t(version=version, total=total, reserved=0,
                                          free=total - used, used=used)
        return self.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return self.c_nvmlUtilization_t(gpu=gpu.util_gpu, memory=gpu.util_mem)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        return gpu.temperature_c

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetPowerManagementLimit", handle).power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        return self._process_list(gpu.processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._device("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return self._process_list(gpu.graphics)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[Any]:
        """Per-process samples newer than ``timeStamp`` (µs), as the real call answers;
        NOT_FOUND when there is none (the real driver's answer for "no sample")."""
        gpu = self._device("nvmlDeviceGetProcessUtilization", handle)
        now_us = int(time.time() * 1_000_000)
        if not gpu.process_util or now_us <= timeStamp:
            raise self.error("NVML_ERROR_NOT_FOUND")
        return [self.c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=now_us, smUtil=sm,
                                                      memUtil=0, encUtil=0, decUtil=0)
                for pid, sm in gpu.process_util.items()]

    def _process_list(self, processes: dict[int, int | None]) -> list[Any]:
        """As the real (v3) calls answer: friendly objects with ``pid`` and
        ``usedGpuMemory`` in bytes, ``None`` where NVML has no figure (WDDM)."""
        out = []
        for pid, mib in processes.items():
            obj = self.nvmlStructToFriendlyObject(self.c_nvmlProcessInfo_v3_t(
                pid=pid, usedGpuMemory=0 if mib is None else mib * MIB,
                gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF))
            if mib is None:
                obj.usedGpuMemory = None  # what the real module does for N/A (WDDM)
            out.append(obj)
        return out

    # --- MIG -------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        gpu = self._device("nvmlDeviceGetMigMode", device)
        if not gpu.mig_capable and gpu.mig is None:
            raise self.error("NVML_ERROR_NOT_SUPPORTED")
        mode = self.NVML_DEVICE_MIG_ENABLE if gpu.mig is not None else self.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        gpu = self._device("nvmlDeviceGetMaxMigDeviceCount", device)
        return gpu.max_mig if gpu.mig is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> FakeHandle:
        gpu = self._device("nvmlDeviceGetMigDeviceHandleByIndex", device)
        if gpu.mig is None:
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        if not 0 <= index < gpu.max_mig:
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        inst = gpu.mig[index] if index < len(gpu.mig) else None
        if inst is None:
            raise self.error("NVML_ERROR_NOT_FOUND")
        return FakeHandle(inst)

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> int:
        return int(self._device("nvmlDeviceIsMigDeviceHandle", device).parent is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> FakeHandle:
        gpu = self._device("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice)
        if gpu.parent is None:
            raise self.error("NVML_ERROR_INVALID_ARGUMENT")
        return FakeHandle(gpu.parent)


#: The functions the fake implements (each must exist in the real module, same signature).
FAKE_FUNCTIONS = tuple(sorted(n for n in vars(FakeNvml) if n.startswith("nvml")))


def install(monkeypatch: Any, fake: FakeNvml) -> FakeNvml:
    """Put ``fake`` in ``sys.modules["pynvml"]`` for one test (undone by monkeypatch)."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake
