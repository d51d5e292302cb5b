"""How NVML errors map to what they mean for us: a missing field, a lost device, no driver.

One table (:data:`ERROR_KINDS`) covers every ``NVML_ERROR_*`` code of nvidia-ml-py; a test
fails when the installed pynvml has a code without a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class ErrorKind(StrEnum):
    """What an NVML error means for us."""

    FIELD = "field"  # this one reading is unavailable: NA
    LOST = "lost"  # the device is gone: mark it lost, stop asking it
    DRIVER = "driver"  # NVML as a whole is unusable (no driver, library mismatch)


# Every NVML_ERROR_* of nvidia-ml-py, by name; tests fail when the installed pynvml has
# a code without a row. Codes unknown to this table count as FIELD (the safe default).
ERROR_KINDS: Mapping[str, ErrorKind] = MappingProxyType({
    "NVML_ERROR_UNINITIALIZED": ErrorKind.DRIVER,  # NVML was shut down under us
    "NVML_ERROR_INVALID_ARGUMENT": ErrorKind.FIELD,
    "NVML_ERROR_NOT_SUPPORTED": ErrorKind.FIELD,  # e.g. utilization on a MIG instance
    "NVML_ERROR_NO_PERMISSION": ErrorKind.FIELD,
    "NVML_ERROR_ALREADY_INITIALIZED": ErrorKind.FIELD,
    "NVML_ERROR_NOT_FOUND": ErrorKind.FIELD,  # e.g. an empty MIG position
    "NVML_ERROR_INSUFFICIENT_SIZE": ErrorKind.FIELD,
    "NVML_ERROR_INSUFFICIENT_POWER": ErrorKind.LOST,  # power cable out: the card is unusable
    "NVML_ERROR_DRIVER_NOT_LOADED": ErrorKind.DRIVER,
    "NVML_ERROR_TIMEOUT": ErrorKind.FIELD,
    "NVML_ERROR_IRQ_ISSUE": ErrorKind.LOST,
    "NVML_ERROR_LIBRARY_NOT_FOUND": ErrorKind.DRIVER,
    "NVML_ERROR_FUNCTION_NOT_FOUND": ErrorKind.FIELD,  # older driver than this pynvml
    "NVML_ERROR_CORRUPTED_INFOROM": ErrorKind.FIELD,
    "NVML_ERROR_GPU_IS_LOST": ErrorKind.LOST,
    "NVML_ERROR_RESET_REQUIRED": ErrorKind.LOST,
    "NVML_ERROR_OPERATING_SYSTEM": ErrorKind.FIELD,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": ErrorKind.DRIVER,  # driver upgraded, no reboot
    "NVML_ERROR_IN_USE": ErrorKind.FIELD,
    "NVML_ERROR_MEMORY": ErrorKind.FIELD,
    "NVML_ERROR_NO_DATA": ErrorKind.FIELD,
    "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED": ErrorKind.FIELD,
    "NVML_ERROR_INSUFFICIENT_RESOURCES": ErrorKind.FIELD,
    "NVML_ERROR_FREQ_NOT_SUPPORTED": ErrorKind.FIELD,
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH": ErrorKind.FIELD,
    "NVML_ERROR_DEPRECATED": ErrorKind.FIELD,
    "NVML_ERROR_NOT_READY": ErrorKind.FIELD,
    "NVML_ERROR_GPU_NOT_FOUND": ErrorKind.LOST,
    "NVML_ERROR_INVALID_STATE": ErrorKind.FIELD,
    "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED": ErrorKind.FIELD,
    "NVML_ERROR_UNKNOWN": ErrorKind.LOST,  # what a GPU that fell off the bus often says
})

# Hints for DRIVER errors at start, in the operator's words.
DRIVER_HINTS: Mapping[str, str] = MappingProxyType({
    "NVML_ERROR_LIBRARY_NOT_FOUND": "libnvidia-ml.so.1 is not installed",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH":
        "NVML and the kernel driver differ (reboot after a driver upgrade?)",
})


class DeviceLost(Exception):
    """A device answered GPU_IS_LOST (or another error that means it is gone)."""


class DriverGone(Exception):
    """NVML as a whole stopped answering (driver unloaded, shut down, library mismatch)."""
