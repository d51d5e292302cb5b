"""Dialogs and detail views: confirm, quit, help, job details, receipt details."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from aitbc_miner.engine.snapshot import Event, ReceiptView, Snapshot

from . import fmt
from .widgets.events import describe
from .widgets.gpu import slot_label

DIALOG_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{
    width: 76; max-width: 96%; height: auto; max-height: 90%;
    border: thick $primary; background: $surface; padding: 1 2;
}}
{name} .question {{ width: 1fr; margin-bottom: 1; }}
{name} Horizontal {{ height: auto; width: auto; }}
{name} Button {{ margin: 0 1 0 0; min-width: 12; }}
"""


class ConsoleDialog:
    """Marks the console's own dialogs and detail views: while one is open, the
    dashboard's keys (p, d, c, ...) are off, so a letter meant for it cannot act twice."""


class ConfirmScreen(ConsoleDialog, ModalScreen[bool]):
    """Yes or no; ``y`` confirms, ``n`` or Esc declines."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content(self.question), classes="question")
            with Horizontal():
                yield Button(Content(f"y  {self.yes}"), id="yes", variant="warning")
                yield Button(Content("n  No"), id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class QuitScreen(ConsoleDialog, ModalScreen[str]):
    """Jobs are running: drain first, cancel them, or stay. Never lose a result."""

    DEFAULT_CSS = DIALOG_CSS.format(name="QuitScreen")
    BINDINGS = [Binding("d", "choose('drain')", "Drain, then quit"),
                Binding("c", "choose('cancel')", "Cancel jobs, then quit"),
                Binding("s", "choose('stay')", "Stay"),
                Binding("escape", "choose('stay')", "Stay", show=False)]

    def __init__(self, running: int, held: int | None = None) -> None:
        """``running``: jobs on a slot; ``held``: those and the ones waiting for a slot."""
        super().__init__()
        self.running = running
        self.held = running if held is None else max(held, running)

    def compose(self) -> ComposeResult:
        n = self.held
        one = n == 1
        waiting = n - self.running
        jobs = f"{self.running} job{' is' if self.running == 1 else 's are'} still running"
        if waiting:
            jobs += f" and {waiting} waiting for a slot"
        it, its = ("it", "its result") if one else ("them", "their results")
        with Vertical():
            yield Static(Content(
                f"{jobs}. Quit without losing {its}:\n\n"
                f"d  drain first: take no new jobs, let {it} finish and be delivered,\n"
                f"   then quit (the header shows DRAINING {n} left until then)\n"
                f"c  cancel {it}, then quit ({'it is' if one else 'each is'} reported E_CANCELED)\n"
                "s  stay (Esc)"), classes="question")
            with Horizontal():
                yield Button(Content("d  Drain, then quit"), id="drain", variant="primary")
                yield Button(Content("c  Cancel jobs, quit"), id="cancel", variant="error")
                yield Button(Content("s  Stay"), id="stay")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(str(event.button.id))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


HELP = """\
Keys (all also in the command palette: ctrl+p)

 p      pause / resume claiming (running jobs go on)
 d      drain: take nothing new, let running jobs finish (asks)
 D      undrain: claim again
 c      cancel the selected job (asks; it is reported E_CANCELED)
 enter  details of the selected job or receipt
 l      focus the event log      /  filter it by level and job
 tab    next panel               v  next view (narrow terminal)
 t      next theme (remembered)  ?  this help
 q      quit; with jobs running: drain first, cancel, or stay

What the words mean

 RUNNING       claiming new jobs
 PAUSED        not claiming; running jobs go on
 DRAINING n    not claiming; n jobs left, then idle (or quit)
 DRAINED       nothing running, nothing claimed
 RUNNING · offline  asked to claim, but the link is down (amber, not green)
 OFFLINE       coordinator unreachable; retrying (why on line 2)
 BACKING OFF   the coordinator answers with an error (503...); retrying
 AUTH REFUSED  the miner key was refused: check the config
 slots         ● running  ○ idle  ◐ draining  ‖ paused  ✗ LOST
 ✓ pinned      receipt signed by the pinned coordinator key
 ✓ unpinned    signature valid, but no key is pinned
 ✗ INVALID, MISMATCH, MALFORMED, DUPLICATE: not counted
 outbox        outcomes waiting to be delivered

Esc, ? or q closes this help.
"""
COMMAND_KEY_LINES = (" p  ", " d  ", " D  ", " c  ")
READ_ONLY_NOTE = ("READ-ONLY: this console only watches (attach --read-only). Pausing,\n"
                  "draining and canceling need `aitbc-miner attach` on control.sock.\n\n")


def help_text(read_only: bool = False) -> str:
    """The help, without the command keys on a read-only console."""
    if not read_only:
        return HELP
    lines = [line for line in HELP.splitlines(keepends=True)
             if not line.startswith(COMMAND_KEY_LINES)]
    return READ_ONLY_NOTE + "".join(lines)


class HelpScreen(ConsoleDialog, ModalScreen[None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="HelpScreen") + """
    HelpScreen > Vertical { padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Static(Content(help_text(self.read_only)), classes="question")


DETAIL_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{
    width: 90%; max-width: 120; height: 90%; border: thick $primary; background: $surface;
    padding: 0 1;
}}
{name} VerticalScroll {{ height: 1fr; }}
{name} .hint {{ color: $foreground 60%; height: 1; }}
"""


class JobDetailsScreen(ConsoleDialog, ModalScreen[None]):
    """One job: id, type, slot and GPU, timings, progress, its events and log tail."""

    DEFAULT_CSS = DETAIL_CSS.format(name="JobDetailsScreen")
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close"),
                Binding("c", "cancel_job", "Cancel this job")]

    def __init__(self, job_id: str, latest: Callable[[], Snapshot | None],
                 events: Callable[[str], list[Event]], clock: Callable[[], float],
                 read_only: bool = False) -> None:
        super().__init__()
        self.job_id = job_id
        self.latest = latest
        self.events = events
        self.clock = clock
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        hint = "read-only · Esc close" if self.read_only else "c cancel this job · Esc close"
        with Vertical():
            yield Static(f"Job {self.job_id}", markup=False, id="title")
            with VerticalScroll():
                yield Static(markup=False, id="body")
            yield Static(hint, markup=False, classes="hint")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.read_only and action == "cancel_job")

    def on_mount(self) -> None:
        self.query_one("#title", Static).styles.text_style = "bold"
        self.render_job()
        self.set_interval(0.5, self.render_job)

    def render_job(self) -> None:
        self.query_one("#body", Static).update(self.describe())

    def describe(self) -> Text:
        snap = self.latest()
        now = self.clock()
        text = Text()
        job = snap.job(self.job_id) if snap else None
        if job is None:
            outcome = next((o for o in (snap.recent if snap else ()) if o.job_id == self.job_id),
                           None)
            text.append("no longer held by this miner", style="bold")
            if outcome is not None:
                code = f" ({outcome.error_code})" if outcome.error_code else ""
                text.append(f": {outcome.outcome}{code} after {fmt.duration(outcome.duration_s)}")
            text.append("\n")
        else:
            gpu = None
            if snap and job.slot_id:
                gpu = next((g for g in snap.gpu.gpus if job.slot_id in g.slot_ids), None)
            model = getattr(job, "model", None) or dict(job.progress).get("model")
            rows = [
                ("type", job.job_type + (f" ({model})" if model else "")),
                ("state", job.state),
                ("slot", slot_label(job.slot_id, snap.gpu) if job.slot_id and snap
                 else "waiting for a slot"),
                ("GPU", f"{gpu.index} {gpu.name} ({gpu.uuid})" if gpu else "-"),
                ("claimed",
                 f"{fmt.clock_time(job.claimed_at, now)} ({fmt.age(job.claimed_at, now)})"),
                ("started",
                 f"{fmt.clock_time(job.started_at, now)} ({fmt.age(job.started_at, now)})"
                 if job.started_at else "not yet"),
                ("elapsed", fmt.duration(now - (job.started_at or job.claimed_at))),
                ("progress", fmt.progress(job.progress)),
            ]
            for key, value in job.progress:
                if key not in ("pct", "tokens", "tokens_per_s", "pull", "model"):
                    rows.append((key, str(value)))
            for key, value in getattr(job, "payload", ()):  # masked by the engine, if it offers it
                rows.append((f"payload.{key}", str(value)))
            for key, value in rows:
                text.append(f"{key:<10}", style="bold")
                text.append(f"{value}\n")
        events = self.events(self.job_id)
        text.append(f"\nevents and log ({len(events)})\n", style="bold underline")
        for event in events[-100:]:
            tag = fmt.LEVEL_TAGS.get(fmt.display_level(event), "INFO ")
            text.append(f"{fmt.clock_time(event.at, now)} {tag} {describe(event)}\n")
        return text

    def action_cancel_job(self) -> None:
        self.app.action_cancel_job_id(self.job_id)  # type: ignore[attr-defined]
        # the confirmation opens above this view; the answer shows in it within 0.5 s


class ReceiptDetailsScreen(ConsoleDialog, ModalScreen[None]):
    """One receipt as JSON: the verdict and why, and the coordinator's full body when the
    engine can give it (``engine.receipt_body(receipt_id)``, optional)."""

    DEFAULT_CSS = DETAIL_CSS.format(name="ReceiptDetailsScreen")
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, receipt: ReceiptView, engine: Any) -> None:
        super().__init__()
        self.receipt = receipt
        self.engine = engine

    def compose(self) -> ComposeResult:
        r = self.receipt
        good = fmt.verdict_ok(r.verdict, r.counted, r.duplicate)
        with Vertical():
            yield Static(Content.assemble(
                (f"Receipt {r.receipt_id}  ", "bold"),
                (fmt.verdict(r.verdict, r.counted, r.duplicate, r.reason),
                 "bold $success" if good else
                 "bold $warning" if r.counted else "bold $error")), id="title")
            with VerticalScroll():
                yield Static(self._summary(), markup=False, id="why")
                yield Static(self._json(dataclasses.asdict(r)), markup=False, id="json")
                yield Static("\nthe coordinator's signed receipt: not available from this engine",
                             markup=False, id="body")
            yield Static("Esc close", markup=False, classes="hint")

    def _summary(self) -> str:
        r = self.receipt
        if r.duplicate and r.counted:
            why = "a second receipt for the same job: counted, but check it was not paid twice"
        elif r.duplicate:
            why = "a second receipt for the same job: kept, but not counted"
        elif r.counted:
            why = {"valid_pinned": "signature valid against the pinned coordinator key",
                   "valid_unpinned": "signature valid, but no coordinator key is pinned"
                   }.get(r.verdict, r.verdict)
        else:
            why = f"NOT COUNTED: {r.reason or r.verdict}"
        return f"verdict: {r.verdict} · {why}\n"

    @staticmethod
    def _json(data: Any) -> str:
        return json.dumps(data, indent=2, sort_keys=True, default=str)

    def on_mount(self) -> None:
        if callable(getattr(self.engine, "receipt_body", None)):
            self._load_body()

    @work(exclusive=True, group="receipt-body", exit_on_error=False)
    async def _load_body(self) -> None:
        result = self.engine.receipt_body(self.receipt.receipt_id)
        if inspect.isawaitable(result):
            result = await result
        if result:
            self.query_one("#body", Static).update(
                "\nthe coordinator's signed receipt, as stored:\n" + self._json(result))
