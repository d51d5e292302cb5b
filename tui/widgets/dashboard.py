"""The dashboard: owns the panels and applies each engine snapshot to them.

The engine's listener posts ``SnapshotArrived`` here (not to the App); a queued backlog
collapses into the newest snapshot. Every panel renders from the latest snapshot and a
``now`` from the console's clock; a one-second tick keeps ages and elapsed times fresh
between snapshots. Below 110x30 the layout goes narrow: one line per GPU, the slots
summarised in the header, and one of receipts / earnings / events at a time (``v``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Footer

from aitbc_miner.engine.snapshot import Snapshot

from ..messages import SnapshotArrived
from .earnings import EarningsPanel
from .events import EventsPanel
from .gpu import GpuPanel
from .header import Attachment, StatusHeader
from .jobs import JobsTable
from .receipts import ReceiptsTable
from .slots import SlotsPanel

NARROW_WIDTH, NARROW_HEIGHT = 110, 30
VIEWS = ("receipts", "earnings", "events")


class Dashboard(Vertical):
    """Every panel of the console, fed from one snapshot at a time."""

    DEFAULT_CSS = """
    Dashboard { height: 1fr; }
    Dashboard #top-row { height: auto; }
    Dashboard #top-row > GpuPanel { width: 1fr; }
    Dashboard #top-row > SlotsPanel { width: 50; }
    Dashboard JobsTable { height: auto; max-height: 14; min-height: 4; }
    Dashboard #money-row { height: 1fr; min-height: 6; }
    Dashboard #money-row > ReceiptsTable { width: 1fr; }
    Dashboard #money-row > EarningsPanel { width: 50; }
    Dashboard EventsPanel { height: 6; }

    Dashboard.-wide #top-row > SlotsPanel { width: 60; }
    Dashboard.-wide #money-row > EarningsPanel { width: 60; }
    Dashboard.-wide EventsPanel { height: 1fr; max-height: 16; }
    Dashboard.-wide JobsTable { max-height: 24; }

    Dashboard.-narrow #top-row > SlotsPanel { display: none; }
    Dashboard.-narrow GpuPanel { border: none; border-top: solid $primary 40%; padding: 0 1; }
    Dashboard.-narrow JobsTable, Dashboard.-narrow ReceiptsTable, Dashboard.-narrow EarningsPanel,
    Dashboard.-narrow EventsPanel {
        border: none; border-top: solid $primary 40%;
    }
    Dashboard.-narrow JobsTable:focus, Dashboard.-narrow ReceiptsTable:focus,
    Dashboard.-narrow EventsPanel:focus-within { border: none; border-top: solid $primary; }
    Dashboard.-narrow #money-row { min-height: 4; }
    Dashboard.-narrow #money-row > EarningsPanel { width: 1fr; }
    Dashboard.-narrow EventsPanel { height: 1fr; }
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

    def on_mount(self) -> None:
        if self.tick:
            self.set_interval(self.tick, self.refresh_times, name="age-tick")

    # --- layout ------------------------------------------------------------------

    def on_resize(self) -> None:
        size = self.app.size
        compact = size.width < NARROW_WIDTH or size.height < NARROW_HEIGHT
        self.set_class(compact, "-narrow")
        self.set_class(size.width >= 160 and size.height >= 45, "-wide")
        if compact != self.compact:
            self.compact = compact
            self.jobs.set_compact(compact)
            self.app.refresh_bindings()
            for footer in self.app.query(Footer):  # room for every key at 80 columns
                footer.show_command_palette = not compact
        self.refresh_times()  # re-render for the new width now, and once laid out
        self.call_after_refresh(self.refresh_times)

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
        if self.on_applied is not None:
            self.on_applied(snap)

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
