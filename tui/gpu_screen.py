"""The GPU screen (key ``g``): each device at nvitop's level of detail.

Per device: its readings now (utilization, VRAM, temperature, power, energy since the
start); each slot tied to its job, model, tokens/s and the AITBC the device has earned;
utilization, VRAM, temperature and power over the last minutes on one time axis
(``-10m … now``), each cell the **mean** of the readings in its time, a gap where there
was none; and every process on the device with its VRAM, user, command and role, the
ones that are not the miner's marked "someone else". Esc or ``g`` closes it.

All of it is read from the engine's snapshot (``GpuStatus``), so it works the same over
``aitbc-miner attach``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from aitbc_miner.engine.snapshot import (
    GpuProcess,
    GpuView,
    ProcessRole,
    Series,
    SlotState,
    Snapshot,
)

from . import fmt
from .screens import LiveDialog
from .widgets.gpu import (
    GPU_BOX_CSS,
    job_on_slot,
    model_of,
    series_rows,
    slot_label,
    time_axis,
    tokens_per_s,
)

LABEL_W = 19  # "power avg    142 W " before each chart
ROLE_WORDS = {
    ProcessRole.JOB: ("job", "$success"),
    ProcessRole.BACKEND: ("backend", "$primary"),
    ProcessRole.MINER: ("this miner", "$primary"),
    ProcessRole.FOREIGN: ("SOMEONE ELSE", "bold $warning"),
}
MAX_PROCESSES = 6  # per device; more are counted


def _gib(mib: float | None) -> str:
    return "N/A" if mib is None else f"{mib / 1024:.1f} GiB"


def earned_on(view: GpuView, snap: Snapshot) -> str:
    """What this device has earned: the ledger's per-GPU split (``gpu:0`` holds every
    slot of GPU 0; MIG ``gpu:0:1``)."""
    by_gpu = dict(snap.earnings.by_gpu)
    device = f"gpu:{view.index}" if view.mig_parent is None else \
        f"gpu:{view.mig_parent}:{view.index}"
    keys = {s.split("/", 1)[0] for s in view.slot_ids} | {device}
    found = [by_gpu[k] for k in keys if k in by_gpu]
    if not found:
        return "nothing yet on this GPU"
    amount = sum(m.amount for m in found)
    jobs = sum(m.jobs for m in found)
    return f"{fmt.money(amount, snap.earnings.currency)} on this GPU ({fmt.jobs(jobs)})"


def now_line(view: GpuView) -> Content:
    used, total = view.memory_used_mb, view.memory_total_mb
    share = f" ({100 * used / total:.0f} %)" if used is not None and total else ""
    temp_style = "bold $error" if view.hot else ""
    return Content.assemble(
        ("util ", "$foreground-muted"), (fmt.pct(view.util_gpu_pct), "bold"),
        ("   VRAM ", "$foreground-muted"), (fmt.vram(used, total) + share, "bold"),
        ("   ", ""), (fmt.celsius(view.temperature_c) + (" HOT" if view.hot else ""),
                      temp_style or "bold"),
        ("   ", ""), (fmt.watts(view.power_w, view.power_limit_w), "bold"),
        ("   energy ", "$foreground-muted"), (f"{view.energy_wh / 1000:.3f} kWh", ""),
        (" since start", "$foreground-muted"))


def slot_lines(view: GpuView, snap: Snapshot, now: float) -> list[Content]:
    """Each slot of the device: its job, model, tokens/s and time running."""
    by_slot = {s.slot_id: s for s in snap.slots}
    lines = []
    for slot_id in view.slot_ids:
        label = slot_label(slot_id, snap.gpu)
        slot = by_slot.get(slot_id)
        job = job_on_slot(slot_id, snap)
        if job is not None:
            started = job.started_at or job.claimed_at
            rate, model = tokens_per_s(job), model_of(job)
            lines.append(Content.assemble(
                (f"{label:<9} ● ", "$success"), (fmt.short_id(job.job_id), "bold"),
                (f"  {job.job_type}", ""), (f"  {model}" if model else "", "bold"),
                (f"  {rate:.1f} tok/s" if rate is not None else "", "$accent"),
                (f"  {fmt.progress(job.progress)}" if rate is None and job.progress else "",
                 ""),
                (f"  {fmt.duration(now - started)}", "$foreground-muted")))
        elif slot is not None and slot.state is SlotState.LOST:
            lines.append(Content.styled(f"{label:<9} ✗ slot lost", "$error"))
        else:
            word = slot.state.value if slot is not None else "no slot"
            lines.append(Content.styled(f"{label:<9} ○ {word}", "$foreground-muted"))
    if not view.slot_ids:
        lines.append(Content.styled("no slot: the miner runs no job here", "$foreground-muted"))
    return lines


def chart_width(buckets: int, room: int) -> int:
    """As many cells as fit, each the same whole number of buckets (so each cell spans
    the same time): 120 buckets in 97 cells' room -> 60 cells of 2 buckets."""
    if buckets <= 0:
        return max(0, room)
    per_cell = -(-buckets // max(1, room))  # ceil
    return -(-buckets // per_cell)


def chart_lines(view: GpuView, width: int) -> list[Content]:
    """Four one-line charts of bucket means on one time axis, with each metric's mean
    over the whole window."""
    h = view.history
    chart_w = chart_width(len(h.util_pct.means), max(10, width - LABEL_W))
    total = view.memory_total_mb or max((m or 0 for m in h.vram_mib.means), default=0) or 1
    limit = view.power_limit_w or max((p or 0 for p in h.power_w.means), default=0) or 1
    charts: list[tuple[str, str, Series, float, float, str, int]] = [
        ("util", fmt.pct(h.util_pct.mean()), h.util_pct, 100.0, 0.0, "$accent", 2),
        ("VRAM", _gib(h.vram_mib.mean()), h.vram_mib, total, 0.0, "$primary", 1),
        ("temp", fmt.celsius(h.temperature_c.mean()), h.temperature_c, 100.0, 20.0, "$warning",
         1),
        ("power", "N/A" if h.power_w.mean() is None else f"{h.power_w.mean():.0f} W",
         h.power_w, limit, 0.0, "$error", 1),
    ]
    lines = []
    for name, mean, series, top, bottom, style, height in charts:
        rows = series_rows(series.resample(chart_w), chart_w, top, bottom, height)
        for k, cells in enumerate(rows):
            label = [(" " * LABEL_W, "")] if k < height - 1 else [
                (f"{name:<5} ", "bold"), ("avg ", "$foreground-muted"), (f"{mean:>8} ", "")]
            lines.append(Content.assemble(*label, (cells, style)))
    axis = time_axis(h.span_s, chart_w) if h.util_pct.means else "no readings yet"
    per_cell = fmt.duration(h.span_s / chart_w if chart_w else 0)
    note = "  each cell a mean; blank: none"
    lines.append(Content.assemble((f"{per_cell + ' a cell':<{LABEL_W}}", "$foreground-muted"),
                                  (axis, "$foreground-muted"),
                                  (note if width - LABEL_W - chart_w >= len(note) else "",
                                   "$foreground-muted")))
    return lines


def process_lines(view: GpuView, snap: Snapshot) -> list[Content]:
    """The device's processes, largest VRAM first, someone else's marked."""
    if not view.processes:
        return [Content.styled("no process on this device", "$foreground-muted")]
    lines = [Content.styled(f"{'PID':>8}  {'USER':<12} {'COMMAND':<18} {'TYPE':<4} "
                            f"{'VRAM':>9} {'SM':>5}  WHO", "bold")]
    for proc in view.processes[:MAX_PROCESSES]:
        lines.append(_process_line(proc, view, snap))
    if len(view.processes) > MAX_PROCESSES:
        lines.append(Content.styled(f"… and {len(view.processes) - MAX_PROCESSES} more",
                                    "$foreground-muted"))
    return lines


def _process_line(proc: GpuProcess, view: GpuView, snap: Snapshot) -> Content:
    word, style = ROLE_WORDS[proc.role]
    who = word
    if proc.role is ProcessRole.JOB and proc.job_id:
        job = snap.job(proc.job_id)
        model = model_of(job) if job else None
        who = f"job {fmt.short_id(proc.job_id)}" + (f" {model}" if model else "")
    elif proc.role is ProcessRole.BACKEND:
        served = [j for s in view.slot_ids if (j := job_on_slot(s, snap)) is not None]
        who = "backend" + (f" serving {', '.join(fmt.short_id(j.job_id) for j in served)}"
                           if served else " (model loaded)")
    elif proc.role is ProcessRole.FOREIGN:
        who = f"SOMEONE ELSE on GPU {view.index}"
    user = (proc.user or "?")[:12]
    command = (proc.command or "?")[:18]
    sm = "-" if proc.sm_pct is None else f"{proc.sm_pct} %"
    return Content.assemble(
        (f"{proc.pid:>8}  {user:<12} {command:<18} {proc.kind:<4} ", ""),
        (f"{_gib(proc.vram_mib):>9}", "bold"), (f" {sm:>5}  ", ""), (who, style))


class GpuCard(Static):
    """One device on the GPU screen."""

    DEFAULT_CSS = GPU_BOX_CSS.format(name="GpuCard") + """
    GpuCard.-lost { border: round $error; border-title-color: $error; }
    GpuCard.-foreign { border: round $warning; }
    """

    def __init__(self, index: str) -> None:
        super().__init__(markup=False)
        self.gpu_key = index
        self._shown: tuple[GpuView, Snapshot, float] | None = None

    def on_resize(self) -> None:
        if self._shown is not None:
            self.show(*self._shown)  # the charts take the new width

    def show(self, view: GpuView, snap: Snapshot, now: float) -> None:
        self._shown = (view, snap, now)
        title = f"GPU {view.index} · {view.name.removeprefix('SIMULATED ')}"
        if view.simulated:
            title += " · SIMULATED"
        self.border_title = title
        self.border_subtitle = view.uuid
        self.set_class(view.simulated, "-simulated")
        self.set_class(view.state == "lost", "-lost")
        self.set_class(bool(view.foreign) and bool(view.slot_ids), "-foreign")
        width = max(40, self.size.width - 4)
        if view.state == "lost":
            reason = f" ({view.lost_reason})" if view.lost_reason else ""
            lines = [Content.styled(f"✗ GPU LOST{reason}: it takes no work; the other "
                                    "devices go on", "bold $error")]
        else:
            lines = [now_line(view)]
            lines.append(Content.assemble(("earned    ", "$foreground-muted"),
                                          (earned_on(view, snap), "bold $success")))
            lines += slot_lines(view, snap, now)
            lines += chart_lines(view, width)
        lines += process_lines(view, snap)
        self.update(Content("\n").join(lines))


class GpuScreen(LiveDialog, ModalScreen[None]):
    """Every GPU in detail; follows each new snapshot while open."""

    DEFAULT_CSS = """
    GpuScreen { background: $background; }
    GpuScreen > Vertical { width: 100%; height: 100%; }
    GpuScreen #gpu-title { height: 1; padding: 0 1; text-style: bold; }
    GpuScreen #gpu-warnings { height: auto; padding: 0 1; color: $warning; }
    GpuScreen #gpu-hint { height: 1; padding: 0 1; color: $foreground-muted; }
    GpuScreen VerticalScroll { height: 1fr; }
    """
    BINDINGS = [Binding("escape,g,q", "dismiss", "Close")]

    def __init__(self, snap: Snapshot | None, now: float) -> None:
        super().__init__()
        self.snap = snap
        self.now = now
        self._composed = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(markup=False, id="gpu-title")
            yield Static(markup=False, id="gpu-warnings")
            yield VerticalScroll(id="gpu-cards")
            yield Static("↑↓ scroll · Esc or g back to the dashboard", markup=False,
                         id="gpu-hint")

    def on_mount(self) -> None:
        self._composed = True
        if self.snap is not None:
            self.follow(self.snap, self.now)

    def follow(self, snap: Snapshot, now: float | None = None) -> None:
        """Show ``snap`` (the console calls this with each new snapshot)."""
        self.snap = snap
        clock = getattr(self.app, "clock", None) if self.is_attached else None
        self.now = now if now is not None else clock() if callable(clock) else snap.at
        if not self._composed:
            return
        status = snap.gpu
        title = f"GPUs · {len(status.gpus)}"
        if status.simulated or any(g.simulated for g in status.gpus):
            title += " · SIMULATED: no real GPU is used"
        lost = sum(1 for g in status.gpus if g.state == "lost")
        if lost:
            title += f" · {lost} LOST"
        self.query_one("#gpu-title", Static).update(title)
        self.query_one("#gpu-warnings", Static).update("\n".join(f"⚠ {w}" for w in
                                                                status.warnings))
        cards = self.query_one("#gpu-cards", VerticalScroll)
        have = {c.gpu_key: c for c in cards.query(GpuCard)}
        wanted = [str(g.index) if g.mig_parent is None else f"{g.mig_parent}:{g.index}"
                  for g in status.gpus]
        if list(have) != wanted:
            cards.remove_children()
            have = {key: GpuCard(key) for key in wanted}
            cards.mount_all(have.values())
        if not status.gpus:
            cards.remove_children()
            cards.mount(Static(status.message or "no GPU: CPU slots only", markup=False))
            return
        for key, view in zip(wanted, status.gpus, strict=True):
            have[key].show(view, snap, self.now)
