"""The first two lines: who and where the rig is, the link, the mode, and a summary.

Line 1: the mode badge, the link (registered and heartbeat age, OFFLINE and when it
retries, AUTH REFUSED), miner id @ coordinator, uptime and version. Line 2: what needs
the operator, in colour and in words (why the link is down, a lost GPU), then slots,
today's earnings, the outbox, poll cadence and claims in flight. Line 1 counts those
problems (``2 PROBLEMS``, see ``tui.alerts``); each alert a problem raises as it appears is
a toast, once (and the terminal bell with ``console.bell``). A data disk below its
free-space floor shows on both: the badge says the miner is not claiming, line 2 why.
An attached console (``aitbc-miner attach``) adds ATTACHED (and READ-ONLY) badges; while
the agent does not answer, DISCONNECTED replaces the mode and line 2 says since when.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from aitbc_miner.engine.snapshot import Link, Mode, Snapshot

from .. import fmt
from ..alerts import AlertWatch, Problem, answered_status, problems

SEP = ("  │  ", "$foreground-muted")
NARROW_SEP = (" │ ", "$foreground-muted")


@dataclass(frozen=True)
class Attachment:
    """How an attached console reaches its agent (None in the miner's own console)."""

    read_only: bool = False
    socket: str = ""
    lost_since: float | None = None  # the agent stopped answering then; None: connected

    @classmethod
    def of(cls, engine: Any) -> Attachment | None:
        """From a viewer engine that says it is ``attached`` (``RemoteEngine``)."""
        if not getattr(engine, "attached", False):
            return None
        return cls(bool(getattr(engine, "read_only", False)),
                   str(getattr(engine, "socket_path", "")),
                   getattr(engine, "disconnected_since", None))


def attachment_badges(att: Attachment | None) -> list[tuple[str, str]]:
    if att is None:
        return []
    parts = [(" ", ""), (" ATTACHED ", "bold $background on $primary")]
    if att.read_only:
        parts += [(" ", ""), (" READ-ONLY ", "bold $background on $accent")]
    return parts


def link_trouble(snap: Snapshot) -> str | None:
    """Why a RUNNING miner is not claiming, in a word or two; ``None`` when it can."""
    c = snap.connection
    if c.link is Link.BACKING_OFF:
        return "backing off" if answered_status(c.reason) else "offline"
    return {Link.CONNECTING: "connecting", Link.AUTH_REFUSED: "key refused",
            Link.OFFLINE: "offline"}.get(c.link)


def mode_badge(snap: Snapshot, quitting: bool = False) -> tuple[str, str]:
    """The mode in words, and its style: ``RUNNING``, ``PAUSED``, ``DRAINING 2 left``.
    RUNNING is green only while the miner can claim: a link or disk problem says so."""
    held = len(snap.jobs)
    mode = snap.mode
    trouble = link_trouble(snap)
    if mode is Mode.RUNNING and trouble:
        return f" RUNNING · {trouble} ", "bold $background on $warning"
    if mode is Mode.RUNNING and snap.disk.low:
        return " RUNNING · not claiming ", "bold $background on $warning"
    if mode is Mode.RUNNING:
        return " RUNNING ", "bold $background on $success"
    if mode is Mode.PAUSED:
        return " PAUSED · no new jobs ", "bold $background on $warning"
    if mode is Mode.DRAINING:
        tail = " · then quit" if quitting else ""
        return f" DRAINING {held} left{tail} ", "bold $background on $warning"
    if mode is Mode.DRAINED:
        return " DRAINED · idle ", "bold $background on $warning"
    if mode is Mode.STOPPING:
        left = f" {held} left" if held else (f" · outbox {snap.outbox}" if snap.outbox else "")
        return f" STOPPING{left} ", "bold $background on $error"
    if mode is Mode.STOPPED:
        return " STOPPED ", "bold $background on $error"
    return " STARTING ", "bold $background on $primary"


def link_parts(snap: Snapshot, now: float) -> list[tuple[str, str]]:
    """The link in a few words (line 1); why it is down goes to line 2 (``problem``)."""
    c = snap.connection
    if c.link is Link.REGISTERED:
        beat = fmt.age(c.last_heartbeat_at, now) if c.last_heartbeat_at else "none yet"
        return [("● registered", "$success"), (f" · heartbeat {beat}", "")]
    if c.link is Link.CONNECTING:
        return [("◌ connecting…", "$warning")]
    if c.link is Link.BACKING_OFF:
        parts = [("▲ BACKING OFF" if answered_status(c.reason) else "▲ OFFLINE", "bold $error")]
        if c.backoff_until is not None:
            wait = math.ceil(max(0.0, c.backoff_until - now))
            parts.append((f" · retry in {wait} s", "$error"))
        return parts
    if c.link is Link.AUTH_REFUSED:
        return [("✗ AUTH REFUSED", "bold $error")]
    return [("○ offline (signed off)", "$foreground-muted")]


def problem(snap: Snapshot, compact: bool = False,
            found: Sequence[Problem] | None = None) -> list[tuple[str, str]]:
    """What needs the operator, in words, for the start of line 2: each of ``problems``."""
    found = problems(snap) if found is None else found
    return [(p.short if compact else p.text, "bold $error" if p.severity == "error"
             else "bold $warning") for p in found]


def problems_badge(count: int, compact: bool) -> list[tuple[str, str]]:
    """``2 PROBLEMS`` on line 1 beside the mode, while there are any (line 2 names them)."""
    if not count:
        return []
    word = "PROBLEM" if count == 1 else "PROBLEMS"
    return [(" ", ""), (f" {count} {word} ", "bold $background on $error")]


def _fit(parts: list[tuple[str, str]], flexible: int, width: int) -> list[tuple[str, str]]:
    """Shorten ``parts[flexible]`` (the address) so the whole line fits ``width``."""
    total = sum(len(t) for t, _ in parts)
    if total <= width:
        return parts
    text, style = parts[flexible]
    room = max(0, len(text) - (total - width))
    parts = list(parts)
    parts[flexible] = ((text[: room - 1] + "…") if room > 1 else "", style)
    return parts


def line_one(snap: Snapshot, now: float, started_at: float, width: int, compact: bool,
             quitting: bool = False, attachment: Attachment | None = None,
             problem_count: int | None = None) -> Content:
    """``RUNNING │ ● registered · heartbeat 3 s ago │ rig-01 @ host │ up 2h13m │ version``.

    The uptime is the agent's (``snap.started_at``) where the snapshot says it."""
    sep = NARROW_SEP if compact else SEP
    since = snap.started_at if snap.started_at is not None else started_at
    uptime = f"up {fmt.uptime(now - since)}"
    host = fmt.host_of(snap.connection.url)
    badge = mode_badge(snap, quitting)
    if attachment is not None and attachment.lost_since is not None:
        badge = (" DISCONNECTED · retrying ", "bold $background on $error")
    count = len(problems(snap)) if problem_count is None else problem_count
    if attachment is not None and attachment.lost_since is not None:
        count += 1
    parts = [badge, *problems_badge(count, compact), *attachment_badges(attachment), sep,
             *link_parts(snap, now), sep,
             (snap.miner_id, "bold"), (f" @ {host}", ""), sep, (uptime, "")]
    if not compact:
        parts += [sep, (f"aitbc-miner {snap.version}", "$foreground-muted")]
    address = parts.index((f" @ {host}", ""))
    return Content.assemble(*_fit(parts, address, width))


def slot_summary(snap: Snapshot) -> list[tuple[str, str]]:
    counts: dict[str, int] = {}
    for slot in snap.slots:
        counts[slot.state.value] = counts.get(slot.state.value, 0) + 1
    parts: list[tuple[str, str]] = [(f"slots {len(snap.slots)}: ", "")]
    order = [("running", "running", "$success"), ("draining", "draining", "$warning"),
             ("idle", "idle", ""), ("paused", fmt.paused_word(snap.mode), "$warning"),
             ("lost", "LOST", "bold $error")]
    shown = [(counts[k], word, style) for k, word, style in order if counts.get(k)]
    if not shown:
        return [("no slots", "$error")]
    for i, (n, word, style) in enumerate(shown):
        if i:
            parts.append((" · ", "$foreground-muted"))
        parts.append((f"{n} {word}", style))
    queued = sum(1 for j in snap.jobs if j.slot_id is None)
    if queued:
        parts.append((f" · {queued} waiting for a slot", "$warning"))
    return parts


def polling(snap: Snapshot) -> bool:
    """Whether the miner asks for work now: running, registered, and room on the disk."""
    return (snap.mode is Mode.RUNNING and snap.connection.link is Link.REGISTERED
            and not snap.disk.low)


def line_two(snap: Snapshot, compact: bool, attachment: Attachment | None = None,
             now: float = 0.0, found: Sequence[Problem] | None = None,
             brief_rest: bool = False) -> Content:
    """Problems first (colour and words), then today's earnings, slots, outbox, polling;
    ``brief_rest`` keeps the problems' long words and gives the rest its narrow wording."""
    sep = NARROW_SEP if compact else SEP
    parts: list[tuple[str, str]] = []
    if attachment is not None and attachment.lost_since is not None:
        lost = fmt.age(attachment.lost_since, now)
        text = (f"does not answer since {lost}" if compact else
                f"the miner does not answer on {attachment.socket} (since {lost}): retrying; "
                "what follows is as it was then")
        parts += [(text, "bold $error"), sep]
    for item in problem(snap, compact, found):
        parts += [item, sep]
    compact = compact or brief_rest
    e = snap.earnings
    parts.append((f"today {fmt.money(e.today.amount, e.currency)}", "bold"))
    if not compact:
        parts.append((f" ({fmt.jobs(e.today.jobs)})", ""))
    parts += [sep, *slot_summary(snap)]
    parts += [sep, (f"outbox {snap.outbox}", "bold $warning" if snap.outbox else "")]
    if polling(snap):
        parts += [sep, (f"poll {snap.poll_interval_s:.2f} s", "")]
        if not compact:
            parts.append((f" · {snap.polls_in_flight} in flight", ""))
    else:  # paused, draining, offline, disk low: a cadence here would contradict the badge
        parts += [sep, ("not polling", "$foreground-muted")]
    return Content.assemble(*parts)


class StatusHeader(Vertical):
    """Two lines that say the rig's state at a glance."""

    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; }
    StatusHeader > Static { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    StatusHeader > #status-line-2 { background: $surface; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[object, ...] | None = None  # text and spans (Content == is text only)
        self.alerts = AlertWatch()
        self.problems: tuple[Problem, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(id="status-line-1", markup=False)
        yield Static(id="status-line-2", markup=False)

    def show(self, snap: Snapshot, now: float, started_at: float, compact: bool,
             quitting: bool = False, attachment: Attachment | None = None) -> None:
        """Both lines; and a toast (and the bell, if configured) for each alert that a
        problem raises as it appears: once per transition, however often this is called."""
        found = problems(snap)
        self.problems = found
        self._alert(found)
        width = max(20, self.app.size.width - 2)  # the header spans the screen
        one = line_one(snap, now, started_at, width, compact, quitting, attachment,
                       len(found))
        two = line_two(snap, compact, attachment, now, found)
        if not compact and two.cell_length > width:  # problems in full, the rest brief
            two = line_two(snap, False, attachment, now, found, brief_rest=True)
        if not compact and two.cell_length > width:  # the narrow wording says it whole
            two = line_two(snap, True, attachment, now, found)
        shown = (one.plain, one.spans, two.plain, two.spans)
        if shown != self._shown:
            self._shown = shown
            # one line each, always: no layout pass for new words
            self.query_one("#status-line-1", Static).update(one, layout=False)
            self.query_one("#status-line-2", Static).update(two, layout=False)

    def _alert(self, found: tuple[Problem, ...]) -> None:
        app = self.app
        for alert in self.alerts.feed(found):
            app.notify(alert.text, title=alert.kind, markup=False,
                       severity=alert.severity,  # type: ignore[arg-type]
                       timeout=5 if alert.cleared else 15)
            if not alert.cleared and getattr(app, "alert_bell", False):
                app.bell()
