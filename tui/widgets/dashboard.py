"""The dashboard: owns the panels and applies each engine snapshot to them.

The engine's listener posts ``SnapshotArrived`` here (not to the App); a queued backlog
collapses into the newest snapshot. Every panel renders from the latest snapshot and a
``now`` from the console's clock; a one-second tick keeps ages and elapsed times fresh
between snapshots.

Layout (docs/console-layout.md): every panel is whole and bordered at any size from
80x24 up. The heights are decided here, from what each panel holds:

- the GPU row is as tall as the GPU panel's lines; the slots beside it pick the most
  detailed form that fits that height (a line per slot, two per line, one glyph each),
  so neither leaves empty rows;
- the jobs table is as tall as its rows, up to what leaves the panels under it their
  minimum (money row and events); past that it scrolls;
- receipts and earnings share what is left with the events, two parts to one.

Below 100 columns or 28 lines the layout goes narrow: one line per GPU, the slots only
in the header, and one of receipts / earnings / events at a time (``v``). From 160x45
the side panels widen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widget import Widget

from aitbc_miner.engine.snapshot import Snapshot

from ..messages import SnapshotArrived
from .earnings import EarningsPanel
from .events import EventsPanel
from .gpu import GpuPanel
from .header import Attachment, StatusHeader
from .jobs import JobsTable
from .keybar import KeyBar
from .receipts import ReceiptsTable
from .search import TableSearch
from .slots import SlotsPanel

NARROW_WIDTH, NARROW_HEIGHT = 100, 28  # below either: the narrow layout (80x24)
WIDE_WIDTH, WIDE_HEIGHT = 160, 45  # from both: wider side panels (200x50)
VIEWS = ("receipts", "earnings", "events")
MONEY_MIN = 7  # rows the receipts/earnings row keeps at least (header + 4 receipts)
EVENTS_MIN = 5  # rows the events panel keeps at least (3 lines)
NARROW_VIEW_MIN = 6  # rows the one narrow view keeps at least


class Dashboard(Vertical):
    """Every panel of the console, fed from one snapshot at a time."""

    DEFAULT_CSS = """
    Dashboard { height: 1fr; }
    Dashboard #top-row { height: 8; }
    Dashboard #top-row > GpuPanel { width: 1fr; height: 100%; }
    Dashboard #top-row > SlotsPanel { width: 44; height: 100%; }
    Dashboard JobsTable { height: auto; min-height: 4; }
    Dashboard #money-row { height: 2fr; min-height: 7; }
    Dashboard #money-row > ReceiptsTable { width: 1fr; }
    Dashboard #money-row > EarningsPanel { width: 48; }
    Dashboard EventsPanel { height: 1fr; min-height: 5; }

    Dashboard.-wide #top-row > SlotsPanel { width: 56; }
    Dashboard.-wide #money-row > EarningsPanel { width: 64; }

    Dashboard.-narrow #top-row > SlotsPanel { display: none; }
    Dashboard.-narrow #money-row { height: 1fr; min-height: 6; }
    Dashboard.-narrow #money-row > EarningsPanel { width: 1fr; }
    Dashboard.-narrow EventsPanel { height: 1fr; min-height: 6; }
    Dashboard.-narrow.-view-receipts #money-row > EarningsPanel { display: none; }
    Dashboard.-narrow.-view-receipts EventsPanel { display: none; }
    Dashboard.-narrow.-view-earnings #money-row > ReceiptsTable { display: none; }
    Dashboard.-narrow.-view-earnings EventsPanel { display: none; }
    Dashboard.-narrow.-view-events #money-row { display: none; }
    """

    view: reactive[str] = reactive("receipts", init=False)

    def __init__(self, engine: Any, *, clock: Callable[[], float] = time.time,
                 started_at: float | None = None, tick: float | None = 1.0,
                 subscription: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.tick = tick
        self.subscription = subscription
        self.latest: Snapshot | None = None
        self.compact = False
        self.quitting = False
        self.on_applied: Callable[[Snapshot], None] | None = None
        self._heights: tuple[int, int] | None = None  # (top row, jobs max) last set
        self.add_class("-view-receipts")

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        with Horizontal(id="top-row"):
            yield GpuPanel()
            yield SlotsPanel()
        yield JobsTable(id="jobs")
        with Horizontal(id="money-row"):
            yield ReceiptsTable(id="receipts", pager=getattr(self.engine, "receipts_before", None))
            yield EarningsPanel()
        yield EventsPanel(self.engine, self.clock, subscription=self.subscription)
        yield TableSearch(id="table-search")

    def on_mount(self) -> None:
        if self.tick:
            self.set_interval(self.tick, self.refresh_times, name="age-tick")

    # --- layout ------------------------------------------------------------------

    def on_resize(self) -> None:
        size = self.app.size
        compact = size.width < NARROW_WIDTH or size.height < NARROW_HEIGHT
        self.set_class(compact, "-narrow")
        self.set_class(size.width >= WIDE_WIDTH and size.height >= WIDE_HEIGHT, "-wide")
        if compact != self.compact:
            self.compact = compact
            self.jobs.set_compact(compact)
            self.app.refresh_bindings()
            for bar in self.app.query(KeyBar):  # room for every key at 80 columns
                bar.show_command_palette = not compact
        self._heights = None
        self.refresh_times()  # re-render for the new width now, and once laid out
        self.call_after_refresh(self.refresh_times)

    def _fit(self, snap: Snapshot) -> None:
        """Heights from content: the GPU row as tall as the GPU panel's lines (the slots
        fit into it); the jobs table as tall as its rows, leaving the rest their minimum."""
        gpu, slots, jobs = self.query_one(GpuPanel), self.query_one(SlotsPanel), self.jobs
        gpu_lines = max(1, _content_lines(gpu, self))
        lines = gpu_lines
        if not self.compact:
            lines = max(gpu_lines, slots.fit(snap, gpu_lines))
        top = lines + 2
        screen_h = self.app.size.height
        used = 2 + 1 + top  # header, footer, the GPU row
        if self.compact:
            rest = NARROW_VIEW_MIN
        else:
            rest = MONEY_MIN + EVENTS_MIN
        jobs_max = max(4, screen_h - used - rest - (1 if self.search.display else 0))
        if (top, jobs_max) != self._heights:
            self._heights = (top, jobs_max)
            self.query_one("#top-row").styles.height = top
            jobs.styles.max_height = jobs_max

    def watch_view(self, old: str, new: str) -> None:
        self.remove_class(f"-view-{old}")
        self.add_class(f"-view-{new}")

    def next_view(self) -> str:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        return self.view

    # --- snapshots -----------------------------------------------------------------

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        message.stop()
        if self.latest is not None and message.snapshot.seq < self.latest.seq:
            return  # older than what is shown (snapshots are numbered by the engine)
        self.apply(message.snapshot)

    def refresh_times(self) -> None:
        if self.latest is not None:
            self.apply(self.latest)

    def apply(self, snap: Snapshot) -> None:
        """Show one snapshot: each panel does only the work its part of it needs."""
        if not self.is_attached:
            return
        self.latest = snap
        now = self.clock()
        self.query_one(StatusHeader).show(snap, now, self.started_at, self.compact, self.quitting,
                                          Attachment.of(self.engine))
        self.query_one(GpuPanel).show(snap, self.compact)
        self.query_one(SlotsPanel).show(snap, now)
        self.query_one(JobsTable).show(snap, now)
        self.query_one(ReceiptsTable).show(snap, now)
        self.query_one(EarningsPanel).show(snap.earnings)
        self._fit(snap)
        if self.on_applied is not None:
            self.on_applied(snap)

    # --- search ----------------------------------------------------------------------

    def on_table_search_changed(self, message: TableSearch.Changed) -> None:
        message.stop()
        self._heights = None
        if self.latest is not None:
            self._fit(self.latest)

    # --- typed accessors -------------------------------------------------------------

    @property
    def jobs(self) -> JobsTable:
        return self.query_one(JobsTable)

    @property
    def receipts(self) -> ReceiptsTable:
        return self.query_one(ReceiptsTable)

    @property
    def events(self) -> EventsPanel:
        return self.query_one(EventsPanel)

    @property
    def search(self) -> TableSearch:
        return self.query_one(TableSearch)


def _content_lines(panel: Widget, parent: Widget) -> int:
    """How many lines the panel's content takes (what ``height: auto`` would give it)."""
    width = panel.content_region.width or max(1, parent.size.width - 4)
    return panel.get_content_height(parent.size, panel.app.size, width)
