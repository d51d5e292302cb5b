"""The one place that calls NVML (``pynvml``, package ``nvidia-ml-py``).

Like nvitop's ``libnvml.nvmlQuery``: NVML starts lazily, once, under a lock; every call
goes through :meth:`Nvml.query`, which sorts each NVML error into one of three kinds
(:data:`ERROR_KINDS`): a field the device cannot give becomes ``NA``; a device that fell
off the bus raises :class:`DeviceLost` (the caller marks it lost and never asks it again);
NVML itself going away raises :class:`DriverGone`. No driver at start is not an error:
:meth:`Nvml.init` returns a ``no-driver`` :class:`DriverInfo` and CPU work goes on.

All methods block (NVML calls can take milliseconds, and a sick driver much longer):
call them from a worker thread, never from the event loop. The sampler does.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from .errors import DRIVER_HINTS, ERROR_KINDS, DeviceLost, DriverGone, ErrorKind
from .model import (
    DRIVER_MESSAGES,
    NA,
    DeviceRef,
    DriverState,
    GpuSample,
    GpuState,
    MaybeFloat,
    MaybeInt,
    MaybeStr,
    frozen_processes,
)

log = logging.getLogger("aitbc_miner.gpu")

MIB: Final = 1 << 20  # NVML reports bytes; we show MiB
UINT_NA: Final = 0xFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE_uint: a field the driver left blank

#: A device's process maps carried over from its previous sample: PID -> MiB, PID -> kind,
#: PID -> SM utilization %.
KeptProcesses = tuple[Mapping[int, MaybeInt], Mapping[int, str], Mapping[int, int]]
PROCESS_UTIL_WINDOW_S: Final = 5.0  # per-process SM samples younger than this are read


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """What NVML's start told us; ``message`` is the operator-facing line."""

    state: DriverState
    message: str
    driver_version: MaybeStr = NA
    cuda_version: MaybeStr = NA  # "12.4"
    simulated: bool = False
    detail: str = ""  # the cause alone ("libnvidia-ml.so.1 is not installed"), if any


def cuda_version_string(version: int) -> str:
    """NVML's CUDA driver version (``12040``) as people write it (``"12.4"``)."""
    return f"{version // 1000}.{version % 1000 // 10}"


class Nvml:
    """NVML for one process: start once, enumerate once, read devices on demand.

    ``module``: a ``pynvml``-compatible module; absent, ``import pynvml`` at the first
    use (so a test that put a fake in ``sys.modules`` before that gets the fake).
    ``simulated``: every sample and the driver state say SIMULATED.
    """

    def __init__(self, module: Any = None, *, simulated: bool = False) -> None:
        self._module = module
        self.simulated = simulated
        self._init_lock = threading.Lock()
        self._read_lock = threading.Lock()  # one reader at a time (sampler, probe)
        self._info: DriverInfo | None = None
        self._devices: tuple[DeviceRef, ...] = ()
        self._lost: dict[str, str] = {}  # index -> why
        self._unreadable_logged: set[str] = set()
        self._code_names: dict[int, str] = {}
        self._field_errors: tuple[type[BaseException], ...] = ()
        self._nvml_error: type[BaseException] = _NeverRaised

    # --- start -------------------------------------------------------------------

    @property
    def info(self) -> DriverInfo:
        """The driver state (``uninitialized`` until :meth:`init` has run)."""
        return self._info or DriverInfo(DriverState.UNINITIALIZED,
                                        DRIVER_MESSAGES[DriverState.UNINITIALIZED])

    @property
    def devices(self) -> tuple[DeviceRef, ...]:
        """Every device found at start, GPUs and MIG instances, lost ones included."""
        return self._devices

    def init(self) -> DriverInfo:
        """Start NVML once (later calls return the first answer). Never raises for a
        missing driver: the answer's ``state`` says ``no-driver`` instead."""
        with self._init_lock:
            if self._info is None:
                self._info = self._start()
                self._log_start(self._info)
            return self._info

    def _start(self) -> DriverInfo:
        if self._module is None:
            try:
                self._module = importlib.import_module("pynvml")
            except ImportError as exc:
                return _no_driver(f"pynvml is not installed: {exc}")
        mod = self._module
        self._nvml_error = mod.NVMLError
        self._code_names = {getattr(mod, n): n for n in dir(mod) if n.startswith("NVML_ERROR_")}
        mismatch = getattr(mod, "NVMLLibraryMismatchError", None)
        self._field_errors = (mismatch,) if isinstance(mismatch, type) else ()
        try:
            mod.nvmlInit()
        except mod.NVMLError as exc:
            name = self._code_names.get(getattr(exc, "value", -1), "")
            hint = DRIVER_HINTS.get(name, str(exc))
            return _no_driver(hint)
        try:
            driver = self._system_query("nvmlSystemGetDriverVersion")
            cuda = self._system_query("nvmlSystemGetCudaDriverVersion")
            self._devices = tuple(self._enumerate())
        except DriverGone as exc:
            return _no_driver(str(exc))
        cuda_text = cuda_version_string(cuda) if isinstance(cuda, int) and cuda > 0 else NA
        state = DriverState.OK if self._devices else DriverState.NO_DEVICES
        message = DRIVER_MESSAGES[state]
        if self.simulated:
            message = f"SIMULATED: {len(self._devices)} fake device(s), no real GPU is used"
        return DriverInfo(state, message, driver, cuda_text, self.simulated)

    def _system_query(self, fn: str, *args: Any) -> Any:
        """A query about the system, not a device: "lost" means only "unknown" here."""
        try:
            return self.query(fn, *args)
        except DeviceLost:
            return NA

    def _log_start(self, info: DriverInfo) -> None:
        if info.simulated:
            log.warning("%s", info.message)
        elif info.state is DriverState.NO_DRIVER:
            log.warning("%s; GPU slots are off, CPU slots keep working", info.message)
        elif info.state is DriverState.NO_DEVICES:
            log.warning("NVIDIA driver %s shows no visible devices; GPU slots are off",
                        info.driver_version)
        else:
            log.info("NVIDIA driver %s (CUDA %s): %d device(s)", info.driver_version,
                     info.cuda_version, len(self._devices))

    def _enumerate(self) -> Iterable[DeviceRef]:
        count = self._system_query("nvmlDeviceGetCount")
        for i in range(count if isinstance(count, int) else 0):
            index = str(i)
            try:
                handle = self.query("nvmlDeviceGetHandleByIndex", i)
                uuid, name = self._identity(handle, index)
                children = tuple(self._mig_instances(handle, index))
            except DeviceLost as exc:
                self._lost[index] = f"lost at start: {exc}"
                yield DeviceRef(index, f"unknown-{index}", "unknown GPU", None)
                continue
            yield DeviceRef(index, uuid, name, handle, mig_enabled=bool(children),
                            children=tuple(c.index for c in children))
            yield from children

    def _identity(self, handle: Any, index: str) -> tuple[str, str]:
        uuid = self.query("nvmlDeviceGetUUID", handle)
        name = self.query("nvmlDeviceGetName", handle)
        return (uuid if isinstance(uuid, str) else f"unknown-{index}",
                name if isinstance(name, str) else "unknown GPU")

    def _mig_instances(self, handle: Any, parent: str) -> Iterable[DeviceRef]:
        """A MIG-mode GPU's instances, each its own device with its own memory."""
        mode = self.query("nvmlDeviceGetMigMode", handle)
        enable = getattr(self._module, "NVML_DEVICE_MIG_ENABLE", 1)
        if mode is NA or not mode or mode[0] != enable:
            return
        most = self.query("nvmlDeviceGetMaxMigDeviceCount", handle)
        for j in range(most if isinstance(most, int) else 0):
            mig = self.query("nvmlDeviceGetMigDeviceHandleByIndex", handle, j)
            if mig is NA:
                continue  # an empty position
            index = f"{parent}:{j}"
            uuid, name = self._identity(mig, index)
            yield DeviceRef(index, uuid, name, mig, mig_parent=parent)

    def close(self) -> None:
        """Shut NVML down (only if it started); a later :meth:`init` does not restart it."""
        with self._init_lock:
            if self._info is not None and self._info.state in (DriverState.OK,
                                                               DriverState.NO_DEVICES):
                try:
                    self._module.nvmlShutdown()
                except self._nvml_error as exc:
                    log.debug("nvmlShutdown: %s", exc)

    # --- the one query -----------------------------------------------------------

    def query(self, fn: str, *args: Any) -> Any:
        """``pynvml.<fn>(*args)``, with bytes decoded; ``NA`` where the field is unavailable.

        Raises:
            DeviceLost: the device is gone (GPU_IS_LOST, UNKNOWN, RESET_REQUIRED, ...).
            DriverGone: NVML stopped answering (driver unloaded or upgraded under us).
        """
        func = getattr(self._module, fn, None)
        if func is None:
            return NA  # this pynvml is older than the call
        try:
            value = func(*args)
        except self._nvml_error as exc:
            code = getattr(exc, "value", None)
            name = self._code_names.get(code, "") if isinstance(code, int) else ""
            kind = ERROR_KINDS.get(name, ErrorKind.FIELD)
            if kind is ErrorKind.LOST:
                raise DeviceLost(f"{fn}: {exc}") from exc
            if kind is ErrorKind.DRIVER:
                raise DriverGone(f"{fn}: {exc}") from exc
            return NA
        except self._field_errors:
            return NA  # NVMLLibraryMismatchError: the library lacks this function
        return value.decode() if isinstance(value, bytes) else value

    # --- reading -------------------------------------------------------------------

    def lost(self) -> Mapping[str, str]:
        """Indexes of lost devices, with the reason."""
        return MappingProxyType(dict(self._lost))

    def read_all(self, at: float, *, processes: bool = True,
                 previous: Mapping[str, GpuSample] | None = None) -> tuple[GpuSample, ...]:
        """One sample per device. ``processes=False`` keeps each device's process map from
        ``previous`` (processes are read less often than the rest). Never raises for
        device or driver trouble: those show as lost samples and a ``failed`` state."""
        info = self.init()
        if info.state is not DriverState.OK:
            return ()
        with self._read_lock:
            samples = []
            for ref in self._devices:
                keep = None if processes else _processes_of(previous, ref.index)
                try:
                    samples.append(self.read(ref, at, keep))
                except DriverGone as exc:
                    return self._driver_failed(at, str(exc))
                except Exception as exc:  # an odd answer from one device: the others go on
                    samples.append(self._unreadable(ref, at, exc))
            return tuple(samples)

    def read(self, ref: DeviceRef, at: float,
             keep_processes: KeptProcesses | None = None) -> GpuSample:
        """Read one device; a lost device gives a lost sample (and is not asked again).

        Raises:
            DriverGone: NVML stopped answering; the caller marks every device lost.
        """
        if ref.index in self._lost:
            return self._lost_sample(ref, at)
        try:
            return self._read(ref, at, keep_processes)
        except DeviceLost as exc:
            self._lost[ref.index] = str(exc)
            for child in ref.children:  # a MIG instance cannot outlive its GPU
                self._lost.setdefault(child, f"its GPU {ref.index} was lost")
            return self._lost_sample(ref, at)

    def _read(self, ref: DeviceRef, at: float,
              keep_processes: KeptProcesses | None) -> GpuSample:
        h, q = ref.handle, self.query
        memory = q("nvmlDeviceGetMemoryInfo", h)
        util = q("nvmlDeviceGetUtilizationRates", h)
        temperature = q("nvmlDeviceGetTemperature", h,
                        getattr(self._module, "NVML_TEMPERATURE_GPU", 0))
        power = q("nvmlDeviceGetPowerUsage", h)
        limit = q("nvmlDeviceGetEnforcedPowerLimit", h)
        kinds: Mapping[int, str]
        sm: Mapping[int, int]
        if keep_processes is not None:
            procs, kinds, sm = keep_processes
        elif ref.mig_enabled:
            procs, kinds, sm = {}, {}, {}  # processes run on its instances: read there
        else:
            procs, kinds = _processes(q("nvmlDeviceGetComputeRunningProcesses", h),
                                      q("nvmlDeviceGetGraphicsRunningProcesses", h))
            since_us = max(0, int((at - PROCESS_UTIL_WINDOW_S) * 1_000_000))
            sm = _sm_utilization(q("nvmlDeviceGetProcessUtilization", h, since_us), procs)
        return GpuSample(
            index=ref.index, uuid=ref.uuid, name=ref.name, at=at,
            mig_parent=ref.mig_parent, mig_enabled=ref.mig_enabled,
            memory_total_mib=_mib(getattr(memory, "total", NA)),
            memory_used_mib=_mib(getattr(memory, "used", NA)),
            memory_free_mib=_mib(getattr(memory, "free", NA)),
            util_gpu_pct=_uint(getattr(util, "gpu", NA)),
            util_mem_pct=_uint(getattr(util, "memory", NA)),
            temperature_c=_uint(temperature),
            power_w=_watts(power), power_limit_w=_watts(limit),
            processes=frozen_processes(procs), process_kinds=frozen_processes(kinds),
            process_sm_pct=frozen_processes(sm),
            simulated=self.simulated)

    def _unreadable(self, ref: DeviceRef, at: float, exc: Exception) -> GpuSample:
        """A device whose reading failed in a way NVML's errors do not cover: this sample
        is all N/A (a gap in its history), the next one tries again."""
        if ref.index not in self._unreadable_logged:
            self._unreadable_logged.add(ref.index)
            log.warning("GPU %s: reading failed (%s: %s); shown as N/A until it answers",
                        ref.index, type(exc).__name__, exc, exc_info=True)
        return GpuSample(index=ref.index, uuid=ref.uuid, name=ref.name, at=at,
                         mig_parent=ref.mig_parent, mig_enabled=ref.mig_enabled,
                         simulated=self.simulated, reason=f"reading failed: {exc}")

    def _lost_sample(self, ref: DeviceRef, at: float) -> GpuSample:
        return GpuSample(index=ref.index, uuid=ref.uuid, name=ref.name, at=at,
                         state=GpuState.LOST, mig_parent=ref.mig_parent,
                         mig_enabled=ref.mig_enabled, simulated=self.simulated,
                         reason=self._lost.get(ref.index, "lost"))

    def _driver_failed(self, at: float, reason: str) -> tuple[GpuSample, ...]:
        log.error("the NVIDIA driver stopped answering (%s); every GPU is marked lost", reason)
        for ref in self._devices:
            self._lost.setdefault(ref.index, f"driver gone: {reason}")
        with self._init_lock:
            self._info = replace(self.info, state=DriverState.FAILED, detail=reason,
                                 message=f"{DRIVER_MESSAGES[DriverState.FAILED]} ({reason})")
        return tuple(self._lost_sample(ref, at) for ref in self._devices)


def _no_driver(detail: str) -> DriverInfo:
    return DriverInfo(DriverState.NO_DRIVER,
                      f"{DRIVER_MESSAGES[DriverState.NO_DRIVER]} ({detail})", detail=detail)


class _NeverRaised(Exception):
    """Stands in for ``pynvml.NVMLError`` before the module is loaded."""


def _processes_of(previous: Mapping[str, GpuSample] | None, index: str) -> KeptProcesses:
    sample = previous.get(index) if previous else None
    if sample is None:
        return MappingProxyType({}), MappingProxyType({}), MappingProxyType({})
    return sample.processes, sample.process_kinds, sample.process_sm_pct


def _sm_utilization(samples: Any, pids: Mapping[int, Any]) -> dict[int, int]:
    """PID -> SM utilization % from NVML's per-process samples (the newest sample of each
    PID; only PIDs on the device's process lists). ``NA`` (not supported, no sample in
    the window) gives none."""
    if samples is NA or samples is None:
        return {}
    newest: dict[int, tuple[int, int]] = {}
    for s in samples:
        pid, at, util = getattr(s, "pid", None), getattr(s, "timeStamp", 0), getattr(
            s, "smUtil", None)
        if not isinstance(pid, int) or pid not in pids or not isinstance(util, int):
            continue
        if pid not in newest or at >= newest[pid][0]:
            newest[pid] = (at, max(0, min(100, util)))
    return {pid: util for pid, (_, util) in newest.items()}


def _processes(compute: Any, graphics: Any) -> tuple[dict[int, MaybeInt], dict[int, str]]:
    """PID -> MiB and PID -> "C"/"G"/"C+G" from NVML's two lists (either may be ``NA``:
    not supported on this device). A PID in both lists holds one context: its VRAM is
    counted once (the larger figure)."""
    procs = _process_map(compute)
    kinds = dict.fromkeys(procs, "C")
    for pid, mib in _process_map(graphics).items():
        if pid in procs:
            kinds[pid] = "C+G"
            have = procs[pid]
            procs[pid] = mib if have is NA else have if mib is NA else max(have, mib)  # type: ignore[type-var]
        else:
            procs[pid], kinds[pid] = mib, "G"
    return procs, kinds


def _process_map(procs: Any) -> dict[int, MaybeInt]:
    if procs is NA or procs is None:
        return {}
    out: dict[int, MaybeInt] = {}
    for proc in procs:
        used = getattr(proc, "usedGpuMemory", None)
        mib = _mib(used) if isinstance(used, int) else NA
        pid = int(proc.pid)
        previous = out.get(pid, 0)
        # One PID can appear once per MIG compute instance: add them up.
        out[pid] = NA if mib is NA or previous is NA else previous + mib  # type: ignore[operator]
    return out


def _mib(value: Any) -> MaybeInt:
    if not isinstance(value, int) or value < 0 or value == 0xFFFFFFFFFFFFFFFF:
        return NA
    return value // MIB


def _uint(value: Any) -> MaybeInt:
    return value if isinstance(value, int) and 0 <= value < UINT_NA else NA


def _watts(milliwatts: Any) -> MaybeFloat:
    value = _uint(milliwatts)
    return NA if value is NA else round(value / 1000.0, 1)  # type: ignore[operator]
