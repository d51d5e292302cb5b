"""Running jobs: one row per held job, keyed by job id, updated cell by cell.

Rows are never cleared and re-added, so the cursor (the selected job) survives every
update; a vanished job's row is removed and the cursor put back on the job it was on.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from aitbc_miner.engine.snapshot import RunningJob, Snapshot

from .. import fmt
from ..palette import Palette
from .gpu import slot_label

COLUMNS = (("job", "job", 12), ("type", "type / model", 20), ("slot", "slot", 8),
           ("elapsed", "elapsed", 8), ("progress", "progress", 24), ("state", "state", 16))
NARROW_WIDTHS = {"job": 8, "type": 13, "slot": 7, "elapsed": 7, "progress": 16, "state": 10}


def job_cells(job: RunningJob, snap: Snapshot, now: float, palette: Palette,
              compact: bool = False) -> dict[str, Text]:
    model = getattr(job, "model", None) or dict(job.progress).get("model")
    kind = job.job_type + (f" {model}" if isinstance(model, str) else "")
    since = job.started_at or job.claimed_at
    slot = slot_label(job.slot_id, snap.gpu) if job.slot_id else "-"
    state_style = {"running": palette.ok, "queued": palette.muted,
                   "canceling": palette.warn}.get(job.state, palette.plain)
    state = "waiting for slot" if job.state == "queued" else job.state
    return {
        "job": Text(fmt.short_id(job.job_id, 8 if compact else 12)),
        "type": Text(kind),
        "slot": Text(slot),
        "elapsed": Text(fmt.duration(now - since) if since else "-", justify="right"),
        "progress": Text(fmt.progress(job.progress)),
        "state": Text(state, style=state_style),
    }


class JobsTable(DataTable[Text]):
    """The jobs the miner holds now: running, waiting for a slot, or canceling."""

    DEFAULT_CSS = """
    JobsTable {
        height: 1fr; min-height: 4; border: round $primary 40%; border-title-color: $primary;
    }
    JobsTable:focus { border: round $primary; }
    """

    BINDINGS = [Binding("enter", "open", "Details", key_display="⏎")]

    class Open(Message):
        """Enter on a job: show its details."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._cells: dict[str, dict[str, str]] = {}
        self._palette: Palette | None = None
        self.compact = False

    def on_mount(self) -> None:
        self._add_columns()
        self.border_title = "Running jobs"

    def _add_columns(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=NARROW_WIDTHS[key] if self.compact else width)

    def set_compact(self, compact: bool) -> None:
        """Narrow columns below 110 columns; the rows are rebuilt once, the cursor kept."""
        if compact == self.compact:
            return
        selected = self.selected_job_id
        self.compact = compact
        self.clear(columns=True)
        self._cells.clear()
        self._add_columns()
        self._reselect = selected
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def _restyle(self) -> None:
        self._palette = None
        for cells in self._cells.values():
            cells.clear()  # the next show() rewrites every cell in the new colours

    @property
    def palette(self) -> Palette:
        if self._palette is None:
            self._palette = Palette(self.app)
        return self._palette

    @property
    def selected_job_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - no valid cursor
            return None
        return None if key.value is None else str(key.value)

    def show(self, snap: Snapshot, now: float) -> None:
        selected = self.selected_job_id or getattr(self, "_reselect", None)
        reselect, self._reselect = getattr(self, "_reselect", None), None
        current = {j.job_id: j for j in snap.jobs}
        removed = [key for key in self._cells if key not in current]
        for key in removed:
            self.remove_row(key)
            del self._cells[key]
        palette = self.palette
        for job_id, job in current.items():
            cells = job_cells(job, snap, now, palette, self.compact)
            known = self._cells.get(job_id)
            if known is None:
                if job_id in self.rows:
                    self.remove_row(job_id)
                self.add_row(*(cells[k] for k, _, _ in COLUMNS), key=job_id)
                self._cells[job_id] = {k: v.plain for k, v in cells.items()}
                continue
            for column, text in cells.items():
                if known.get(column) != text.plain:
                    self.update_cell(job_id, column, text)
                    known[column] = text.plain
        if (removed or reselect) and selected in current:
            self.move_cursor(row=self.get_row_index(selected))
        running = sum(1 for j in snap.jobs if j.slot_id)
        queued = len(snap.jobs) - running
        title = f"Running jobs ({running}"
        title += f", {queued} waiting)" if queued else ")"
        self.border_title = title if snap.jobs else "Running jobs (none)"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Open(str(event.row_key.value)))

    def action_open(self) -> None:
        job_id = self.selected_job_id
        if job_id is not None:
            self.post_message(self.Open(job_id))
