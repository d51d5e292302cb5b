"""The search bar of the jobs and receipts tables: ``/`` on a focused table opens it.

Typing narrows the table as you type (``table.search(text)``); Enter keeps the search
and goes back to the table, whose title then says what it shows; Esc clears it. The bar
takes the focus at once, inside the key's own handler, so a letter typed right after
``/`` goes into the search, never to the dashboard's command keys.
"""

from __future__ import annotations

from typing import Any, Protocol

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Static


class Searchable(Protocol):
    """A table the bar can search: its current search text, and how to apply one."""

    search_text: str
    search_what: str  # what is searched, for the prompt ("jobs: id, model, slot…")

    def search(self, text: str) -> None: ...


class TableSearch(Horizontal):
    """One line at the bottom of the dashboard, shown while a table is being searched."""

    DEFAULT_CSS = """
    TableSearch {
        dock: bottom; display: none; height: 1; background: $boost;
    }
    TableSearch > #search-prompt { width: auto; padding: 0 1; color: $primary; text-style: bold; }
    TableSearch > Input, TableSearch > Input:focus {
        width: 1fr; height: 1; border: none; padding: 0; background: $boost;
    }
    """

    BINDINGS = [Binding("escape", "clear", "Clear search", show=False)]

    class Changed(Message):
        """The bar opened or closed (the dashboard re-fits its heights)."""

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.target: Searchable | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="search-prompt", markup=False)
        yield Input(placeholder="type to search · Enter keep · Esc clear", select_on_focus=False)

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def open(self, table: Searchable) -> None:
        """Search ``table``: the bar shows its current search and takes the focus now."""
        self.target = table
        self.query_one("#search-prompt", Static).update(f"/ {table.search_what}")
        self.input.value = table.search_text
        self.input.cursor_position = len(table.search_text)
        self.display = True
        self.screen.set_focus(self.input)
        self.post_message(self.Changed())

    def close(self, *, clear: bool) -> None:
        target = self.target
        if clear and target is not None:
            target.search("")
        self.display = False
        self.target = None
        if isinstance(target, Widget):
            self.screen.set_focus(target)
        self.post_message(self.Changed())

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self.target is not None and self.display:
            self.target.search(event.value)

    @on(Input.Submitted)
    def _keep(self, event: Input.Submitted) -> None:
        event.stop()
        self.close(clear=False)

    def action_clear(self) -> None:
        self.close(clear=True)


SORT_SEARCH_KEYS = [Binding("s", "sort", "Sort", show=False),
                    Binding("S", "reverse", "Reverse", show=False),
                    Binding("slash", "search", "Search", key_display="/", show=False)]


class SortAndSearch:
    """``s``, ``S`` and ``/`` for a table widget: it names the next sort column
    (``next_sort``) and redraws itself in the new order (``resort``)."""

    sort_by: str
    reverse: bool
    search_text: str

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Under a dialog or details view the table's keys are not offered (the footer
        shows the screen on top's)."""
        if action in ("sort", "reverse", "search", "open"):
            widget: Any = self
            return widget.screen is widget.app.screen
        return True

    def next_sort(self) -> str:
        raise NotImplementedError

    def resort(self) -> None:
        raise NotImplementedError

    def action_sort(self) -> None:
        self.sort_by = self.next_sort()
        self.reverse = False
        self.resort()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.resort()

    def action_search(self) -> None:
        screen = self.screen  # type: ignore[attr-defined]  # the table widget's
        for bar in screen.query(TableSearch):
            bar.open(self)

    def search(self, text: str) -> None:
        """Show only the rows that hold ``text`` (what each table searches: ``search_what``)."""
        self.search_text = text.strip()
        self.resort()

