"""GPU slots from telemetry, and whether a job's constraints admit it onto one.

One slot per device by default (``slots_per_gpu`` more on a large GPU). Slot ids are
``gpu:<index>`` (``gpu:0``, MIG instance ``gpu:0:1``) and, with several slots per device,
``gpu:<index>/<k>``. A GPU in MIG mode gets no slot itself: its instances do. A GPU job
sees only its device: :func:`cuda_env` gives ``CUDA_VISIBLE_DEVICES=<uuid>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import NA, GpuSample, MaybeInt
from .telemetry import GpuView, TelemetrySnapshot

GIB_IN_MIB = 1024  # min_vram_gb is compared as the coordinator does: GB * 1024 <= memory_mb


@dataclass(frozen=True, slots=True)
class GpuSlotSpec:
    """What the slot pool needs to make one GPU slot."""

    slot_id: str
    gpu_index: str
    gpu_uuid: str
    gpu_name: str
    memory_mib: MaybeInt
    lost: bool = False
    simulated: bool = False

    @property
    def env(self) -> dict[str, str]:
        return cuda_env(self.gpu_uuid)


def cuda_env(gpu_uuid: str) -> dict[str, str]:
    """The environment that makes a job see only its own device (GPU or MIG instance)."""
    return {"CUDA_VISIBLE_DEVICES": gpu_uuid}


def gpu_slot_specs(gpus: TelemetrySnapshot | Iterable[GpuView | GpuSample],
                   slots_per_gpu: int = 1) -> tuple[GpuSlotSpec, ...]:
    """Slot specs for every schedulable device (lost ones come back marked ``lost``)."""
    if slots_per_gpu < 1:
        raise ValueError("slots_per_gpu must be at least 1")
    items = gpus.gpus if isinstance(gpus, TelemetrySnapshot) else gpus
    specs = []
    for item in items:
        sample = item.sample if isinstance(item, GpuView) else item
        if not sample.schedulable:
            continue
        for k in range(slots_per_gpu):
            slot_id = f"gpu:{sample.index}" + (f"/{k}" if slots_per_gpu > 1 else "")
            specs.append(GpuSlotSpec(slot_id, sample.index, sample.uuid, sample.name,
                                     sample.memory_total_mib, sample.lost, sample.simulated))
    return tuple(specs)


def slot_ids_on(specs: Iterable[GpuSlotSpec], gpu_uuid: str) -> tuple[str, ...]:
    """The slots that run on one device (to mark them lost together)."""
    return tuple(s.slot_id for s in specs if s.gpu_uuid == gpu_uuid)


def fits(constraints: Mapping[str, Any] | None, gpu: GpuSlotSpec) -> tuple[bool, str]:
    """Whether a job with ``constraints`` may run on ``gpu``; the reason when it may not.

    ``gpu``: a name fragment, matched case-insensitively ("a100" fits "NVIDIA A100-SXM4-80GB").
    ``min_vram_gb``: the device's total memory must be at least that many GB (x 1024 MiB).
    Other keys are the coordinator's business and are ignored here.
    """
    c = constraints or {}
    wanted = c.get("gpu")
    if wanted is not None and wanted != "":
        if not isinstance(wanted, str):
            return False, f"constraint gpu={wanted!r} is not a GPU name"
        if wanted.casefold() not in gpu.gpu_name.casefold():
            return False, f"needs a GPU matching {wanted!r}; {gpu.slot_id} is {gpu.gpu_name!r}"
    need = c.get("min_vram_gb")
    if need is not None:
        if (isinstance(need, bool) or not isinstance(need, int | float)
                or not math.isfinite(need) or need < 0):
            return False, f"constraint min_vram_gb={need!r} is not a size in GB"
        if need > 0:
            if gpu.memory_mib is NA:
                return False, (f"needs {need:g} GB of VRAM; the memory of {gpu.slot_id} "
                               f"({gpu.gpu_name}) is unknown")
            have = int(gpu.memory_mib)  # type: ignore[arg-type]
            if have < need * GIB_IN_MIB:
                return False, (f"needs {need:g} GB of VRAM; {gpu.slot_id} ({gpu.gpu_name}) "
                               f"has {have / GIB_IN_MIB:.1f} GB")
    return True, "fits"
