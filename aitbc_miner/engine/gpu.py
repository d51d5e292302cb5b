"""The engine's side of GPU telemetry: the console's ``GpuStatus``, and a lost GPU's effects."""

from __future__ import annotations

from collections.abc import Iterable

from ..gpu import NA, TelemetrySnapshot, or_none
from ..gpu import GpuView as TeleView
from .slots import Slot
from .snapshot import GpuStatus, GpuView


def gpu_status(tele: TelemetrySnapshot, slots: Iterable[Slot]) -> GpuStatus:
    """The telemetry snapshot in the console's shape (``None`` for N/A)."""
    by_uuid: dict[str, list[str]] = {}
    for slot in slots:
        if slot.gpu_uuid is not None:
            by_uuid.setdefault(slot.gpu_uuid, []).append(slot.slot_id)
    return GpuStatus(state=tele.state.value.replace("-", "_"), message=tele.detail,
                     simulated=tele.simulated,
                     gpus=tuple(_view(g, tuple(by_uuid.get(g.uuid, ()))) for g in tele.gpus))


def _view(g: TeleView, slot_ids: tuple[str, ...]) -> GpuView:
    s = g.sample
    parent, _, position = s.index.rpartition(":")  # "0" or MIG "0:1"
    return GpuView(
        index=int(position), uuid=s.uuid, name=s.name, state=s.state.value,
        memory_used_mb=or_none(s.memory_used_mib), memory_total_mb=or_none(s.memory_total_mib),
        util_gpu_pct=or_none(s.util_gpu_pct), util_mem_pct=or_none(s.util_mem_pct),
        temperature_c=or_none(s.temperature_c), power_w=or_none(s.power_w),
        power_limit_w=or_none(s.power_limit_w),
        util_history=tuple(float(v) for v in g.util_history if v is not NA),  # type: ignore[arg-type]
        slot_ids=slot_ids, simulated=s.simulated,
        mig_parent=int(parent) if parent else None, lost_reason=s.reason)
