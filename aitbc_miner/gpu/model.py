"""The GPU vocabulary shared by the NVML choke point and the sampler.

``NA`` stands for a reading the device cannot give (NVML said "not supported", "no
permission", ...): it prints as ``N/A``, is falsy, and never compares equal to a number.
Everything here is frozen, so a viewer may keep a sample as long as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar

T = TypeVar("T")


class NaType:
    """The type of :data:`NA`; there is exactly one instance."""

    _instance: NaType | None = None
    __slots__ = ()

    def __new__(cls) -> NaType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "N/A"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NA"  # pickles as the module-level singleton


NA: Final = NaType()

#: A reading that may be missing.
MaybeInt = int | NaType
MaybeFloat = float | NaType
MaybeStr = str | NaType


def is_na(value: object) -> bool:
    return value is NA


def or_none(value: T | NaType) -> T | None:
    """``NA`` -> ``None`` (for JSON and arithmetic); anything else unchanged."""
    return None if value is NA else value  # type: ignore[return-value]


class DriverState(StrEnum):
    """What NVML as a whole can do for us; shown plainly on the GPU panel."""

    UNINITIALIZED = "uninitialized"  # nothing asked yet (NVML starts lazily)
    OK = "ok"  # at least one device is visible
    NO_DEVICES = "no-devices"  # the driver answers but shows no device
    NO_DRIVER = "no-driver"  # no libnvidia-ml / driver not loaded / library mismatch
    FAILED = "failed"  # NVML went away while we ran (every device is lost)


class GpuState(StrEnum):
    OK = "ok"
    LOST = "lost"  # fell off the bus (or NVML went away); never queried again


#: Operator-facing text for each driver state (the console and the log use these).
DRIVER_MESSAGES: Mapping[DriverState, str] = MappingProxyType({
    DriverState.UNINITIALIZED: "GPU telemetry not started",
    DriverState.OK: "NVIDIA driver ready",
    DriverState.NO_DEVICES: "no visible devices",
    DriverState.NO_DRIVER: "no NVIDIA driver found",
    DriverState.FAILED: "the NVIDIA driver stopped answering",
})

SIMULATED_PREFIX: Final = "SIMULATED "  # every simulated device name starts with this


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """One device NVML showed us when it started: a GPU or a MIG instance.

    ``index`` is NVML's index for a GPU ("0") and "<parent>:<n>" for a MIG instance
    ("0:1", as nvitop writes it). A GPU in MIG mode is ``mig_enabled``: it is shown (its
    temperature and power are the card's) but jobs go to its instances, never to it.
    """

    index: str
    uuid: str
    name: str
    handle: Any = field(compare=False, repr=False)
    mig_parent: str | None = None  # the parent GPU's index, for a MIG instance
    mig_enabled: bool = False
    children: tuple[str, ...] = ()  # a MIG-mode GPU's instance indexes

    @property
    def schedulable(self) -> bool:
        """Whether jobs may run on it (a GPU in MIG mode is not; its instances are)."""
        return not self.mig_enabled


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one device. Sizes in MiB, power in W, temperature in Celsius.

    ``processes`` maps a PID to its VRAM in MiB (``NA`` where NVML cannot say, e.g.
    under WDDM), compute and graphics processes alike; ``process_kinds`` maps each PID
    to ``"C"`` (compute), ``"G"`` (graphics) or ``"C+G"``; ``process_sm_pct`` maps a PID
    to its share of the SMs in % (where the device can say). Every other field is ``NA``
    when the device cannot report it, and all of them are ``NA`` once the device is lost.
    """

    index: str
    uuid: str
    name: str
    at: float
    state: GpuState = GpuState.OK
    mig_parent: str | None = None
    mig_enabled: bool = False
    memory_total_mib: MaybeInt = NA
    memory_used_mib: MaybeInt = NA
    memory_free_mib: MaybeInt = NA
    util_gpu_pct: MaybeInt = NA
    util_mem_pct: MaybeInt = NA
    temperature_c: MaybeInt = NA
    power_w: MaybeFloat = NA
    power_limit_w: MaybeFloat = NA
    processes: Mapping[int, MaybeInt] = field(default_factory=lambda: MappingProxyType({}))
    process_kinds: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    process_sm_pct: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    simulated: bool = False
    reason: str | None = None  # why it is lost (or why this reading failed)

    @property
    def lost(self) -> bool:
        return self.state is GpuState.LOST

    @property
    def schedulable(self) -> bool:
        return not self.mig_enabled

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``NA`` becomes ``None``, process PIDs become strings."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("processes", "process_kinds", "process_sm_pct"):
                value = {str(pid): or_none(v) for pid, v in value.items()}
            elif isinstance(value, StrEnum):
                value = value.value
            out[name] = or_none(value)
        return out


def frozen_processes(processes: Mapping[int, T]) -> Mapping[int, T]:
    """A read-only copy: a sample's process map never changes after it is made."""
    return MappingProxyType(dict(processes))
