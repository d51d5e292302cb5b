"""Receipts: newest first, up to 10,000, drawn line by line (only the visible rows).

A snapshot adds only the receipts newer than the newest one shown (keyed by receipt
id), so an update costs what is new, not what is kept. The rows are a
``ReceiptWindow`` (compact, immutable): in the agent's own console, the engine's window
itself, so the table holds no copy of the receipts. The selected receipt stays
selected as new ones arrive; while the cursor is on the newest row it follows the
newest. Receipts that are not counted (invalid, mismatched, duplicate) are highlighted
and say why in words.

An attached console's snapshots carry only the newest receipts; with a ``pager`` (the
viewer's ``receipts_before``) the older ones are fetched a page at a time as the cursor
or the scroll nears the oldest row loaded.

Columns are as wide as what they hold (the widest units, price and verdict seen). ``s``
cycles the sort column (time, job, units, price, verdict), ``S`` reverses it, ``/``
searches (receipt id, job id, verdict, reason). While a sort or a search is on, the
rows shown are a sorted copy, rebuilt only when receipts arrive; the selected receipt
stays selected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.segment import Segment
from rich.style import Style as RichStyle
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from aitbc_miner.engine import ReceiptWindow
from aitbc_miner.engine.snapshot import ReceiptView, Snapshot

from .. import fmt
from .search import SORT_SEARCH_KEYS, SortAndSearch

MAX_ROWS = 10_000
PAGE = 200  # receipts asked for at a time when paging in older ones
SORTS = ("time", "job", "units", "price", "verdict")
DESCENDING = frozenset({"time", "units", "price"})  # biggest (newest) first unless reversed
Pager = Callable[[str, int], Awaitable[Sequence[ReceiptView]]]


def _fit(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)


class ReceiptsTable(SortAndSearch, ScrollView, can_focus=True):
    """The receipts the coordinator issued for this miner's work."""

    DEFAULT_CSS = """
    ReceiptsTable {
        height: 1fr; border: round $primary 40%; border-title-color: $primary;
        scrollbar-size-vertical: 1; padding: 0 1;
    }
    ReceiptsTable:focus { border: round $primary; }
    ReceiptsTable > .receipts-table--header {
        text-style: bold; color: $foreground; background: $panel;
    }
    ReceiptsTable > .receipts-table--cursor { background: $primary 35%; }
    ReceiptsTable:focus > .receipts-table--cursor { background: $primary 60%; text-style: bold; }
    ReceiptsTable > .receipts-table--bad {
        color: $error; text-style: bold; background: $error 15%;
    }
    ReceiptsTable > .receipts-table--ok { color: $success; }
    ReceiptsTable > .receipts-table--muted { color: $foreground 60%; }
    ReceiptsTable > .receipts-table--empty { color: $foreground 60%; text-style: italic; }
    """

    COMPONENT_CLASSES = {
        "receipts-table--header", "receipts-table--cursor", "receipts-table--bad",
        "receipts-table--ok", "receipts-table--muted", "receipts-table--empty",
    }

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "home", "Newest", show=False),
        Binding("end", "end", "Oldest", show=False),
        Binding("enter", "open", "Details", key_display="⏎"),
        *SORT_SEARCH_KEYS,
    ]

    search_what = "receipts: id, job, verdict, reason"

    class Open(Message):
        """Enter on a receipt: show its details."""

        def __init__(self, receipt: ReceiptView) -> None:
            super().__init__()
            self.receipt = receipt

    def __init__(self, *, now: float = 0.0, pager: Pager | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pager = pager
        self.total = 0  # receipts the miner has, loaded here or not
        self.flagged = 0
        self.pages = 0  # older pages paged in (tests read it)
        self._paging = False
        self._exhausted = False  # the miner had nothing older to give
        # newest first: the engine's own window, shared (in the agent), or one of ours
        self._rows = ReceiptWindow(MAX_ROWS)
        self.cursor = 0  # index from the newest (0 = newest)
        self.currency = "AITBC"
        self.now = now
        self.applied = 0  # receipts added by the last show()
        self.added_total = 0  # receipts added one by one since mounting (tests read it)
        self.rebuilds = 0  # times the whole table was rebuilt (tests and the benchmark read it)
        self.sort_by = "time"
        self.reverse = False
        self.search_text = ""
        self._view: list[ReceiptView] | None = None  # shown, top first, while sorted/searched
        self._cw = {"units": 5, "price": 5, "verdict": 7}  # widest cell seen per column
        self.border_subtitle = "s sort · / search"

    # --- data -------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows shown (all loaded ones, or those a search keeps)."""
        return len(self._rows) if self._view is None else len(self._view)

    def row(self, index: int) -> ReceiptView:
        if self._view is not None:
            return self._view[index]
        return self._rows[index]

    @property
    def selected(self) -> ReceiptView | None:
        if not len(self):
            return None
        return self.row(min(self.cursor, len(self) - 1))

    def _measure(self, receipts: Sequence[ReceiptView]) -> None:
        """Widen the units, price and verdict columns to what these receipts need."""
        cw = self._cw
        for r in receipts:
            cw["units"] = max(cw["units"], len(fmt.units(r.units, r.unit_type)))
            cw["price"] = max(cw["price"], len(fmt.money(r.price)))
            cw["verdict"] = max(cw["verdict"],
                                len(fmt.verdict(r.verdict, r.counted, r.duplicate, r.reason)))

    def show(self, snap: Snapshot, now: float) -> None:
        self.now = now
        self.currency = snap.earnings.currency
        self.applied = self._merge(snap.receipts)
        self.total, self.flagged = snap.counters.receipts, snap.counters.receipts_flagged
        self._retitle()
        self._want_older()

    def _retitle(self) -> None:
        title = f"Receipts ({self.total:,}"
        title += f", {self.flagged:,} NOT COUNTED)" if self.flagged else ")"
        if self.total > len(self._rows):
            title += f" · newest {len(self._rows):,} shown"
        if self.sort_by != "time" or self.reverse:
            title += f" · by {self.sort_by} {'▼' if self._descending else '▲'}"
        if self.search_text:
            title += f' · "{self.search_text}" {len(self):,} of {len(self._rows):,}'
        if title != self.border_title:  # setting it repaints every row, once a second
            self.border_title = title

    def _merge(self, receipts: Sequence[ReceiptView]) -> int:
        """Add what is newer than the newest row shown; returns how many were added."""
        if not receipts:
            return 0
        if self._rows:
            newest = self._rows[0].receipt_id
            fresh: list[ReceiptView] = []
            for receipt in receipts:
                if receipt.receipt_id == newest:
                    break
                fresh.append(receipt)
            else:  # the newest row is gone from the engine's window: start over
                return self._reset(receipts)
        else:
            fresh = list(receipts)
        self._measure(fresh)
        added, shown = len(fresh), len(self._rows)
        # The engine's window holds ours and the new, less the old row of a receipt stored
        # again: it may change under the same newest receipt, so it is always adopted.
        if isinstance(receipts, ReceiptWindow):
            self._rows = receipts
        else:
            self._rows = self._rows.extend(reversed(fresh))  # oldest of the new ones first
        if added:
            self.added_total += added
            if self._view is not None:
                self._rebuild_view()
            else:
                self._after_add(added)
        elif len(self._rows) != shown:  # taking the old row out uncovered an older one
            self._resize()
        return added

    def _reset(self, receipts: Sequence[ReceiptView]) -> int:
        key = self.selected.receipt_id if self.selected else None
        searched, self._view = self._view is not None, None
        self.rebuilds += 1
        self._exhausted = False
        if not isinstance(receipts, ReceiptWindow):
            receipts = ReceiptWindow.of(reversed(receipts[:MAX_ROWS]), MAX_ROWS)
        self._rows = receipts
        self._measure(receipts)
        self.cursor = 0
        if key is not None:
            for i in range(len(self._rows)):
                if self.row(i).receipt_id == key:
                    self.cursor = i
                    break
        if searched:
            self._rebuild_view(key)
        self._resize()
        return len(self._rows)

    def _after_add(self, added: int) -> None:
        following = self.cursor == 0 and self.scroll_y == 0
        if not following:
            self.cursor = min(self.cursor + added, len(self._rows) - 1)
            self._resize()
            self.scroll_to(y=self.scroll_y + added, animate=False, immediate=True)
        else:
            self._resize()

    def _resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self) + 1)
        self.refresh()

    # --- sort and search -------------------------------------------------------------

    @property
    def _descending(self) -> bool:
        return (self.sort_by in DESCENDING) != self.reverse

    def _matches(self, r: ReceiptView, needle: str) -> bool:
        verdict = fmt.verdict(r.verdict, r.counted, r.duplicate, r.reason)
        return needle in f"{r.receipt_id} {r.job_id} {r.verdict} {verdict} {r.reason}".lower()

    def _sort_value(self, r: ReceiptView) -> Any:  # of one type per sort column
        by = self.sort_by
        if by == "job":
            return r.job_id
        if by == "units":
            return r.units if r.units is not None else -1.0
        if by == "price":
            return r.price if r.price is not None else -1.0
        if by == "verdict":
            return (fmt.verdict_ok(r.verdict, r.counted, r.duplicate), r.verdict)
        return r.received_at

    def _rebuild_view(self, keep: str | None = None) -> None:
        """The rows shown, sorted and searched; the selected receipt stays selected."""
        if keep is None and self.selected is not None:
            keep = self.selected.receipt_id
        if self.sort_by == "time" and not self.reverse and not self.search_text:
            self._view = None
        else:
            rows = list(reversed(self._rows))  # oldest first: a stable sort keeps ties so
            if self.search_text:
                needle = self.search_text.lower()
                rows = [r for r in rows if self._matches(r, needle)]
            if self.sort_by != "time":
                rows.sort(key=self._sort_value)
            if self._descending:
                rows.reverse()
            self._view = rows
        self.cursor = 0
        if keep is not None:
            for i in range(len(self)):
                if self.row(i).receipt_id == keep:
                    self.cursor = i
                    break
        self._resize()
        self._move(self.cursor)
        self._retitle()

    def next_sort(self) -> str:
        return SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def resort(self) -> None:
        self._rebuild_view()

    # --- paging in older receipts (attached consoles) ----------------------------

    def _want_older(self) -> None:
        """Fetch the next older page once the view nears the oldest row loaded."""
        if (self.pager is None or self._paging or self._exhausted or not self._rows
                or len(self._rows) >= min(self.total, MAX_ROWS)):
            return
        bottom = max(self.cursor, int(self.scroll_y) + self._page)
        if len(self._rows) - bottom > self._page + PAGE // 4:
            return
        self._paging = True
        self.run_worker(self._load_older(self._rows[-1].receipt_id), group="receipt-pages",
                        exit_on_error=False)

    async def _load_older(self, oldest: str) -> None:
        try:
            assert self.pager is not None
            page = await self.pager(oldest, PAGE)
        finally:
            self._paging = False
        if not self._rows or self._rows[-1].receipt_id != oldest:
            return  # the table started over meanwhile
        older = page[:MAX_ROWS - len(self._rows)]  # newest first, each older than the last
        self._measure(older)
        added = len(older)
        if added:
            self._rows = ReceiptWindow.of([*reversed(older), *reversed(self._rows)], MAX_ROWS)
        self._exhausted = added == 0
        self.pages += 1
        if self._view is not None and added:
            self._rebuild_view()
        self._retitle()
        self._resize()
        self._want_older()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._want_older()

    # --- keys --------------------------------------------------------------------

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _move(self, index: int) -> None:
        if not len(self):
            return
        self.cursor = max(0, min(len(self) - 1, index))
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor > top + self._page - 1:
            self.scroll_to(y=self.cursor - self._page + 1, animate=False, immediate=True)
        self.refresh()
        self._want_older()

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, delta: int) -> None:
        self._move(self.cursor + delta * self._page)

    def action_home(self) -> None:
        self._move(0)

    def action_end(self) -> None:
        self._move(len(self) - 1)

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.Open(self.selected))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        self._move(int(self.scroll_y) + offset.y - 1)
        if event.chain == 2:
            self.action_open()

    # --- drawing -----------------------------------------------------------------

    def _columns(self, width: int) -> list[tuple[str, str, int, bool]]:
        """(key, label, width, right-aligned): each as wide as its widest cell; the
        receipt id and the reason join when there is room."""
        cw = self._cw
        price = f"price {self.currency}"
        cols = [("time", "time", 8, False), ("job", "job", 10, False),
                ("units", "units", cw["units"], True),
                ("price", price, max(len(price), cw["price"]), True),
                ("verdict", "verdict", cw["verdict"], False)]
        used = sum(c[2] for c in cols) + len(cols) - 1
        if used > width:  # narrow: shorter job ids and price label
            cols[1] = ("job", "job", 8, False)
            cols[3] = ("price", self.currency, max(len(self.currency), cw["price"]), True)
            used = sum(c[2] for c in cols) + len(cols) - 1
        if width - used >= 30:
            cols.append(("receipt", "receipt", 12, False))
            cols.append(("why", "why", max(8, width - used - 14), False))
        if self.sort_by != "time" or self.reverse:
            mark = " ▼" if self._descending else " ▲"
            cols = [(k, label + mark if k == self.sort_by else label, max(w, len(label) + 2)
                     if k == self.sort_by else w, right) for k, label, w, right in cols]
        return cols

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        cols = self._columns(width)
        if y == 0:
            style = base + self.get_component_rich_style("receipts-table--header")
            text = " ".join(_fit(label, w, right) for _, label, w, right in cols)
            return Strip([Segment(_fit(text, width), style)], width)
        index = int(self.scroll_y) + y - 1
        if not len(self):
            if y == 1:
                style = base + self.get_component_rich_style("receipts-table--empty")
                empty = (f'no receipt matches "{self.search_text}"' if self.search_text
                         else "no receipts yet")
                return Strip([Segment(_fit(empty, width), style)], width)
            return Strip.blank(width, base)
        if index >= len(self):
            return Strip.blank(width, base)
        return self._row_strip(self.row(index), index, cols, width, base)

    def _row_strip(self, r: ReceiptView, index: int, cols: list[tuple[str, str, int, bool]],
                   width: int, base: RichStyle) -> Strip:
        good = fmt.verdict_ok(r.verdict, r.counted, r.duplicate)
        row_style = RichStyle()  # applied last: the highlight of a bad row, the cursor
        if not good:
            bad = self._component("receipts-table--bad")
            row_style += RichStyle(color=bad.color, bgcolor=bad.bgcolor, bold=bad.bold)
        if index == self.cursor:
            cursor = self._component("receipts-table--cursor")
            row_style += RichStyle(bgcolor=cursor.bgcolor, bold=cursor.bold)
        job_w = next((w for k, _, w, _ in cols if k == "job"), 10)
        values = {"time": fmt.clock_time(r.received_at, self.now),
                  "job": fmt.short_id(r.job_id, job_w),
                  "units": fmt.units(r.units, r.unit_type), "price": fmt.money(r.price),
                  "verdict": fmt.verdict(r.verdict, r.counted, r.duplicate, r.reason),
                  "receipt": fmt.short_id(r.receipt_id, 12),
                  "why": r.reason or ("duplicate" if r.duplicate else "")}
        column_styles = {"time": RichStyle(color=self._component("receipts-table--muted").color),
                         "verdict": RichStyle(color=self._component("receipts-table--ok").color)
                         } if good else {}
        segments: list[Segment] = []
        for i, (key, _, w, right) in enumerate(cols):
            if i:
                segments.append(Segment(" ", base + row_style))
            style = base + column_styles.get(key, RichStyle()) + row_style
            segments.append(Segment(_fit(values[key], w, right), style))
        strip = Strip(segments)
        return strip.extend_cell_length(width, base + row_style).crop(0, width)

    def _component(self, name: str) -> RichStyle:
        """A component class's style, its colours blended over the widget's background."""
        return self.get_component_rich_style(name)
