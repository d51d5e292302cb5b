"""Running jobs: one row per held job, keyed by job id, updated cell by cell.

Rows are never cleared and re-added, so the cursor (the selected job) survives every
update; a vanished job's row is removed and the cursor put back on the job it was on.

Columns are sized to what they hold: a model name is always whole (``qwen2.5-coder:32b-
instruct``), the state column is as wide as its longest word, and only the progress
column gives way when the table is narrow. ``s`` cycles the sort column (its header
shows ▲ or ▼), ``S`` reverses it, ``/`` searches (job id, type, model, slot, state,
progress); the title says what is shown.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from aitbc_miner.engine.snapshot import RunningJob, Snapshot

from .. import fmt
from ..palette import Palette
from .search import SORT_SEARCH_KEYS, SortAndSearch
from .slots import slot_label

LABELS = {"job": "job", "type": "type", "model": "model", "slot": "slot",
          "elapsed": "elapsed", "progress": "progress", "state": "state"}
FULL = ("job", "type", "model", "slot", "elapsed", "progress", "state")
COMPACT = ("job", "model", "slot", "elapsed", "progress", "state")  # model, else the type
SORTS = ("claimed", "job", "type", "model", "slot", "elapsed", "state")
PROGRESS_MIN = 6
PADDING = 2  # a cell's padding, both sides together


class JobCell(Text):
    """The job column's cell: knows its job, so rows can be put in any order."""

    def __init__(self, text: str, job_id: str) -> None:
        super().__init__(text)
        self.job_id = job_id


def job_model(job: RunningJob) -> str | None:
    model = getattr(job, "model", None) or dict(job.progress).get("model")
    return model if isinstance(model, str) and model else None


def job_cells(job: RunningJob, snap: Snapshot, now: float, palette: Palette,
              compact: bool = False, id_width: int = 12) -> dict[str, Text]:
    model = job_model(job)
    since = job.started_at or job.claimed_at
    slot = slot_label(job.slot_id, snap.gpu) if job.slot_id else "-"
    state_style = {"running": palette.ok, "queued": palette.muted,
                   "canceling": palette.warn}.get(job.state, palette.plain)
    state = job.state
    if state == "queued":
        state = "waiting" if compact else "waiting for slot"
    return {
        "job": JobCell(fmt.short_id(job.job_id, id_width), job.job_id),
        "type": Text(job.job_type),
        "model": Text(model or (job.job_type if compact else "-")),
        "slot": Text(slot),
        "elapsed": Text(fmt.duration(now - since) if since else "-", justify="right"),
        "progress": Text(fmt.progress(job.progress), overflow="ellipsis", no_wrap=True),
        "state": Text(state, style=state_style),
    }


def _natural(text: str) -> tuple[Any, ...]:
    """``cpu:2`` before ``cpu:10``."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text))


class JobsTable(SortAndSearch, DataTable[Text]):
    """The jobs the miner holds now: running, waiting for a slot, or canceling."""

    DEFAULT_CSS = """
    JobsTable {
        height: 1fr; min-height: 4; border: round $primary 40%; border-title-color: $primary;
        scrollbar-size-vertical: 1;
    }
    JobsTable:focus { border: round $primary; }
    """

    BINDINGS = [Binding("enter", "open", "Details", key_display="⏎"), *SORT_SEARCH_KEYS]

    class Open(Message):
        """Enter on a job: show its details."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    search_what = "jobs: id, type, model, slot, state"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._cells: dict[str, dict[str, str]] = {}
        self._palette: Palette | None = None
        self._reselect: str | None = None
        self.compact = False
        self.sort_by = "claimed"  # the engine's order: oldest claim first
        self.reverse = False
        self.search_text = ""
        self.shown: list[str] = []  # job ids in the order shown (tests read it)
        self._latest: tuple[Snapshot, float] | None = None
        self._widths: dict[str, int] = {}
        self._id_width = 12
        # DataTable keys its render caches by an update counter that each ``update_cell``
        # bumps. This table updates cells five times a second, so all but the newest
        # entries are dead. At Textual's sizes (10,000 cells, 1,000 rows and lines) they
        # kept ~40,000 dead objects alive for every full garbage collection to walk
        # (stalls of 0.1 s that keys waited behind). These sizes hold a screenful of rows
        # a few times over; an entry that falls out is freed at once (no cycle to collect).
        for cache, size in ((self._cell_render_cache, 1024), (self._row_render_cache, 128),
                            (self._row_renderable_cache, 128), (self._line_cache, 256)):
            cache.maxsize = size

    @property
    def columns_shown(self) -> tuple[str, ...]:
        return COMPACT if self.compact else FULL

    def on_mount(self) -> None:
        self._add_columns()
        self.border_title = "Running jobs"
        self.border_subtitle = "s sort · / search"
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def _add_columns(self) -> None:
        self._widths = {}
        for key in self.columns_shown:
            label = "type / model" if self.compact and key == "model" else LABELS[key]
            self.add_column(label, key=key, width=len(label))
            self._widths[key] = len(label)

    def set_compact(self, compact: bool) -> None:
        """Fewer columns below 100 columns; the rows are rebuilt once, the cursor kept."""
        if compact == self.compact:
            return
        self._reselect = self.selected_job_id
        self.compact = compact
        self.clear(columns=True)
        self._cells.clear()
        self._add_columns()

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

    # --- what is shown -----------------------------------------------------------------

    def _matches(self, cells: dict[str, Text], job: RunningJob) -> bool:
        if not self.search_text:
            return True
        needle = self.search_text.lower()
        hay = " ".join([job.job_id, job.state] + [cells[k].plain for k in FULL])
        return needle in hay.lower()

    def _sort_key(self, job: RunningJob, index: int, cells: dict[str, Text],
                  now: float) -> tuple[Any, ...]:
        by = self.sort_by
        if by == "claimed":
            return (index,)
        if by == "elapsed":
            since = job.started_at or job.claimed_at
            return (now - since if since else -1.0, index)
        if by == "job":
            return (job.job_id,)
        return (_natural(cells[by].plain), index)

    def show(self, snap: Snapshot, now: float) -> None:
        self._latest = (snap, now)
        selected = self.selected_job_id or self._reselect
        reselect, self._reselect = self._reselect, None
        palette = self.palette
        wanted: dict[str, tuple[RunningJob, dict[str, Text]]] = {}
        order: list[tuple[tuple[Any, ...], str]] = []
        for index, job in enumerate(snap.jobs):
            cells = job_cells(job, snap, now, palette, self.compact, self._id_width)
            if self._matches(cells, job):
                wanted[job.job_id] = (job, cells)
                order.append((self._sort_key(job, index, cells, now), job.job_id))
        removed = [key for key in self._cells if key not in wanted]
        for key in removed:
            self.remove_row(key)
            del self._cells[key]
        columns = self.columns_shown
        for job_id, (_job, cells) in wanted.items():
            known = self._cells.get(job_id)
            if known is None:
                if job_id in self.rows:
                    self.remove_row(job_id)
                self.add_row(*(cells[k] for k in columns), key=job_id)
                self._cells[job_id] = {k: cells[k].plain for k in columns}
                continue
            for column in columns:
                text = cells[column]
                if known.get(column) != text.plain:
                    self.update_cell(job_id, column, text)
                    known[column] = text.plain
        order.sort(key=lambda pair: pair[0], reverse=self.reverse)
        self.shown = [job_id for _, job_id in order]
        if [str(r.key.value) for r in self.ordered_rows] != self.shown:
            rank = {job_id: i for i, job_id in enumerate(self.shown)}
            self.sort("job", key=lambda cell: rank.get(getattr(cell, "job_id", ""), 0))
            reselect = reselect or selected
        if (removed or reselect) and selected in wanted:
            self.move_cursor(row=self.get_row_index(selected))
        self._size_columns([cells for _, cells in wanted.values()])
        self._retitle(snap)

    def _retitle(self, snap: Snapshot) -> None:
        running = sum(1 for j in snap.jobs if j.slot_id)
        queued = len(snap.jobs) - running
        title = f"Running jobs ({running}" + (f", {queued} waiting)" if queued else ")")
        if not snap.jobs:
            title = "Running jobs (none)"
        if self.sort_by != "claimed":
            title += f" · by {self.sort_by} {'▼' if self.reverse else '▲'}"
        elif self.reverse:
            title += " · newest claim first"
        if self.search_text:
            title += f' · "{self.search_text}" {len(self.shown)} of {len(snap.jobs)}'
        if title != self.border_title:
            self.border_title = title

    # --- column widths -----------------------------------------------------------------

    def _size_columns(self, rows: list[dict[str, Text]]) -> None:
        """Every column as wide as its widest cell (or label); progress takes the rest."""
        columns = self.columns_shown
        labels = {k: str(self.columns[ColumnKey(k)].label.plain)
                  for k in columns if k in self.columns}
        want = {k: max([len(labels.get(k, k))] + [r[k].cell_len for r in rows]) for k in columns}
        # leave room for a vertical scrollbar, so that more rows never bring a horizontal one
        room = max(0, (self.scrollable_content_region.width or self.size.width)
                   - (0 if self.show_vertical_scrollbar else self.styles.scrollbar_size_vertical))
        fixed = sum(w for k, w in want.items() if k != "progress") + PADDING * len(columns)
        if room:
            id_width = 12 if fixed + PROGRESS_MIN <= room and not self.compact else 8
            if id_width != self._id_width:
                self._id_width = id_width
                for cells in self._cells.values():
                    cells.pop("job", None)  # rewritten at the next show()
            want["job"] = max(len(labels.get("job", "job")), id_width)
            fixed = sum(w for k, w in want.items() if k != "progress") + PADDING * len(columns)
            want["progress"] = max(PROGRESS_MIN, min(want["progress"], room - fixed))
        if want == self._widths:
            return
        self._widths = want
        for key, width in want.items():
            if key in self.columns:
                self.columns[ColumnKey(key)].width = width
        # the table's own bookkeeping for a width change (as add_column does)
        self._require_update_dimensions = True
        self._update_count += 1
        self.refresh(layout=True)

    # --- keys --------------------------------------------------------------------------

    def _mark_sorted(self) -> None:
        for key in self.columns_shown:
            if key not in self.columns:
                continue
            base = "type / model" if self.compact and key == "model" else LABELS[key]
            mark = (" ▼" if self.reverse else " ▲") if key == self.sort_by else ""
            self.columns[ColumnKey(key)].label = Text(base + mark)

    def resort(self) -> None:
        self._mark_sorted()
        self._widths = {}
        if self._latest is not None:
            self.show(*self._latest)
        self.refresh()

    def next_sort(self) -> str:
        """The engine's order, then each column shown in turn."""
        sorts = [s for s in SORTS if s == "claimed" or s in self.columns_shown]
        return sorts[(sorts.index(self.sort_by) + 1) % len(sorts)
                     ] if self.sort_by in sorts else sorts[0]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Open(str(event.row_key.value)))

    def action_open(self) -> None:
        job_id = self.selected_job_id
        if job_id is not None:
            self.post_message(self.Open(job_id))
