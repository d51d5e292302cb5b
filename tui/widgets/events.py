"""The event log: the engine's events as they happen, to follow, pause, search, filter,
wrap, save, and open whole.

Events come from ``engine.subscribe()`` in a worker of this panel; bursts are written in
batches. Each line reads ``time LEVEL [FLAG] message``: a flag that matters (``FAILED
E_TIMEOUT``, ``POSSIBLE DUPLICATE``, ``NOT COUNTED``, ``GPU LOST``) leads the line, so a
cut line never loses it; ``enter`` shows the whole event with every field.

Keys while the log has the focus (``l``):

- ``f`` follow / pause: paused, the view holds still and the title counts what is new;
  moving up pauses too, ``end`` follows again;
- ``/`` search: matches are highlighted, ``n`` / ``N`` go to the next / previous one;
- ``&`` filter (``/`` elsewhere on the dashboard): level words (``debug``, ``info``,
  ``warn``, ``error``) set the lowest level shown, any other word keeps only events of
  jobs whose id contains it (their log lines too). Empty shows everything from INFO up;
- ``w`` wraps long lines, or cuts them again;
- ``enter`` the whole event: its message wrapped, and every field;
- ``ctrl+s`` saves the filtered log (every kept event the filter shows, whole, with its
  fields) to ``events-<date>-<time>.log`` in the state dir, else the working directory,
  and says where.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList

from aitbc_miner.engine.snapshot import Event

from .. import fmt
from ..messages import EngineClosed
from ..palette import Palette

KEEP_EVENTS = 2000  # kept in memory (filter, save, job details)
KEEP_LINES = 1000  # shown in the log; a little more is trimmed back to this in one go
TRIM_SLACK = 200
LEVEL_WORDS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING",
               "error": "ERROR", "err": "ERROR"}
HINT = "f follow · / search · n N · & filter · w wrap · ⏎ whole · ^s save"


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


def flag(event: Event) -> str:
    """The words that must never be cut off, for the front of the line ('' if none)."""
    name = event.name
    if name == "receipt_stored":
        if not getattr(event, "counted", True):
            return "DUPLICATE" if getattr(event, "duplicate", False) else "NOT COUNTED"
        return "POSSIBLE DUPLICATE" if getattr(event, "duplicate", False) else ""
    if name in ("job_finished", "outcome_delivered") and fmt.display_level(event) != "INFO":
        outcome = str(getattr(event, "outcome", "") or "failed").upper()
        code = getattr(event, "code", None)
        return f"{outcome} {code}" if code else outcome
    if name == "disk_floor":
        return "DISK LOW" if getattr(event, "low", False) else ""
    return {"gpu_lost": "GPU LOST", "auth_refused": "AUTH REFUSED",
            "outcome_unstaged": "NOT JOURNALED"}.get(name, "")


def flagged(event: Event) -> tuple[str, str]:
    """``(flag, the rest of the message)``: a message that already starts with its flag
    (the engine's ``POSSIBLE DUPLICATE: receipt ...``) does not say it twice."""
    badge, text = flag(event), describe(event)
    if badge and text.startswith(badge):
        text = text[len(badge):].lstrip(": ")
    return badge, text


def plain_line(event: Event) -> str:
    """The line's words without its time: ``[FLAG] message`` (what search looks in)."""
    badge, text = flagged(event)
    return f"[{badge}] {text}" if badge else text


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


def level_style(level: str, palette: Palette) -> Style:
    return {"ERROR": palette.error, "CRITICAL": palette.error, "WARNING": palette.warn,
            "DEBUG": palette.muted}.get(level, palette.plain)


def event_line(event: Event, now: float, palette: Palette, search: str = "") -> Text:
    """``12:01:03 WARN  FAILED E_TIMEOUT job 71de… failed (…)``; a warning or an error in
    its colour, its flag in reverse; ``search`` matches highlighted."""
    level = fmt.display_level(event)
    style = level_style(level, palette)
    loud = level in ("ERROR", "WARNING", "CRITICAL")
    text = Text(overflow="ellipsis")
    text.append(fmt.clock_time(event.at, now), style=palette.muted)
    text.append(" ")
    text.append(fmt.LEVEL_TAGS.get(level, level[:5].ljust(5)), style=style)
    text.append(" ")
    badge, words = flagged(event)
    if badge:
        text.append(f" {badge} ", style=style + Style(reverse=True, bold=True))
        text.append(" ")
    text.append(words, style=style if loud else "")
    if search:
        text.highlight_words([search], style=Style(bgcolor=palette.accent.color, bold=True),
                             case_sensitive=False)
    return text


def full_text(event: Event) -> str:
    """The whole event as saved: ISO time, level, name, ``[FLAG]`` message, every field."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.at))
    fields = json.dumps(event.fields(), sort_keys=True, default=str, ensure_ascii=False)
    return (f"{stamp}{f'{event.at % 1:.3f}'[1:]} {fmt.display_level(event):<7} "
            f"{event.name} {plain_line(event)} {fields}")


class EventLog(OptionList):
    """The log lines, one option per event (the panel owns the events and the keys' work):
    a cursor to pick a line for ``enter``, lines cut or wrapped (``w``)."""

    DEFAULT_CSS = """
    EventLog {
        height: 1fr; max-height: 100%; border: none; padding: 0 1; background: $surface;
        scrollbar-size-vertical: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    EventLog:focus { border: none; background-tint: $foreground 0%; }
    EventLog.-wrap { text-wrap: wrap; }
    """

    BINDINGS = [  # each the panel's work (``action_panel``)
        Binding("f", "panel('toggle_follow')", "Follow/pause", show=False),
        Binding("slash", "panel('open_search')", "Search", show=False, key_display="/"),
        Binding("n", "panel('next_match', 1)", "Next match", show=False),
        Binding("N", "panel('next_match', -1)", "Previous match", show=False),
        Binding("ampersand", "panel('open_filter')", "Filter", show=False, key_display="&"),
        Binding("w", "panel('toggle_wrap')", "Wrap", show=False),
        Binding("ctrl+s", "panel('save')", "Save log", show=False),
    ]

    @property
    def panel(self) -> EventsPanel:
        return self.query_ancestor(EventsPanel)

    def action_panel(self, method: str, *args: int) -> None:
        getattr(self.panel, method)(*args)

    # moving up stops following (the view must not run away); ``end`` follows again
    def action_cursor_up(self) -> None:
        self.panel.hold()
        super().action_cursor_up()

    def action_page_up(self) -> None:
        self.panel.hold()
        super().action_page_up()  # type: ignore[no-untyped-call]

    def action_first(self) -> None:
        self.panel.hold()
        super().action_first()

    def action_last(self) -> None:
        super().action_last()
        self.panel.follow()

    def on_focus(self) -> None:
        if self.highlighted is None and self.option_count:
            self.highlighted = self.option_count - 1
        self.panel.retitle()

    def on_blur(self) -> None:
        self.panel.retitle()

    def restyle(self) -> None:
        """Re-measure every line (after the wrap changed)."""
        self._clear_caches()
        self.refresh(layout=True)


class EventsPanel(Vertical):
    """The engine's events; ``f`` ``/`` ``&`` ``w`` ``⏎`` ``ctrl+s`` in the log."""

    DEFAULT_CSS = """
    EventsPanel {
        height: 8; border: round $primary 40%; border-title-color: $primary;
    }
    EventsPanel:focus-within { border: round $primary; }
    EventsPanel > Input { display: none; height: 1; border: none; padding: 0 1; }
    EventsPanel.-filtering > #event-filter { display: block; }
    EventsPanel.-searching > #event-search { display: block; }
    """

    BINDINGS = [Binding("escape", "close_input", "Close", show=False)]

    class ShowEvent(Message):
        """The operator asked for one event whole (``enter`` on its line)."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    def __init__(self, engine: Any, clock: Any, *, subscription: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine
        self.clock = clock
        self._given = subscription  # taken early by the App; else subscribed on mount
        self.events: deque[Event] = deque(maxlen=KEEP_EVENTS)
        self.shown: list[Event] = []  # one per line of the log, in order
        self.filter = LogFilter()
        self.following = True
        self.unseen = 0  # lines the filter shows that arrived while paused
        self.search = ""
        self.wrap = False
        self.saved_to: Path | None = None
        self._palette: Palette | None = None
        self._subscription: Any = None
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        yield EventLog(id="event-log", markup=False)
        yield Input(placeholder="filter: warn | error | debug | <job id>   (Enter applies, "
                    "empty shows all, Esc closes)", id="event-filter", compact=True)
        yield Input(placeholder="search the log (Enter; n / N next / previous; empty clears)",
                    id="event-search", compact=True)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._restyle())
        self.retitle()
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

    # --- lines ---------------------------------------------------------------------

    def _line(self, event: Event, now: float) -> Text:
        return event_line(event, now, self.palette, self.search)

    def add_events(self, batch: Iterable[Event]) -> None:
        fresh: list[Event] = []
        for event in batch:
            self.events.append(event)
            if self.filter.matches(event):
                fresh.append(event)
        if not fresh:
            return
        if not self.following:
            self.unseen += len(fresh)  # the view holds still; the title counts them
            self.retitle()
            return
        if len(self.shown) + len(fresh) > KEEP_LINES + TRIM_SLACK:
            self.rewrite()  # trimmed back to the newest KEEP_LINES in one go
            return
        now = self.clock()
        self.shown += fresh
        self.log_view.add_options([self._line(e, now) for e in fresh])
        self._to_end()

    def _to_end(self) -> None:
        log = self.log_view
        if log.option_count:
            log.highlighted = log.option_count - 1
        log.scroll_end(animate=False, immediate=True)

    def rewrite(self) -> None:
        """Every kept event the filter shows (the newest ``KEEP_LINES``), from scratch."""
        log = self.log_view
        keep = log.highlighted if not self.following else None
        now = self.clock()
        self.shown = [e for e in self.events if self.filter.matches(e)][-KEEP_LINES:]
        log.clear_options()
        log.add_options([self._line(e, now) for e in self.shown])
        if self.following or keep is None:
            self._to_end()
        elif self.shown:
            log.highlighted = min(keep, len(self.shown) - 1)
        self.retitle()

    # --- follow / pause --------------------------------------------------------------

    def hold(self) -> None:
        """Stop following: the view holds still while events arrive."""
        if self.following:
            self.following = False
            self.unseen = 0
            self.retitle()

    def follow(self) -> None:
        """Follow again: what arrived while paused is shown, and the view goes to the end."""
        if not self.following:
            self.following = True
            self.unseen = 0
            self.rewrite()

    def toggle_follow(self) -> None:
        if self.following:
            self.hold()
        else:
            self.follow()

    # --- search ------------------------------------------------------------------------

    def matches(self) -> list[int]:
        """The lines (indexes into ``shown``) that contain the search text."""
        if not self.search:
            return []
        needle = self.search.lower()
        return [i for i, e in enumerate(self.shown) if needle in plain_line(e).lower()]

    def set_search(self, text: str) -> None:
        self.search = text.strip()
        self.rewrite()
        found = self.matches()
        if found:
            self.hold()  # the view stays on the match while events arrive
            self.log_view.highlighted = found[-1]  # the newest match
        self.retitle()

    def next_match(self, step: int) -> None:
        found = self.matches()
        if not found:
            self.notify("no search, or nothing matches: / searches" if not self.search
                        else f'nothing matches "{self.search}"', markup=False)
            return
        self.hold()
        at = self.log_view.highlighted
        if at is None:
            target = found[-1] if step < 0 else found[0]
        elif step > 0:
            target = next((i for i in found if i > at), found[0])
        else:
            target = next((i for i in reversed(found) if i < at), found[-1])
        self.log_view.highlighted = target
        self.retitle()

    # --- wrap ------------------------------------------------------------------------------

    def toggle_wrap(self) -> None:
        self.wrap = not self.wrap
        self.log_view.set_class(self.wrap, "-wrap")
        self.log_view.restyle()
        self.retitle()

    # --- the title -------------------------------------------------------------------------

    def retitle(self) -> None:
        parts = ["Events"]
        if not self.filter.is_default:
            parts.append(self.filter.describe())
        if not self.following:
            parts.append(f"paused, {self.unseen} new (f follows)")
        if self.search:
            found = self.matches()
            at = self.log_view.highlighted if self.is_mounted else None
            if found and at in found:
                parts.append(f'"{self.search}" {found.index(at) + 1}/{len(found)}')
            else:
                parts.append(f'"{self.search}" {len(found)} found')
        if self.wrap:
            parts.append("wrapped")
        self.border_title = " · ".join(parts)
        focused = self.is_mounted and self.app.focused is self.log_view  # has_focus lags
        self.border_subtitle = HINT if focused else (
            "l log · / filter" if self.filter.is_default else "l log · / change filter")

    # --- the input lines (filter, search) ------------------------------------------------

    def _open(self, which: str, value: str) -> None:
        """Show one input line and focus it now, in this handler: a key typed right
        after ``/`` goes into the line, never to the dashboard's command keys."""
        self.remove_class("-filtering", "-searching")
        self.add_class(which)
        box = self.query_one("#event-filter" if which == "-filtering" else "#event-search",
                             Input)
        box.value = value
        box.cursor_position = len(value)
        self.screen.set_focus(box)

    def open_filter(self) -> None:
        self._open("-filtering", "" if self.filter.is_default else self._filter_text())

    def open_search(self) -> None:
        self._open("-searching", self.search)

    def _filter_text(self) -> str:
        words = [] if self.filter.min_level == ("DEBUG" if self.filter.job else "INFO") else [
            self.filter.min_level.lower()]
        return " ".join([*words, self.filter.job]).strip()

    def _close_inputs(self) -> None:
        self.remove_class("-filtering", "-searching")
        self.screen.set_focus(self.log_view)

    def action_close_input(self) -> None:
        if self.has_class("-filtering") or self.has_class("-searching"):
            self._close_inputs()

    def set_filter(self, log_filter: LogFilter) -> None:
        self.filter = log_filter
        self.rewrite()

    @on(Input.Submitted, "#event-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(LogFilter.parse(event.value))
        self._close_inputs()

    @on(Input.Submitted, "#event-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._close_inputs()
        self.set_search(event.value)

    # --- one event whole ---------------------------------------------------------------

    @on(OptionList.OptionSelected, "#event-log")
    def _selected(self, message: OptionList.OptionSelected) -> None:
        message.stop()
        if 0 <= message.option_index < len(self.shown):
            self.post_message(self.ShowEvent(self.shown[message.option_index]))

    # --- save ----------------------------------------------------------------------------

    def save_dir(self) -> Path:
        """The state dir (where the console keeps its theme), else the working directory."""
        memory = getattr(self.app, "memory", None)
        path = getattr(memory, "path", None)
        return Path(path).parent if path is not None else Path.cwd()

    def save(self) -> None:
        lines = [full_text(e) for e in self.events if self.filter.matches(e)]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.clock()))
        self._save(self.save_dir(), f"events-{stamp}", lines)

    @work(exclusive=True, group="events-save", exit_on_error=False)
    async def _save(self, folder: Path, stem: str, lines: list[str]) -> None:
        try:
            path = await asyncio.to_thread(write_log, folder, stem, lines)
        except OSError as exc:
            self.notify(f"the log was not saved: {exc}", severity="error", markup=False)
            return
        self.saved_to = path
        what = "" if self.filter.is_default else f" ({self.filter.describe()})"
        self.notify(f"saved {len(lines)} events{what} to {path}", title="Log saved",
                    markup=False)

    def for_job(self, job_id: str, limit: int = 200) -> list[Event]:
        """The kept events of one job (its log lines included), oldest first."""
        found = [e for e in self.events if job_of(e) == job_id]
        return found[-limit:]


def write_log(folder: Path, stem: str, lines: list[str]) -> Path:
    """Write ``lines`` to ``folder/stem.log`` (``stem-2.log``... if taken); blocking."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = folder / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            with path.open("x", encoding="utf-8") as out:
                out.write("".join(f"{line}\n" for line in lines))
            return path
        except FileExistsError:
            n += 1
