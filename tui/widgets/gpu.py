"""The GPU panel: one compact block per device (one line each when narrow); ``g`` opens
the full GPU screen (``tui/gpu_screen.py``).

Name, VRAM bar, utilization over the last minutes (each cell the **mean** of its time,
never its peak), temperature, power, and each slot with its job, model and tokens/s.
"LOST", "HOT", "no NVIDIA driver" and someone else's process on a device are said in
words; every simulated device is tagged SIMULATED, and so is the panel's title.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content

from aitbc_miner.engine.snapshot import GpuStatus, GpuView, RunningJob, SlotState, Snapshot

from .. import fmt
from .slots import slot_label
from .steady import SteadyStatic

__all__ = ["GPU_BOX_CSS", "GpuPanel", "job_on_slot", "model_of", "series_cells", "series_rows",
           "slot_label", "time_axis", "tokens_per_s"]

GAP = " "  # a time with no reading


BLOCKS = " ▁▂▃▄▅▆▇█"  # eighths of a cell


def series_rows(values: Sequence[float | None], width: int, top: float, bottom: float = 0.0,
                rows: int = 1) -> list[str]:
    """A chart ``rows`` cells tall (top row first), one column per value, oldest left,
    padded left to ``width``. A reading is at least the lowest block; a gap (no reading
    then) is blank, never drawn as a zero."""
    if width <= 0:
        return [""] * rows
    values = list(values)[-width:]
    span, levels = top - bottom, 8 * rows
    columns: list[int | None] = []
    for value in values:
        if value is None:
            columns.append(None)
            continue
        frac = 0.0 if span <= 0 else max(0.0, min(1.0, (value - bottom) / span))
        columns.append(1 + int(frac * (levels - 1) + 0.5))
    pad = GAP * (width - len(columns))
    return [pad + "".join(GAP if level is None else BLOCKS[max(0, min(8, level - 8 * row))]
                          for level in columns)
            for row in range(rows - 1, -1, -1)]


def series_cells(values: Sequence[float | None], width: int, top: float,
                 bottom: float = 0.0) -> str:
    """A one-line sparkline of ``values`` (see :func:`series_rows`)."""
    return series_rows(values, width, top, bottom)[0]


def ago(seconds: float) -> str:
    """``-10m``, ``-2m30s``, ``-45s``: a point on the time axis."""
    s = int(round(seconds))
    if s <= 0:
        return "now"
    m, sec = divmod(s, 60)
    if not m:
        return f"-{sec}s"
    return f"-{m}m" + (f"{sec:02d}s" if sec else "")


def time_axis(span_s: float, width: int, ticks: int = 4) -> str:
    """``-10m       -7m30s      -5m      -2m30s      now`` under a ``width``-cell chart
    that covers the last ``span_s`` seconds."""
    if width <= 0:
        return ""
    line = [" "] * width
    count = max(1, min(ticks, width // 10))
    for k in range(count + 1):
        label = ago(span_s * (1 - k / count))
        pos = round(k * (width - 1) / count)
        start = max(0, min(width - len(label), pos - (len(label) - 1 if k == count else
                                                      0 if k == 0 else len(label) // 2)))
        if all(c == " " for c in line[max(0, start - 1):start + len(label) + 1]):
            line[start:start + len(label)] = label
    return "".join(line)


def job_on_slot(slot_id: str, snap: Snapshot) -> RunningJob | None:
    slot = next((s for s in snap.slots if s.slot_id == slot_id), None)
    return snap.job(slot.job_id) if slot and slot.job_id else None


def model_of(job: RunningJob) -> str | None:
    """The job's model (the engine's field, else what its progress says)."""
    model = job.model or dict(job.progress).get("model")
    return str(model) if model else None


def tokens_per_s(job: RunningJob) -> float | None:
    value = dict(job.progress).get("tokens_per_s")
    return float(value) if isinstance(value, int | float) else None


def _temp(view: GpuView) -> tuple[str, str]:
    text = fmt.celsius(view.temperature_c)
    if view.hot:
        return f"{text} HOT", "bold $error"
    return text, ""


def _jobs_on(view: GpuView, snap: Snapshot, detail: bool) -> list[tuple[str, str]]:
    """Each slot of the device with its job (and, with ``detail``, model and tok/s)."""
    by_slot = {s.slot_id: s for s in snap.slots}
    parts: list[tuple[str, str]] = []
    for slot_id in view.slot_ids:
        slot = by_slot.get(slot_id)
        label = slot_label(slot_id, snap.gpu)
        if parts:
            parts.append((" · ", "$foreground-muted"))
        if slot is None:
            parts.append((f"{label} (no slot)", "$foreground-muted"))
        elif slot.job_id:
            job = snap.job(slot.job_id)
            text = f"{label} ● {fmt.short_id(slot.job_id)}"
            if job is not None and detail:
                rate = tokens_per_s(job)
                text += f" {model_of(job) or job.job_type}" + (f" {rate:.1f} tok/s" if rate else "")
            elif job is not None:
                text += f" {job.job_type}"
            parts.append((text, "$success"))
        elif slot.state is SlotState.LOST:
            parts.append((f"{label} ✗ slot lost", "$error"))
        else:
            parts.append((f"{label} ○ {slot.state.value}", "$foreground-muted"))
    if not view.slot_ids:
        parts.append(("no slot", "$foreground-muted"))
    return parts


def _foreign_parts(view: GpuView) -> list[tuple[str, str]]:
    foreign = view.foreign
    if not foreign:
        return []
    return [(f"  ⚠ {len(foreign)} other process{'es' if len(foreign) > 1 else ''}",
             "bold $warning")]


def _vram_parts(view: GpuView, bar_w: int) -> list[tuple[str, str]]:
    frac = None
    if view.memory_used_mb is not None and view.memory_total_mb:
        frac = view.memory_used_mb / view.memory_total_mb
    temp, temp_style = _temp(view)
    return [("VRAM ", ""), (fmt.bar(frac, bar_w), "$primary"),
            (f" {fmt.vram(view.memory_used_mb, view.memory_total_mb)}", ""),
            ("  ", ""), (temp, temp_style),
            (f"  {fmt.watts(view.power_w, view.power_limit_w)}", "")]


def util_spark(view: GpuView, width: int) -> str:
    """Utilization over the device's history, each cell the mean of its time."""
    return series_cells(view.history.util_pct.resample(width), width, 100.0)


def _lost_lines(view: GpuView, head: list[tuple[str, str]]) -> list[Content]:
    reason = f" ({view.lost_reason})" if view.lost_reason else ""
    return [Content.assemble(*head, ("  ✗ LOST", "bold $error"), (reason, "$error")),
            Content.styled("  takes no work; the other devices go on", "$foreground-muted")]


def gpu_block(view: GpuView, snap: Snapshot, spark_w: int, tall: bool) -> list[Content]:
    """Two lines per device, or three (``tall``) when few devices leave the room:
    name (SIMULATED) and its slots/jobs; VRAM, temperature, power; the util sparkline."""
    name = fmt.short_gpu_name(view.name)
    head: list[tuple[str, str]] = [(f"{view.index} ", "bold"), (name, "bold")]
    if view.simulated:
        head.append(("  SIMULATED", "bold $accent"))
    if view.state == "lost":
        return _lost_lines(view, head) + ([Content("")] if tall else [])
    util = [("util ", ""), (util_spark(view, spark_w), "$accent"),
            (f" {fmt.pct(view.util_gpu_pct):>5}", "bold")]
    if tall:
        return [Content.assemble(*head, ("   ", ""), *_jobs_on(view, snap, True),
                                 *_foreign_parts(view)),
                Content.assemble(("  ", ""), *_vram_parts(view, 10)),
                Content.assemble(("  ", ""), *util)]
    return [Content.assemble(*head, ("  ", ""), *_vram_parts(view, 8), *_foreign_parts(view)),
            Content.assemble(("  ", ""), *util, ("  ", ""), *_jobs_on(view, snap, False))]


def spark_width(status: GpuStatus, snap: Snapshot, width: int, tall: bool) -> int:
    """One sparkline width for every device, so the blocks line up."""
    if tall:
        return max(8, min(60, width - 2 - 5 - 6))
    jobs = max((sum(len(t) for t, _ in _jobs_on(g, snap, False)) for g in status.gpus),
               default=0)
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
              (" ", ""), *_jobs_on(view, snap, False)]
    if view.foreign:
        parts.append((f" ⚠{len(view.foreign)}", "bold $warning"))
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


#: A GPU box (the panel here, each device's card on the GPU screen): ``.format(name=...)``.
GPU_BOX_CSS = """
{name} {{
    height: auto; border: round $primary 40%; border-title-color: $primary;
    padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
}}
{name}.-simulated {{ border-title-color: $accent; }}
"""


class GpuPanel(SteadyStatic):
    """One block per GPU (or MIG instance)."""

    DEFAULT_CSS = GPU_BOX_CSS.format(name="GpuPanel")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(markup=False, **kwargs)  # type: ignore[arg-type]
        self._shown: tuple[object, ...] | None = None

    def show(self, snap: Snapshot, compact: bool) -> None:
        status = snap.gpu
        width = max(30, self.size.width - 4)
        key = (status, snap.slots, tuple((j.job_id, j.job_type, j.model, j.progress)
                                         for j in snap.jobs), compact, width)
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
        self.border_subtitle = "g details" if status.gpus else ""
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
        self.show_content(Content("\n").join(lines))
