"""Slots and queue: each slot's state, claims in flight, poll cadence, outbox length.

The panel fits the height it is given (the GPU panel's, beside it): a line per slot
when they fit, else two slots a line (label, glyph, job), else one glyph per slot
(● running, ○ idle, ◐ draining, ‖ paused, ✗ lost) under their counts, the lost ones
named.

Each slot has its own label, the engine's slot id: ``cpu:0``, ``gpu:1/0`` and
``gpu:1/1`` for two slots of GPU 1 (MIG: ``gpu:0:1``). A slot named by its GPU's uuid
is shown as ``gpu:<index>``, or ``gpu:<index>/<n>`` when that GPU has several slots.
"""

from __future__ import annotations

from textual.content import Content

from aitbc_miner.engine.snapshot import GpuStatus, SlotState, SlotView, Snapshot

from .. import fmt
from .steady import SteadyStatic

GLYPHS = {
    SlotState.RUNNING: ("●", "$success"),
    SlotState.DRAINING: ("◐", "$warning"),
    SlotState.IDLE: ("○", "$foreground-muted"),
    SlotState.PAUSED: ("‖", "$warning"),
    SlotState.LOST: ("✗", "bold $error"),
}
MAX_LISTED = 8  # more slots than this: one glyph per slot
PAIR_W = 19  # one slot of the two-a-line form: "gpu:0/0 ● f1de6cb5"


def slot_label(slot_id: str, gpu: GpuStatus) -> str:
    """A slot's label, the same in every panel, and never the same for two slots."""
    if len(slot_id) <= 10:
        return slot_id
    for view in gpu.gpus:
        if slot_id in view.slot_ids:
            if len(view.slot_ids) == 1:
                return f"gpu:{view.index}"
            return f"gpu:{view.index}/{view.slot_ids.index(slot_id)}"
    return slot_id[:9] + "…"


def slot_line(slot: SlotView, snap: Snapshot, now: float, label_w: int) -> Content:
    glyph, style = GLYPHS.get(slot.state, ("?", ""))
    label = slot_label(slot.slot_id, snap.gpu)
    parts: list[tuple[str, str]] = [(f"{label:<{label_w}} ", "bold"), (f"{glyph} ", style)]
    job = snap.job(slot.job_id) if slot.job_id else None
    if slot.state is SlotState.LOST:
        parts.append(("LOST: takes no work", style))
    elif slot.job_id:
        word = "draining" if slot.state is SlotState.DRAINING else "running"
        started = job.started_at if job and job.started_at else (job.claimed_at if job else None)
        elapsed = fmt.duration(now - started) if started else ""
        parts += [(f"{word} ", style), (fmt.short_id(slot.job_id), "bold"),
                  (f" {job.job_type}" if job else "", ""), (f"  {elapsed}", "")]
    elif slot.state is SlotState.PAUSED:
        word = fmt.paused_word(snap.mode)
        parts.append((f"{word}: no claim will start" if word == "paused" else word, style))
    else:
        parts.append(("idle", style))
    return Content.assemble(*parts)


def slot_grid(snap: Snapshot, width: int) -> list[Content]:
    counts: dict[SlotState, int] = {}
    for slot in snap.slots:
        counts[slot.state] = counts.get(slot.state, 0) + 1
    legend: list[tuple[str, str]] = []
    for state, (glyph, style) in GLYPHS.items():
        if counts.get(state):
            if legend:
                legend.append(("  ", ""))
            word = fmt.paused_word(snap.mode) if state is SlotState.PAUSED else state.value
            legend.append((f"{glyph} {counts[state]} {word}", style))
    lines = [Content.assemble(*legend)]
    row: list[tuple[str, str]] = []
    per_row = max(8, width)
    for i, slot in enumerate(snap.slots):
        glyph, style = GLYPHS.get(slot.state, ("?", ""))
        row.append((glyph, style))
        if (i + 1) % per_row == 0:
            lines.append(Content.assemble(*row))
            row = []
    if row:
        lines.append(Content.assemble(*row))
    lost = [slot_label(s.slot_id, snap.gpu) for s in snap.slots if s.state is SlotState.LOST]
    if lost:
        lines.append(Content.assemble(("LOST: ", "bold $error"), (", ".join(lost), "$error")))
    return lines


def queue_lines(snap: Snapshot) -> list[Content]:
    queued = sum(1 for j in snap.jobs if j.slot_id is None)
    flight = f"{snap.polls_in_flight} in flight"  # claims, said as the header says it
    parts = [(f"outbox {snap.outbox}", "bold $warning" if snap.outbox else ""),
             (" · ", "$foreground-muted"), (f"poll {snap.poll_interval_s:.2f} s", ""),
             (" · ", "$foreground-muted"), (flight, "")]
    lines = [Content.assemble(*parts)]
    if queued:
        lines.append(Content.styled(f"{queued} job(s) waiting for a slot", "$warning"))
    for loop in snap.loops:
        if loop.last_error and loop.activity.startswith("backing off"):
            lines.append(Content.assemble((f"{loop.name}: {loop.activity}", "$warning")))
    return lines


def slot_pair(slot: SlotView, snap: Snapshot, label_w: int) -> Content:
    """One slot in the two-a-line form: label, glyph, and its job (or its state)."""
    glyph, style = GLYPHS.get(slot.state, ("?", ""))
    label = slot_label(slot.slot_id, snap.gpu)
    what = (fmt.short_id(slot.job_id) if slot.job_id else
            "LOST" if slot.state is SlotState.LOST else
            fmt.paused_word(snap.mode) if slot.state is SlotState.PAUSED else slot.state.value)
    return Content.assemble((f"{label:<{label_w}} ", "bold"), (f"{glyph} ", style),
                            (f"{what:<8}", "bold" if slot.job_id else style))


def slot_pairs(snap: Snapshot, label_w: int) -> list[Content]:
    cells = [slot_pair(s, snap, label_w) for s in snap.slots]
    return [Content("  ").join(cells[i:i + 2]) for i in range(0, len(cells), 2)]


class SlotsPanel(SteadyStatic):
    """Where jobs run, and how the queue moves."""

    DEFAULT_CSS = """
    SlotsPanel {
        height: auto; border: round $primary 40%; border-title-color: $primary;
        padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(markup=False, **kwargs)  # type: ignore[arg-type]
        self._shown: tuple[object, ...] | None = None  # text and spans (Content == is text only)
        self.max_lines: int | None = None  # the height to fit (None: a line per slot)
        self.form = "list"  # "list", "pairs" or "grid" (tests read it)
        self._now = 0.0
        self._snap: Snapshot | None = None

    def fit(self, snap: Snapshot, lines: int) -> int:
        """Fit into ``lines`` lines (redrawing if the form changes); returns the lines used."""
        if lines != self.max_lines:
            self.max_lines = lines
            self.show(snap, self._now or snap.at)
        return len(self._lines(snap))

    def _lines(self, snap: Snapshot) -> list[Content]:
        width = max(20, self.size.width)  # the content area (inside border and padding)
        queue = queue_lines(snap)
        if not snap.slots:
            self.form = "list"
            return [Content.styled("no slots configured", "bold $error"), *queue]
        label_w = max(len(slot_label(s.slot_id, snap.gpu)) for s in snap.slots)
        room = self.max_lines
        listed = len(snap.slots) <= MAX_LISTED
        if listed and (room is None or len(snap.slots) <= room):  # the queue is in the header too
            self.form = "list"
            keep = queue if room is None else queue[: room - len(snap.slots)]
            return [slot_line(s, snap, self._now, label_w) for s in snap.slots] + keep
        pairs = (len(snap.slots) + 1) // 2
        if width >= 2 * (label_w + 11) + 2 and (room is None or pairs + 1 <= room):
            self.form = "pairs"
            keep = queue[: max(1, (room or pairs + len(queue)) - pairs)]
            return slot_pairs(snap, label_w) + keep
        self.form = "grid"
        grid = slot_grid(snap, width)
        return grid + queue[: max(1, (room or len(grid) + len(queue)) - len(grid))]

    def on_resize(self) -> None:
        if self._snap is not None:  # the form depends on the width: draw it again
            self.show(self._snap, self._now)

    def show(self, snap: Snapshot, now: float) -> None:
        self._snap, self._now = snap, now
        lines = self._lines(snap)
        busy = sum(1 for s in snap.slots if s.job_id)
        self.border_title = f"Slots ({busy}/{len(snap.slots)} busy)"
        content = Content("\n").join(lines)
        if (content.plain, content.spans) != self._shown:
            self._shown = (content.plain, content.spans)
            self.show_content(content)
