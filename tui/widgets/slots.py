"""Slots and queue: each slot's state, claims in flight, poll cadence, outbox length.

With more slots than fit, the slots are drawn as one glyph each (● running, ○ idle,
◐ draining, ‖ paused, ✗ lost) under their counts, and the lost ones are named.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from aitbc_miner.engine.snapshot import SlotState, SlotView, Snapshot

from .. import fmt
from .gpu import slot_label

GLYPHS = {
    SlotState.RUNNING: ("●", "$success"),
    SlotState.DRAINING: ("◐", "$warning"),
    SlotState.IDLE: ("○", "$foreground-muted"),
    SlotState.PAUSED: ("‖", "$warning"),
    SlotState.LOST: ("✗", "bold $error"),
}
MAX_LISTED = 8  # more slots than this: one glyph per slot


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
    flight = f"{snap.polls_in_flight} claim{'s' if snap.polls_in_flight != 1 else ''} in flight"
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


class SlotsPanel(Static):
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

    def show(self, snap: Snapshot, now: float) -> None:
        width = max(20, self.size.width - 4)
        lines: list[Content] = []
        if not snap.slots:
            lines.append(Content.styled("no slots configured", "bold $error"))
        elif len(snap.slots) <= MAX_LISTED:
            label_w = max(len(slot_label(s.slot_id, snap.gpu)) for s in snap.slots)
            lines += [slot_line(s, snap, now, label_w) for s in snap.slots]
        else:
            lines += slot_grid(snap, width)
        lines += queue_lines(snap)
        busy = sum(1 for s in snap.slots if s.job_id)
        self.border_title = f"Slots ({busy}/{len(snap.slots)} busy)"
        content = Content("\n").join(lines)
        if (content.plain, content.spans) != self._shown:
            self._shown = (content.plain, content.spans)
            self.update(content)
