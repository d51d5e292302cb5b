"""The operator console: the rig's state at a glance, and every action on a key.

The App is an adapter. It reads engine snapshots (pushed by the engine's listener to the
dashboard, coalesced) and engine events (a worker of the event log), and acts only
through the engine's command API, the same one headless signals and the control socket
use. It never calls into the engine on a key press except for a command, and never
reads ``engine.snapshot()`` after mounting: a slow coordinator, a stalled GPU read or a
flood of snapshots cannot hold up key handling.

Over a read-only viewer (``aitbc-miner attach --read-only``) the command keys are not
bound: the footer, the help and the palette leave them out, and pressing one only says
so. When its terminal goes away (SSH dropped, tmux killed) the console leaves at once
and says why in ``terminal_gone``; the miner's host then runs on without it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Input

from aitbc_miner.engine.snapshot import Mode, Snapshot

from . import render_memory
from .charset import AsciiFilter, unicode_ok
from .gpu_screen import GpuScreen
from .messages import EngineClosed, SnapshotArrived
from .money_screen import MoneyScreen
from .protocol import EngineLike
from .screens import (
    ConfirmScreen,
    ConsoleDialog,
    HelpScreen,
    JobDetailsScreen,
    LiveDialog,
    LogLineScreen,
    QuitScreen,
    ReceiptDetailsScreen,
    drain_question,
)
from .theming import (
    DEFAULT_THEME,
    ThemeMemory,
    automatic_theme,
    default_prefs_path,
    load_themes,
    next_theme,
)
from .widgets.dashboard import Dashboard
from .widgets.events import EventsPanel
from .widgets.gpu import slot_label
from .widgets.jobs import JobsTable
from .widgets.keybar import KeyBar
from .widgets.receipts import ReceiptsTable

_DEFAULT = object()
DRAINING_MODES = (Mode.DRAINING, Mode.DRAINED)
COMMAND_ACTIONS = frozenset({"pause", "resume", "drain", "undrain", "cancel_job",
                             "cancel_job_id"})
COMMAND_KEYS = frozenset({"p", "d", "D", "c"})  # their keys, answered on a read-only console
READ_ONLY = "read-only: this console only watches; commands need attach without --read-only"


class MinerConsole(App[None]):
    """``MinerConsole(engine).run_async()`` beside the engine, on the same loop."""

    TITLE = "aitbc-miner"
    CSS_PATH = "console.tcss"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("d", "drain", "Drain"),
        Binding("D", "undrain", "Undrain"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("enter", "details", "Details", key_display="⏎"),
        Binding("l", "focus_log", "Log"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("v", "next_view", "View"),
        Binding("e", "money", "Money", show=False),  # the Earnings panel says "e money"
        Binding("g", "gpus", "GPUs"),
        Binding("t", "next_theme", "Theme"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit_console", "Quit"),
    ]

    def __init__(
        self,
        engine: EngineLike,
        theme: str | None = None,
        *,
        default_theme: str | None = None,
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
        prefs_path: Path | None | object = _DEFAULT,
        themes: Iterable[Theme] | None = None,
        tick: float | None = 1.0,
        environ: Mapping[str, str] | None = None,
        bell: bool = False,
    ) -> None:
        """``theme`` is an explicit choice (``--theme``) and wins; else the one last chosen
        with ``t`` (remembered in ``prefs_path``); else ``default_theme`` (the config) where
        it names another than the shipped default; else the 16-colour theme on a terminal
        with fewer than 256 colours. ``environ`` (default: the process's) also decides
        whether to draw in ASCII (a locale that is not UTF-8). ``bell`` (config
        ``console.bell``) rings the terminal bell with each alert toast."""
        render_memory.apply()  # drawn lines and styles freed when dropped
        super().__init__()
        self.alert_bell = bell
        self.ascii = not unicode_ok(environ)
        if self.ascii:
            self._filters.append(AsciiFilter())
        self.engine = engine
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.tick = tick
        path = default_prefs_path() if prefs_path is _DEFAULT else prefs_path
        self.memory = ThemeMemory(path)  # type: ignore[arg-type]
        self._themes = {t.name: t for t in
                        (themes if themes is not None else load_themes().values())}
        chosen = default_theme if default_theme != DEFAULT_THEME else None
        self._wanted_theme = (theme or self.memory.load() or chosen
                              or automatic_theme(environ))
        self._remove_listener: Callable[[], None] | None = None
        # Subscribe now, before the engine's first step (the CLI builds the console while
        # the engine task is only scheduled), so the log has the engine's events from start.
        self.subscription = engine.subscribe()
        self._last_mode: Mode | None = None
        self._pause_intent: bool | None = None  # until a snapshot shows the command's effect
        self._last_has_jobs: bool | None = None
        self.quitting: str | None = None  # "drain" or "cancel" once the operator chose
        self.theme_problem: str | None = None
        self.attached = bool(getattr(engine, "attached", False))  # a viewer of another process
        self.read_only = bool(getattr(engine, "read_only", False))
        self.terminal_gone: str | None = None  # why the console left its lost terminal

    # --- setup -----------------------------------------------------------------------

    def on_load(self) -> None:
        for theme in self._themes.values():
            self.register_theme(theme)
        wanted = self._wanted_theme
        if wanted not in self.available_themes:
            fallback = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
            self.theme_problem = f"unknown theme {wanted!r}; using {fallback}"
            wanted = fallback
        self.theme = wanted

    def compose(self) -> ComposeResult:
        yield Dashboard(self.engine, clock=self.clock, started_at=self.started_at,
                        tick=self.tick, subscription=self.subscription, id="dashboard")
        yield KeyBar()

    def on_mount(self) -> None:
        dashboard = self.dashboard
        dashboard.on_applied = self._after_snapshot
        dashboard.apply(self.engine.snapshot())
        def arrived(snap: Snapshot) -> None:
            dashboard.post_message(SnapshotArrived(snap))

        self._remove_listener = self.engine.add_listener(arrived)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.dashboard.jobs.focus()
        if self.theme_problem:
            self.notify(self.theme_problem, severity="warning", markup=False)
        if not self.is_headless and _on_terminal():
            self.set_interval(1.0, self._check_terminal, name="terminal-watch")
            self._resume_only_on_a_terminal()

    def on_unmount(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    @property
    def dashboard(self) -> Dashboard:
        return self.query_one(Dashboard)

    @property
    def latest(self) -> Snapshot | None:
        return self.dashboard.latest

    def _theme_changed(self, theme: Theme) -> None:
        self.memory.save(theme.name)

    # --- following the engine ------------------------------------------------------

    def _after_snapshot(self, snap: Snapshot) -> None:
        if self._pause_intent is not None and self._pause_intent == (snap.mode is Mode.PAUSED):
            self._pause_intent = None
        for screen in self.screen_stack:
            if isinstance(screen, LiveDialog):
                screen.follow(snap)  # an open dialog's counts are never stale
        has_jobs = bool(snap.jobs)
        if snap.mode is not self._last_mode or has_jobs != self._last_has_jobs:
            self._last_mode, self._last_has_jobs = snap.mode, has_jobs
            self.refresh_bindings()
        if self.quitting and not snap.jobs and snap.mode in (Mode.DRAINED, Mode.STOPPING,
                                                               Mode.STOPPED):
            self.exit()
        elif snap.mode is Mode.STOPPED and not self.attached:  # a viewer waits for a restart
            self.exit()

    def on_engine_closed(self, _message: EngineClosed) -> None:
        """The engine stopped (a signal, an auth refusal, or our own drain-then-quit)."""
        self.exit()

    # --- the terminal going away ----------------------------------------------------

    def terminal_lost(self, why: str) -> None:
        """The terminal is gone (SIGHUP, a hung-up tty): leave now, asking nothing."""
        if self.terminal_gone is None:
            self.terminal_gone = why
            self.exit()

    def _resume_only_on_a_terminal(self) -> None:
        """Textual takes the terminal back on SIGCONT (after ctrl+z, fg). A hang-up sends
        SIGCONT right after SIGHUP: taking back a dead terminal starts a second output
        thread and can block the loop, and the engine with it. Only a live one is taken."""
        resume = signal.getsignal(signal.SIGCONT)
        if not callable(resume):
            return

        def on_continue(signum: int, frame: Any) -> None:
            if _on_terminal() and self.terminal_gone is None:
                resume(signum, frame)

        signal.signal(signal.SIGCONT, on_continue)

    def _check_terminal(self) -> None:
        if not _on_terminal():
            self.terminal_lost("the terminal is gone")

    def panic(self, *renderables: RenderableType) -> None:
        """A read from a terminal that hung up fails in Textual's input thread, which
        panics: that is the terminal going away, not a crash."""
        if not self.is_headless and not _on_terminal():
            self.terminal_lost("the terminal is gone")
            return
        super().panic(*renderables)

    # --- which keys apply now --------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if isinstance(self.screen, ConsoleDialog):
            return False  # a dialog or details view answers its own keys only (Esc closes)
        if self.read_only and action in COMMAND_ACTIONS:
            return False  # not bound: not in the footer or the palette; the key only says so
        snap = self.latest
        mode = snap.mode if snap else None
        paused = mode is Mode.PAUSED if self._pause_intent is None else self._pause_intent
        if action == "pause":
            return not paused
        if action == "resume":
            return paused
        if action == "drain":
            return mode not in DRAINING_MODES
        if action == "undrain":
            return mode in DRAINING_MODES
        if action == "cancel_job":
            return True if snap and snap.jobs else None
        if action == "next_view":
            return any(d.compact for d in self.query(Dashboard))
        return True

    def on_key(self, event: events.Key) -> None:
        """Before the console's key bindings: a key typed while an input line opened, and
        sent on to the widget that had the focus, goes into the line, never to a binding
        (a fast ``/px`` searches for "px"; it does not pause). A focused Input handles
        every printable key itself, so one that arrives here was meant for it."""
        line = self.focused
        if isinstance(line, Input) and event.is_printable and event.character:
            event.prevent_default()
            event.stop()
            line.insert_text_at_cursor(event.character)
            return
        if self.read_only and event.key in COMMAND_KEYS:
            event.stop()
            self.notify(READ_ONLY, severity="warning", markup=False)

    def _unreachable(self) -> bool:
        """An attached console whose agent does not answer: a command would go nowhere."""
        if getattr(self.engine, "disconnected_since", None) is None:
            return False
        self.notify("the miner does not answer: nothing was sent", severity="warning",
                    markup=False)
        return True

    # --- actions: each one an engine command ----------------------------------------

    def action_pause(self) -> None:
        if self._unreachable():
            return
        if self.latest and self.latest.mode in DRAINING_MODES:
            self.notify("draining already takes no new jobs; D undrains", markup=False)
            return
        self.engine.pause()
        self._pause_intent = True
        self.refresh_bindings()
        self.notify("paused: no new jobs are claimed; running jobs go on", markup=False)

    def action_resume(self) -> None:
        if self._unreachable():
            return
        self.engine.resume()
        self._pause_intent = False
        self.refresh_bindings()
        self.notify("resumed: claiming jobs again", markup=False)

    def action_drain(self) -> None:
        def answer(yes: bool | None) -> None:
            if yes and not self._unreachable():
                self.engine.drain()
                held = len(self.latest.jobs) if self.latest else 0
                self.notify(f"draining: {held} job(s) left; D undrains", markup=False)

        self.push_screen(ConfirmScreen(drain_question(self.latest), yes="Drain",
                                       ask=drain_question), answer)

    def action_undrain(self) -> None:
        if self._unreachable():
            return
        self.quitting = None
        self.dashboard.quitting = False
        self.engine.undrain()
        self.notify("undrained: claiming jobs again", markup=False)

    def action_cancel_job(self) -> None:
        job_id = self.dashboard.jobs.selected_job_id
        if job_id is None:
            self.notify("no job selected", severity="warning", markup=False)
            return
        self.action_cancel_job_id(job_id)

    def action_cancel_job_id(self, job_id: str) -> None:
        snap = self.latest
        job = snap.job(job_id) if snap else None
        where = slot_label(job.slot_id, snap.gpu) if job and snap and job.slot_id else "no slot yet"
        what = f"{job_id} ({job.job_type} on {where})" if job else job_id

        def answer(yes: bool | None) -> None:
            if not yes or self._unreachable():
                return
            if self.engine.cancel(job_id):
                self.notify(f"canceling job {job_id}: it is reported E_CANCELED", markup=False)
            else:
                self.notify(f"job {job_id} is no longer running", severity="warning",
                            markup=False)

        self.push_screen(ConfirmScreen(
            f"Cancel job {what}? Its work is lost and it is reported E_CANCELED.",
            yes="Cancel job"), answer)

    def action_details(self) -> None:
        focused = self.focused
        receipts = self.dashboard.receipts
        if isinstance(focused, ReceiptsTable) and receipts.selected is not None:
            self.show_receipt(receipts.selected)
            return
        job_id = self.dashboard.jobs.selected_job_id
        if job_id is not None:
            self.show_job(job_id)
        elif receipts.selected is not None:
            self.show_receipt(receipts.selected)
        else:
            self.notify("nothing to show yet: no job or receipt selected", markup=False)

    def on_jobs_table_open(self, message: JobsTable.Open) -> None:
        self.show_job(message.job_id)

    def on_receipts_table_open(self, message: ReceiptsTable.Open) -> None:
        self.show_receipt(message.receipt)

    def on_events_panel_show_event(self, message: EventsPanel.ShowEvent) -> None:
        self.push_screen(LogLineScreen(message.event))

    def show_job(self, job_id: str) -> None:
        self.push_screen(JobDetailsScreen(job_id, lambda: self.latest,
                                          self.dashboard.events.for_job, self.clock,
                                          read_only=self.read_only, engine=self.engine))

    def show_receipt(self, receipt: Any) -> None:
        self.push_screen(ReceiptDetailsScreen(receipt, self.engine))

    def action_focus_log(self) -> None:
        if self.dashboard.compact:
            self.dashboard.view = "events"
        self.set_focus(self.dashboard.events.log_view)  # now: the next key is the log's

    def action_filter(self) -> None:
        if self.dashboard.compact:
            self.dashboard.view = "events"
        self.dashboard.events.open_filter()

    def action_next_view(self) -> None:
        view = self.dashboard.next_view()
        target = {"receipts": self.dashboard.receipts,
                  "events": self.dashboard.events.log_view}.get(view)
        if target is not None:
            target.focus()

    def action_money(self) -> None:
        self.push_screen(MoneyScreen(self.engine, self.latest))

    def action_gpus(self) -> None:
        self.push_screen(GpuScreen(self.latest, self.clock()))

    def action_next_theme(self) -> None:
        self.theme = next_theme(self.theme, self.available_themes)
        self.notify(f"theme {self.theme} (remembered)", markup=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(read_only=self.read_only))

    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit key) goes through the same safe quit."""
        self.action_quit_console()

    def action_quit_console(self) -> None:
        """Quit without losing a result: with jobs held, ask to drain, cancel, or stay."""
        snap = self.latest
        held = len(snap.jobs) if snap else 0
        if held == 0 or getattr(self.engine, "detached_quit", False):
            self.exit()  # nothing to lose, or an attached viewer: the agent runs on
            return

        def answer(choice: str | None) -> None:
            if choice in ("drain", "cancel") and not (self.latest and self.latest.jobs):
                self.exit()  # everything finished while the dialog was open: nothing to lose
                return
            if choice == "drain":
                self.quitting = "drain"
                self.dashboard.quitting = True
                self.engine.drain(exit_when_drained=True)
                self.notify("draining, then quitting: the running jobs finish first",
                            markup=False)
            elif choice == "cancel":
                self.quitting = "cancel"
                self.dashboard.quitting = True
                self.engine.drain(exit_when_drained=True)
                n = self.engine.cancel_all()
                self.notify(f"canceled {n} job(s) (reported E_CANCELED); quitting", markup=False)
            elif self.quitting:
                self.notify("still draining, and quitting when done; D undrains and stays",
                            markup=False)
            if self.latest is not None:
                self.dashboard.apply(self.latest)

        self.push_screen(QuitScreen(snap.running if snap else 0, held), answer)

    # --- the command palette -------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        commands = [
            ("Pause claiming", "Stop claiming new jobs; running jobs go on (p)", "pause"),
            ("Resume claiming", "Claim jobs again (p)", "resume"),
            ("Drain", "Take nothing new; let running jobs finish (d)", "drain"),
            ("Undrain", "Claim jobs again after a drain (D)", "undrain"),
            ("Cancel selected job", "Cancel the job under the cursor (c)", "cancel_job"),
            ("Details", "Details of the selected job or receipt (enter)", "details"),
            ("Focus the event log", "Move the focus to the event log (l)", "focus_log"),
            ("Filter the event log", "By level and job (/)", "filter"),
            ("Next view", "Receipts, earnings or events on narrow terminals (v)", "next_view"),
            ("Next theme", "Cycle the console themes; remembered (t)", "next_theme"),
            ("Help", "Keys and what the states mean (?)", "help"),
            ("Quit", "Quit; asks first while jobs are running (q)", "quit_console"),
        ]
        for title, help_text, action in commands:
            if self.check_action(action, ()) is False:
                continue
            yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))
        for command in super().get_system_commands(screen):
            if command.title.lower() not in ("quit", "quit the application"):
                yield command


def _on_terminal() -> bool:
    """Whether the console's terminal is still there (a hung-up tty no longer is one)."""
    try:
        return os.isatty(sys.__stdout__.fileno()) if sys.__stdout__ is not None else False
    except (OSError, ValueError):
        return False
