"""The event log: the engine's events as they happen, filterable by level and job.

Events come from ``engine.subscribe()`` in a worker of this widget; bursts are written
in batches. ``/`` opens the filter line: level words (``debug``, ``info``, ``warn``,
``error``) set the lowest level shown, any other word keeps only events of jobs whose
id contains it (with their log lines). An empty filter shows everything from INFO up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from aitbc_miner.engine.snapshot import Event

from .. import fmt
from ..messages import EngineClosed
from ..palette import Palette

KEEP_EVENTS = 2000
LEVEL_WORDS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING",
               "error": "ERROR", "err": "ERROR"}


def job_of(event: Event) -> str | None:
    job = getattr(event, "job_id", None)
    return job if isinstance(job, str) else None


def describe(event: Event) -> str:
    if event.message:
        return event.message
    line = getattr(event, "line", None)
    if isinstance(line, str):
        return f"job {getattr(event, 'job_id', '?')}: {line}"
    fields = " ".join(f"{k}={v}" for k, v in event.fields().items())
    return f"{event.name} {fields}".strip()


@dataclass(frozen=True)
class LogFilter:
    min_level: str = "INFO"
    job: str = ""

    @classmethod
    def parse(cls, text: str) -> LogFilter:
        level: str | None = None
        words: list[str] = []
        for word in text.split():
            if word.lower().lstrip(">=") in LEVEL_WORDS:
                level = LEVEL_WORDS[word.lower().lstrip(">=")]
            else:
                words.append(word.removeprefix("job:"))
        job = " ".join(words)
        return cls(min_level=level or ("DEBUG" if job else "INFO"), job=job)

    def matches(self, event: Event) -> bool:
        if fmt.level_rank(fmt.display_level(event)) < fmt.level_rank(self.min_level):
            return False
        if self.job:
            job = job_of(event)
            return job is not None and self.job.lower() in job.lower()
        return True

    def describe(self) -> str:
        parts = []
        if self.min_level != "INFO" or not self.job:
            parts.append(f"≥ {self.min_level}")
        if self.job:
            parts.append(f"job {self.job}")
        return " · ".join(parts)

    @property
    def is_default(self) -> bool:
        return self == LogFilter()


def event_line(event: Event, now: float, palette: Palette) -> Text:
    level = fmt.display_level(event)
    style = {"ERROR": palette.error, "CRITICAL": palette.error, "WARNING": palette.warn,
             "DEBUG": palette.muted}.get(level, palette.plain)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(fmt.clock_time(event.at, now), style=palette.muted)
    text.append(" ")
    text.append(fmt.LEVEL_TAGS.get(level, level[:5].ljust(5)), style=style)
    text.append(" ")
    text.append(describe(event), style=style if level in ("ERROR", "WARNING", "CRITICAL") else "")
    return text


class EventLog(RichLog):
    """The log lines themselves (the panel owns the filter and the subscription)."""

    DEFAULT_CSS = """
    EventLog {
        height: 1fr; background: $surface; scrollbar-size-vertical: 1; padding: 0 1;
        overflow-y: auto;
    }
    """


class EventsPanel(Vertical):
    """The engine's events; ``/`` filters them."""

    DEFAULT_CSS = """
    EventsPanel {
        height: 8; border: round $primary 40%; border-title-color: $primary;
    }
    EventsPanel:focus-within { border: round $primary; }
    EventsPanel > Input { display: none; height: 1; border: none; padding: 0 1; }
    EventsPanel.-filtering > Input { display: block; }
    """

    BINDINGS = [Binding("escape", "close_filter", "Close filter", show=False)]

    def __init__(self, engine: Any, clock: Any, *, subscription: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine
        self.clock = clock
        self._given = subscription  # taken early by the App; else subscribed on mount
        self.events: deque[Event] = deque(maxlen=KEEP_EVENTS)
        self.filter = LogFilter()
        self._palette: Palette | None = None
        self._subscription: Any = None
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        yield EventLog(max_lines=1000, wrap=False, markup=False, highlight=False,
                       auto_scroll=True, id="event-log")
        yield Input(placeholder="filter: warn | error | debug | <job id>   (Enter applies, "
                    "empty shows all, Esc closes)", id="event-filter", compact=True)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._restyle())
        self._title()
        self._follow()

    def on_unmount(self) -> None:
        close = getattr(self._subscription, "close", None)
        if close is not None:
            close()

    @property
    def log_view(self) -> EventLog:
        return self.query_one(EventLog)

    @property
    def palette(self) -> Palette:
        if self._palette is None:
            self._palette = Palette(self.app)
        return self._palette

    def _restyle(self) -> None:
        self._palette = None
        self.rewrite()

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _follow(self) -> None:
        subscription = self._given if self._given is not None else self.engine.subscribe()
        self._subscription = subscription
        drain = getattr(subscription, "drain", None)
        async for event in subscription:
            batch = [event]
            if drain is not None:
                batch += drain()
            self.add_events(batch)
            await asyncio.sleep(0.05)  # bursts become one write of many lines
        self.post_message(EngineClosed())

    def add_events(self, batch: Iterable[Event]) -> None:
        now = self.clock()
        log = self.log_view
        palette = self.palette
        for event in batch:
            self.events.append(event)
            if self.filter.matches(event):
                log.write(event_line(event, now, palette))

    def rewrite(self) -> None:
        log = self.log_view
        log.clear()
        now = self.clock()
        palette = self.palette
        for event in self.events:
            if self.filter.matches(event):
                log.write(event_line(event, now, palette))
        self._title()

    def _title(self) -> None:
        self.border_title = ("Events" if self.filter.is_default
                             else f"Events · {self.filter.describe()}")
        self.border_subtitle = "/ filter" if self.filter.is_default else "/ change filter"

    def set_filter(self, log_filter: LogFilter) -> None:
        self.filter = log_filter
        self.rewrite()

    def open_filter(self) -> None:
        self.add_class("-filtering")
        box = self.query_one(Input)
        box.value = "" if self.filter.is_default else self._filter_text()
        box.focus()

    def _filter_text(self) -> str:
        words = [] if self.filter.min_level == ("DEBUG" if self.filter.job else "INFO") else [
            self.filter.min_level.lower()]
        return " ".join([*words, self.filter.job]).strip()

    def action_close_filter(self) -> None:
        if self.has_class("-filtering"):
            self.remove_class("-filtering")
            self.log_view.focus()

    @on(Input.Submitted, "#event-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(LogFilter.parse(event.value))
        self.remove_class("-filtering")
        self.log_view.focus()

    def for_job(self, job_id: str, limit: int = 200) -> list[Event]:
        """The kept events of one job (its log lines included), oldest first."""
        found = [e for e in self.events if job_of(e) == job_id]
        return found[-limit:]
