"""Dialogs and detail views: confirm, quit, help, job details, receipt details."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from aitbc_miner.engine import FINAL_STATES, JobRecord
from aitbc_miner.engine.snapshot import Event, ReceiptView, RunningJob, Snapshot

from . import fmt
from .widgets.events import describe, flag
from .widgets.slots import slot_label

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


class LiveDialog(ConsoleDialog):
    """A dialog whose words follow the rig: the console calls ``follow`` with each new
    snapshot while the dialog is open, so its counts are never stale."""

    def follow(self, snap: Snapshot) -> None:
        """Show ``snap``'s counts (the console calls this for each new snapshot)."""


class ConfirmScreen(LiveDialog, ModalScreen[bool]):
    """Yes or no; ``y`` confirms, ``n`` or Esc declines. With ``ask`` the question is
    rebuilt from each snapshot while the dialog is open."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]

    def __init__(self, question: str, yes: str = "Yes",
                 ask: Callable[[Snapshot], str] | None = None) -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.ask = ask

    def follow(self, snap: Snapshot) -> None:
        if self.ask is not None and self.is_mounted:
            question = self.ask(snap)
            if question != self.question:
                self.question = question
                self.query_one(".question", Static).update(Content(question))

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


def drain_question(snap: Snapshot | None) -> str:
    """The drain dialog's question, with the running and waiting jobs counted apart."""
    running = snap.running if snap else 0
    waiting = len(snap.jobs) - running if snap else 0
    also = f" and the {waiting} waiting for a slot" if waiting else ""
    return (f"Drain? No new jobs are claimed; the {running} running job(s){also} finish and "
            "are delivered, then the miner idles (D undrains).")


class QuitScreen(LiveDialog, ModalScreen[str]):
    """Jobs are running: drain first, cancel them, or stay. Never lose a result. The counts
    follow the rig while the dialog is open (``follow``)."""

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

    def question(self) -> str:
        n = self.held
        if n == 0:
            return ("Nothing is running any more: quitting loses nothing.\n\n"
                    "d or c quits now; s stays (Esc)")
        one = n == 1
        waiting = n - self.running
        if self.running:
            jobs = f"{self.running} job{' is' if self.running == 1 else 's are'} still running"
            if waiting:
                jobs += f" and {waiting} waiting for a slot"
        else:
            jobs = f"{waiting} job{' is' if waiting == 1 else 's are'} waiting for a slot"
        it, its = ("it", "its result") if one else ("them", "their results")
        return (f"{jobs}. Quit without losing {its}:\n\n"
                f"d  drain first: take no new jobs, let {it} finish and be delivered,\n"
                f"   then quit (the header shows DRAINING {n} left until then)\n"
                f"c  cancel {it}, then quit ({'it is' if one else 'each is'} reported "
                "E_CANCELED)\n"
                "s  stay (Esc)")

    def follow(self, snap: Snapshot) -> None:
        running, held = snap.running, len(snap.jobs)
        if (running, held) != (self.running, self.held):
            self.running, self.held = running, max(held, running)
            if self.is_mounted:
                self.query_one(".question", Static).update(Content(self.question()))

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content(self.question()), classes="question")
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
 g      GPUs: history, processes (someone else's too), each GPU's jobs
 e      money: AITBC/h, 24 h chart, per GPU and model, failures, net
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
 2 PROBLEMS    what needs you now, named on line 2 (link down, key refused, GPU
               lost or hot, disk low, outcomes stuck, failures rising); each
               alert is a toast once when it appears
 WARN / ERROR  a failed job is WARN (ERROR when the rig is at fault), never INFO;
               its flag (FAILED E_TIMEOUT, POSSIBLE DUPLICATE...) leads the line

In the event log (after l)

 f      follow / pause; paused, the title counts the new lines (end follows)
 /      search, n / N next / previous    &  filter by level and job
 w      wrap long lines / cut them      ⏎  the whole event, every field
 ctrl+s save the filtered log (state dir, else here; a toast says where)

In the jobs and receipts tables (after tab)

 s      sort by the next column       S  reverse the sort
 /      search (Enter keeps it, Esc clears it); the title says what is shown
 enter  details; there j opens a receipt's job, r a job's receipt, even long
        after the job has finished (read from the miner's journal)

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


PAIR_KEY_MAX = 24  # a longer key goes on a line of its own, its value under it
RESULT_LINES = 40  # lines of a delivered body shown; the rest is cut (and said so)


def pairs_text(pairs: Sequence[tuple[str, str]], indent: str = "  ") -> Text:
    """Keys and values in two columns, a bar between them, so neither runs into the other;
    a value's own lines stay under it."""
    text = Text()
    if not pairs:
        text.append(f"{indent}(none)\n", style="dim")
        return text
    width = min(PAIR_KEY_MAX, max(len(k) for k, _ in pairs))
    for key, value in pairs:
        if len(key) > width:
            text.append(f"{indent}{key}\n", style="bold")
            key = ""
        text.append(f"{indent}{key:<{width}}", style="bold")
        text.append(" │ ", style="dim")
        lines = str(value).splitlines() or [""]
        text.append(f"{lines[0]}\n")
        for line in lines[1:]:
            text.append(f"{indent}{'':<{width}}", style="bold")
            text.append(" │ ", style="dim")
            text.append(f"{line}\n")
    return text


def _section(text: Text, title: str) -> None:
    text.append(f"\n{title}\n", style="bold underline")


class JobDetailsScreen(ConsoleDialog, ModalScreen[None]):
    """One job, held now or long finished: state and outcome (error code and message),
    slot and GPU, timings, its receipt, the payload (secrets masked) and what it
    delivered, with its events and log tail. A running job offers cancel (``c``); a
    finished one does not. ``r`` opens its receipt.

    What the snapshot no longer holds is read from the journal through the engine
    (``engine.job_record``, ``engine.job_receipts``), so a job's details stay whole after
    it has finished, attached or not."""

    DEFAULT_CSS = DETAIL_CSS.format(name="JobDetailsScreen")
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close"),
                Binding("c", "cancel_job", "Cancel this job"),
                Binding("r", "receipt", "Its receipt")]

    def __init__(self, job_id: str, latest: Callable[[], Snapshot | None],
                 events: Callable[[str], list[Event]], clock: Callable[[], float],
                 read_only: bool = False, engine: Any = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.latest = latest
        self.events = events
        self.clock = clock
        self.read_only = read_only
        self.engine = engine if callable(getattr(engine, "job_record", None)) else None
        self.problem: str | None = None  # why the journal could not be read
        self.record: JobRecord | None = None
        self.receipts: tuple[ReceiptView, ...] = ()
        self.looked_up = False  # the journal has answered at least once
        self._asked_at: float | None = None  # monotonic time of the last question
        self._was_held = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Job {self.job_id}", markup=False, id="title")
            with VerticalScroll():
                yield Static(markup=False, id="body")
            yield Static(markup=False, classes="hint", id="hint")

    @property
    def held(self) -> RunningJob | None:
        """The job, while this miner holds it (running, waiting or canceling)."""
        snap = self.latest()
        return snap.job(self.job_id) if snap else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_job":
            return not self.read_only and self.held is not None
        return True

    def on_mount(self) -> None:
        self.query_one("#title", Static).styles.text_style = "bold"
        self.render_job()
        self.set_interval(0.5, self.render_job)

    def render_job(self) -> None:
        if self.engine is not None and self._want_record():
            self._asked_at = time.monotonic()
            self._load_record()
        self.query_one("#body", Static).update(self.describe())
        self.query_one("#hint", Static).update(self.hint())

    def _want_record(self) -> bool:
        """Ask the journal on opening, at once when the job leaves the miner's hands, and
        every 2 s after that until its fate is final (delivered or refused, receipt in)."""
        held = self.held is not None
        left, self._was_held = self._was_held and not held, held
        if self._asked_at is None or left:
            return True
        if held or not self.looked_up:
            return False
        final = self.record is not None and self.record.state in FINAL_STATES and self.receipts
        return not final and time.monotonic() - self._asked_at >= 2.0

    @work(exclusive=True, group="job-record", exit_on_error=False)
    async def _load_record(self) -> None:
        try:
            engine = self.engine
            assert engine is not None  # asked only with an engine that answers
            record = await engine.job_record(self.job_id)
            receipts = await engine.job_receipts(self.job_id)
        except Exception as exc:  # noqa: BLE001 - said on screen; the view stays open
            self.problem, self.looked_up = f"{type(exc).__name__}: {exc}", True
        else:
            self.record, self.receipts, self.looked_up = record, tuple(receipts), True
            self.problem = None
        if self.is_attached:
            self.query_one("#body", Static).update(self.describe())
            self.query_one("#hint", Static).update(self.hint())

    def hint(self) -> str:
        keys = []
        if self.check_action("cancel_job", ()):
            keys.append("c cancel this job")
        keys.append("r its receipt" if self.receipt is not None else "r receipt (none yet)")
        if self.read_only:
            keys.append("read-only")
        keys.append("Esc close")
        return " · ".join(keys)

    @property
    def receipt(self) -> ReceiptView | None:
        """The job's counted receipt (else its first): from the journal, else the snapshot."""
        receipts = self.receipts
        if not receipts:
            snap = self.latest()
            receipts = tuple(r for r in (snap.receipts if snap else ()) if r.job_id == self.job_id)
        return next((r for r in receipts if r.counted), receipts[0] if receipts else None)

    def describe(self) -> Text:
        snap = self.latest()
        now = self.clock()
        job = self.held
        record = self.record
        text = Text()
        if job is not None and snap is not None:
            text.append_text(pairs_text(self._live_rows(job, snap, now), indent=""))
        elif record is not None:
            text.append_text(pairs_text(self._record_rows(record, now), indent=""))
        elif self.problem:
            text.append(f"finished; its journal record cannot be read: {self.problem}\n",
                        style="bold")
        elif self.looked_up or self.engine is None:
            text.append("not held by this miner, and not in its journal\n", style="bold")
        else:
            text.append("finished: reading it from the journal…\n", style="bold")
        receipts = self.receipts or tuple(
            r for r in (snap.receipts if snap else ()) if r.job_id == self.job_id)
        if job is None or receipts:
            _section(text, f"receipt{'s' if len(receipts) > 1 else ''}")
            text.append_text(self._receipt_lines(receipts, now))
        payload = (list(job.payload) if job is not None and job.payload else
                   [(str(k), _shown(v)) for k, v in record.payload.items()] if record else [])
        _section(text, f"payload ({len(payload)} key{'' if len(payload) == 1 else 's'})")
        text.append_text(pairs_text(payload))
        if job is None and record is not None and record.body:
            _section(text, f"what it delivered (/{record.endpoint})" if record.endpoint
                     else "its outcome")
            text.append_text(self._body_lines(record.body))
        events = self.events(self.job_id)
        _section(text, f"events and log ({len(events)})")
        for event in events[-100:]:
            tag = fmt.LEVEL_TAGS.get(fmt.display_level(event), "INFO ")
            text.append(f"{fmt.clock_time(event.at, now)} {tag} {describe(event)}\n")
        return text

    def _live_rows(self, job: RunningJob, snap: Snapshot, now: float) -> list[tuple[str, str]]:
        gpu = None
        if job.slot_id:
            gpu = next((g for g in snap.gpu.gpus if job.slot_id in g.slot_ids), None)
        model = getattr(job, "model", None) or dict(job.progress).get("model")
        state = "waiting for a slot" if job.state == "queued" else job.state
        rows = [
            ("state", f"{state} (held by this miner)"),
            ("type", job.job_type + (f" ({model})" if model else "")),
            ("slot", slot_label(job.slot_id, snap.gpu) if job.slot_id else "waiting for a slot"),
            ("GPU", f"{gpu.index} {gpu.name} ({gpu.uuid})" if gpu else "-"),
            ("claimed", _when(job.claimed_at, now)),
            ("started", _when(job.started_at, now) if job.started_at else "not yet"),
            ("elapsed", fmt.duration(now - (job.started_at or job.claimed_at))),
            ("progress", fmt.progress(job.progress)),
        ]
        for key, value in job.progress:
            if key not in ("pct", "tokens", "tokens_per_s", "pull", "model"):
                rows.append((str(key), str(value)))
        return rows

    def _record_rows(self, r: JobRecord, now: float) -> list[tuple[str, str]]:
        outcome = r.outcome.value if r.outcome else "none yet"
        took = (fmt.duration(r.finished_at - (r.started_at or r.claimed_at))
                if r.finished_at else "-")
        rows = [("state", f"finished: {outcome.upper()} · {_journal_state(r)}")]
        body = r.body or {}
        if r.error_code:
            rows.append(("error", r.error_code))
            message = body.get("error_message")
            if message:
                rows.append(("message", str(message)))
        rows += [
            ("type", (r.job_type or "?") + _model_of(r.payload)),
            ("slot", r.slot or "never started"),
            ("claimed", _when(r.claimed_at, now)),
            ("started", _when(r.started_at, now) if r.started_at else "never"),
            ("finished", _when(r.finished_at, now) if r.finished_at else "-"),
            ("duration", took),
            ("delivered", _when(r.delivered_at, now) if r.delivered_at else "not yet"),
            ("attempts", str(r.attempts)),
        ]
        if r.last_error:
            rows.append(("last error", r.last_error))
        return rows

    def _receipt_lines(self, receipts: Sequence[ReceiptView], now: float) -> Text:
        text = Text()
        if not receipts:
            text.append("  none (yet)\n", style="dim")
        for r in receipts:
            good = fmt.verdict_ok(r.verdict, r.counted, r.duplicate)
            text.append(f"  {r.receipt_id}  {fmt.clock_time(r.received_at, now)}  "
                        f"{fmt.units(r.units, r.unit_type)}  {fmt.money(r.price)}  ")
            text.append(fmt.verdict(r.verdict, r.counted, r.duplicate, r.reason),
                        style="bold green" if good else "bold red")
            text.append("\n")
        return text

    @staticmethod
    def _body_lines(body: dict[str, Any]) -> Text:
        lines = json.dumps(body, indent=2, sort_keys=True, default=str).splitlines()
        text = Text("\n".join(f"  {line}" for line in lines[:RESULT_LINES]) + "\n")
        if len(lines) > RESULT_LINES:
            text.append(f"  … {len(lines) - RESULT_LINES} more lines\n", style="dim")
        return text

    def action_cancel_job(self) -> None:
        self.app.action_cancel_job_id(self.job_id)  # type: ignore[attr-defined]
        # the confirmation opens above this view; the answer shows in it within 0.5 s

    def action_receipt(self) -> None:
        """Its receipt: back to it when this view was opened from it, else open it."""
        receipt = self.receipt
        if receipt is None:
            self.notify("no receipt for this job yet", markup=False)
            return
        below = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        if isinstance(below, ReceiptDetailsScreen) and below.receipt.job_id == self.job_id:
            self.dismiss()
        else:
            self.app.show_receipt(receipt)  # type: ignore[attr-defined]


def _when(at: float | None, now: float) -> str:
    return f"{fmt.clock_time(at, now)} ({fmt.age(at, now)})" if at else "-"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _model_of(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    return f" ({model})" if isinstance(model, str) and model else ""


def _journal_state(r: JobRecord) -> str:
    return {"delivered": "delivered to the coordinator",
            "staged": "waiting in the outbox", "uncertain": "delivery unconfirmed, retrying",
            "rejected": "the coordinator refused it", "claimed": "claimed",
            "running": "running"}.get(r.state.value, r.state.value)


class ReceiptDetailsScreen(ConsoleDialog, ModalScreen[None]):
    """One receipt as JSON: the verdict and why, and the coordinator's full body when the
    engine can give it (``engine.receipt_body(receipt_id)``, optional)."""

    DEFAULT_CSS = DETAIL_CSS.format(name="ReceiptDetailsScreen")
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close"),
                Binding("j", "job", "Its job")]

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
            yield Static(f"j its job ({fmt.short_id(r.job_id, 12)}) · Esc close", markup=False,
                         classes="hint")

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

    def action_job(self) -> None:
        """Its job's details, finished or not: back to them when this view was opened
        from them, else open them."""
        job_id = self.receipt.job_id
        below = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        if isinstance(below, JobDetailsScreen) and below.job_id == job_id:
            self.dismiss()
        else:
            self.app.show_job(job_id)  # type: ignore[attr-defined]

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


class LogLineScreen(ConsoleDialog, ModalScreen[None]):
    """One event of the log whole: its level, name and time, its flag, the message wrapped
    (never cut), and every field the engine gave it."""

    DEFAULT_CSS = DETAIL_CSS.format(name="LogLineScreen")
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        e = self.event
        level = fmt.display_level(e)
        colour = {"ERROR": "$error", "CRITICAL": "$error", "WARNING": "$warning"}.get(level)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        with Vertical():
            yield Static(Content.assemble(
                (f" {level} ", f"bold $background on {colour}" if colour else "bold reverse"),
                (f"  {e.name}  ", "bold"), (stamp, "")), id="title")
            with VerticalScroll():
                yield Static(self.body(), markup=False, id="body")
            yield Static("Esc close", markup=False, classes="hint")

    def body(self) -> Text:
        e = self.event
        text = Text()
        badge = flag(e)
        if badge:
            text.append(f" {badge} ", style="bold reverse")
            text.append("\n\n")
        text.append(describe(e))
        text.append("\n\nfields\n", style="bold underline")
        fields = e.fields()
        if not fields:
            text.append("  (none)\n", style="dim")
        width = max((len(k) for k in fields), default=0)
        for key, value in fields.items():
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            text.append(f"  {key:<{width}}", style="bold")
            text.append(" │ ", style="dim")
            text.append(f"{shown}\n")
        return text
