"""The GPU panel: one block per device (one line each when narrow).

Name, VRAM bar, a utilization sparkline over the sampled history, temperature, power,
and the slot and job on it. "LOST" and "no NVIDIA driver" are said in words; every
simulated device is tagged SIMULATED, and so is the panel's title.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from aitbc_miner.engine.snapshot import GpuStatus, GpuView, SlotState, Snapshot

from .. import fmt

HOT_C = 85.0


def slot_label(slot_id: str, gpu: GpuStatus) -> str:
    """Slot ids are short already (``gpu:0``, ``gpu:0/1``, MIG ``gpu:0:1``); a long one
    (a slot named by a GPU's uuid) becomes ``gpu:<index>`` when the panel knows the
    device, else it is cut."""
    if len(slot_id) <= 10:
        return slot_id
    for view in gpu.gpus:
        if slot_id in view.slot_ids:
            return f"gpu:{view.index}"
    return slot_id[:9] + "…"


def _temp(view: GpuView) -> tuple[str, str]:
    text = fmt.celsius(view.temperature_c)
    if view.temperature_c is not None and view.temperature_c >= HOT_C:
        return f"{text} HOT", "bold $error"
    return text, ""


def _jobs_on(view: GpuView, snap: Snapshot) -> list[tuple[str, str]]:
    by_slot = {s.slot_id: s for s in snap.slots}
    jobs = {j.job_id: j for j in snap.jobs}
    parts: list[tuple[str, str]] = []
    for slot_id in view.slot_ids:
        slot = by_slot.get(slot_id)
        label = f"gpu:{view.index}"
        if parts:
            parts.append((" · ", "$foreground-muted"))
        if slot is None:
            parts.append((f"{label} (no slot)", "$foreground-muted"))
        elif slot.job_id:
            job = jobs.get(slot.job_id)
            kind = f" {job.job_type}" if job else ""
            parts.append((f"{label} ● {fmt.short_id(slot.job_id)}{kind}", "$success"))
        elif slot.state is SlotState.LOST:
            parts.append((f"{label} ✗ slot lost", "$error"))
        else:
            parts.append((f"{label} ○ {slot.state.value}", "$foreground-muted"))
    if not view.slot_ids:
        parts.append(("no slot", "$foreground-muted"))
    return parts


def _vram_parts(view: GpuView, bar_w: int) -> list[tuple[str, str]]:
    frac = None
    if view.memory_used_mb is not None and view.memory_total_mb:
        frac = view.memory_used_mb / view.memory_total_mb
    temp, temp_style = _temp(view)
    return [("VRAM ", ""), (fmt.bar(frac, bar_w), "$primary"),
            (f" {fmt.vram(view.memory_used_mb, view.memory_total_mb)}", ""),
            ("  ", ""), (temp, temp_style),
            (f"  {fmt.watts(view.power_w, view.power_limit_w)}", "")]


def gpu_block(view: GpuView, snap: Snapshot, spark_w: int, tall: bool) -> list[Content]:
    """Two lines per device, or three (``tall``) when few devices leave the room:
    name (SIMULATED) and its slot/job; VRAM, temperature, power; the util sparkline."""
    name = fmt.short_gpu_name(view.name)
    head: list[tuple[str, str]] = [(f"{view.index} ", "bold"), (name, "bold")]
    if view.simulated:
        head.append(("  SIMULATED", "bold $accent"))
    if view.state == "lost":
        reason = f" ({view.lost_reason})" if view.lost_reason else ""
        lines = [Content.assemble(*head, ("  ✗ LOST", "bold $error"), (reason, "$error")),
                 Content.styled("  takes no work; the other devices go on", "$foreground-muted")]
        return lines + ([Content("")] if tall else [])
    jobs = _jobs_on(view, snap)
    util = [("util ", ""), (fmt.sparkline(view.util_history, spark_w), "$accent"),
            (f" {fmt.pct(view.util_gpu_pct):>5}", "bold")]
    if tall:
        return [Content.assemble(*head, ("   ", ""), *jobs),
                Content.assemble(("  ", ""), *_vram_parts(view, 10)),
                Content.assemble(("  ", ""), *util)]
    return [Content.assemble(*head, ("  ", ""), *_vram_parts(view, 8)),
            Content.assemble(("  ", ""), *util, ("  ", ""), *jobs)]


def spark_width(status: GpuStatus, snap: Snapshot, width: int, tall: bool) -> int:
    """One sparkline width for every device, so the blocks line up."""
    if tall:
        return max(8, min(60, width - 2 - 5 - 6))
    jobs = max((sum(len(t) for t, _ in _jobs_on(g, snap)) for g in status.gpus), default=0)
    return max(8, min(48, width - 2 - 5 - 6 - 2 - jobs))


def gpu_line(view: GpuView, snap: Snapshot) -> Content:
    """The narrow form: ``0 RTX 4060 Ti 11.2/16.0 GiB 87 % 68 °C 142 W gpu:0 ● 3f2a9c01``."""
    name = fmt.short_gpu_name(view.name)
    parts: list[tuple[str, str]] = [(f"GPU{view.index} ", "bold"), (name, "bold")]
    if view.simulated:
        parts.append((" SIM", "bold $accent"))
    if view.state == "lost":
        reason = f" ({view.lost_reason})" if view.lost_reason else ""
        return Content.assemble(*parts, (" ✗ LOST", "bold $error"), (reason, "$error"))
    temp, temp_style = _temp(view)
    power = "" if view.power_w is None else f" {view.power_w:.0f} W"
    parts += [(f" {fmt.vram(view.memory_used_mb, view.memory_total_mb)} ", ""),
              (fmt.pct(view.util_gpu_pct), "bold"), (" ", ""), (temp, temp_style), (power, ""),
              (" ", ""), *_jobs_on(view, snap)]
    return Content.assemble(*parts)


def no_gpu_line(status: GpuStatus) -> Content:
    if status.state == "no_driver":
        return Content.assemble(("no NVIDIA driver found", "bold $warning"),
                                (f": CPU slots only{_more(status.message)}", ""))
    if status.state == "ok":
        return Content.styled("no devices reported yet", "$foreground-muted")
    return Content.assemble(("no visible devices", "bold"),
                            (f": CPU slots only{_more(status.message)}", ""))


def _more(message: str) -> str:
    generic = {"", "no NVIDIA driver found", "no visible devices"}
    return "" if message in generic else f" ({message})"


class GpuPanel(Static):
    """One block per GPU (or MIG instance)."""

    DEFAULT_CSS = """
    GpuPanel {
        height: auto; border: round $primary 40%; border-title-color: $primary;
        padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    GpuPanel.-simulated { border-title-color: $accent; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(markup=False, **kwargs)  # type: ignore[arg-type]
        self._shown: tuple[object, ...] | None = None

    def show(self, snap: Snapshot, compact: bool) -> None:
        status = snap.gpu
        width = max(30, self.size.width - 4)
        key = (status, snap.slots, tuple((j.job_id, j.job_type) for j in snap.jobs), compact, width)
        if key == self._shown:
            return
        self._shown = key
        simulated = status.simulated or any(g.simulated for g in status.gpus)
        lost = sum(1 for g in status.gpus if g.state == "lost")
        title = f"GPUs ({len(status.gpus)})" if status.gpus else "GPUs"
        if lost:
            title += f" · {lost} LOST"
        if simulated:
            title += " · SIMULATED"
        self.border_title = title
        self.set_class(simulated, "-simulated")
        lines: list[Content] = []
        if not status.gpus:
            lines.append(no_gpu_line(status))
        elif compact:
            lines += [gpu_line(g, snap) for g in status.gpus]
        else:
            tall = len(status.gpus) <= 2
            spark_w = spark_width(status, snap, width, tall)
            for g in status.gpus:
                lines += gpu_block(g, snap, spark_w, tall)
        self.update(Content("\n").join(lines))
