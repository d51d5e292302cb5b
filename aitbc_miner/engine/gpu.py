"""The engine's side of GPU telemetry: the console's ``GpuStatus``, and a lost GPU's effects."""

from __future__ import annotations

from collections.abc import Iterable

from ..gpu import GpuView as TeleView
from ..gpu import TelemetrySnapshot, or_none
from .slots import Slot
from .snapshot import HOT_C, GpuStatus, GpuView

GIB = 1024.0


def gpu_status(tele: TelemetrySnapshot, slots: Iterable[Slot]) -> GpuStatus:
    """The telemetry snapshot in the console's shape (``None`` for N/A), with a warning
    for every foreign process on a device the miner schedules jobs on."""
    by_uuid: dict[str, list[str]] = {}
    for slot in slots:
        if slot.gpu_uuid is not None:
            by_uuid.setdefault(slot.gpu_uuid, []).append(slot.slot_id)
    gpus = tuple(_view(g, tuple(by_uuid.get(g.uuid, ()))) for g in tele.gpus)
    return GpuStatus(state=tele.state.value.replace("-", "_"), message=tele.detail,
                     simulated=tele.simulated, gpus=gpus, warnings=foreign_warnings(gpus))


def foreign_warnings(gpus: Iterable[GpuView]) -> tuple[str, ...]:
    """``GPU 1: someone else is on it: pid 4242 (bob, python3) holds 3.0 GiB`` for each
    device with slots (a device the miner does not use is nobody's business here)."""
    out = []
    for view in gpus:
        foreign = view.foreign
        if not foreign or not view.slot_ids or view.state == "lost":
            continue
        who = "; ".join(f"{p.describe()} holds "
                        + ("N/A" if p.vram_mib is None else f"{p.vram_mib / GIB:.1f} GiB")
                        for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        out.append(f"GPU {view.index}: someone else is on it: {who}{more}")
    return tuple(out)


def _view(g: TeleView, slot_ids: tuple[str, ...]) -> GpuView:
    s = g.sample
    parent, _, position = s.index.rpartition(":")  # "0" or MIG "0:1"
    temperature = or_none(s.temperature_c)
    return GpuView(
        index=int(position), uuid=s.uuid, name=s.name, state=s.state.value,
        memory_used_mb=or_none(s.memory_used_mib), memory_total_mb=or_none(s.memory_total_mib),
        util_gpu_pct=or_none(s.util_gpu_pct), util_mem_pct=or_none(s.util_mem_pct),
        temperature_c=temperature, power_w=or_none(s.power_w),
        power_limit_w=or_none(s.power_limit_w),
        util_history=tuple(v for v in g.history.util_pct.means if v is not None),
        slot_ids=slot_ids, simulated=s.simulated,
        mig_parent=int(parent) if parent else None, lost_reason=s.reason if s.lost else None,
        history=g.history, energy_wh=round(g.energy_wh, 6), processes=g.processes,
        hot=temperature is not None and temperature >= HOT_C)
