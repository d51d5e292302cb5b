"""GPU telemetry and GPU slots.

``nvml`` is the only module that calls NVML (``errors`` says what its errors mean);
``telemetry`` samples it off the event loop into frozen snapshots; ``slots`` turns a
snapshot into GPU slot specs and decides admission; ``probe`` gives the registration
capabilities; ``simulate`` gives the demo's SIMULATED devices. Nothing outside this
package imports ``pynvml``.
"""

from .errors import ERROR_KINDS, DeviceLost, DriverGone, ErrorKind
from .model import (
    NA,
    DeviceRef,
    DriverState,
    GpuSample,
    GpuState,
    NaType,
    is_na,
    or_none,
)
from .nvml import DriverInfo, Nvml
from .probe import capabilities, capabilities_from, probe_capabilities
from .simulate import simulated_nvml
from .slots import GpuSlotSpec, cuda_env, fits, gpu_slot_specs, slot_ids_on
from .telemetry import GpuView, JobGpuStats, Sampler, TelemetrySnapshot

__all__ = [
    "ERROR_KINDS", "NA", "DeviceLost", "DeviceRef", "DriverGone", "DriverInfo", "DriverState",
    "ErrorKind", "GpuSample", "GpuSlotSpec", "GpuState", "GpuView", "JobGpuStats", "NaType",
    "Nvml", "Sampler", "TelemetrySnapshot", "capabilities", "capabilities_from", "cuda_env",
    "fits", "gpu_slot_specs", "is_na", "or_none", "probe_capabilities", "simulated_nvml",
    "slot_ids_on",
]
