"""What is wrong with the rig now, and the moment each thing went wrong.

``problems(snap)`` lists the current problems, read from snapshot fields only: a standing
warning (jobs not sandboxed...), the link down (OFFLINE, or BACKING OFF when the
coordinator answers with an error), the key refused (AUTH REFUSED), a lost GPU, a hot GPU
(the engine's ``GpuView.hot``), a data disk below its floor, outcomes
that cannot be delivered while the link is down, and a rising failure rate. The header
counts them and names them; the words are the same in both places.

``AlertWatch`` turns successive snapshots into alerts: one per problem when it appears
(a toast, and the terminal bell if configured), never one per snapshot. A problem that
clears and comes back alerts again.

A rising failure rate: among the last ``FAILURE_WINDOW`` (10) finished jobs at least
``FAILURE_MIN`` (3) failed, and more than among the 10 before them. Completed and
canceled jobs are not failures; every other outcome (failed, interrupted...) is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aitbc_miner.engine.snapshot import GOOD_OUTCOMES, Link, OutcomeView, Snapshot

STATUS = re.compile(r"(?:^|:\s*)([1-5]\d\d)\b")
FAILURE_WINDOW = 10
FAILURE_MIN = 3

OFFLINE, AUTH_REFUSED, GPU_LOST, GPU_HOT, FAILURES = (
    "OFFLINE", "AUTH REFUSED", "GPU LOST", "GPU HOT", "FAILURES RISING")


@dataclass(frozen=True, slots=True)
class Problem:
    """One current problem: ``key`` names it across snapshots (``gpu-lost:GPU-…``),
    ``alert`` is the alert it raises (``None``: shown and counted, no toast)."""

    key: str
    text: str  # in words, for line 2 of the header and the toast
    short: str  # the same at 80 columns
    alert: str | None = None
    severity: str = "error"  # or "warning": a toast's colour


def answered_status(reason: str | None) -> str | None:
    """The HTTP status in a link reason (``/v1/poll: 503 Service Unavailable``), if the
    coordinator answered at all; ``None`` for a connect error or a timeout."""
    found = STATUS.search(reason or "")
    return found.group(1) if found else None


def failure_counts(recent: Sequence[OutcomeView]) -> tuple[int, int, int]:
    """(failed among the last window, jobs in it, failed in the window before it);
    ``recent`` is newest first, as in the snapshot."""
    last, before = recent[:FAILURE_WINDOW], recent[FAILURE_WINDOW:2 * FAILURE_WINDOW]

    def failed(outcomes: Sequence[OutcomeView]) -> int:
        return sum(1 for o in outcomes if o.outcome not in GOOD_OUTCOMES)

    return failed(last), len(last), failed(before)


def failures_rising(recent: Sequence[OutcomeView]) -> bool:
    now, seen, before = failure_counts(recent)
    return seen >= FAILURE_WINDOW and now >= FAILURE_MIN and now > before


def _link(snap: Snapshot) -> list[Problem]:
    c = snap.connection
    if c.link is Link.AUTH_REFUSED:
        why = f" ({c.reason})" if c.reason else ""
        return [Problem("auth", "the coordinator refused the miner key: check it" + why,
                        "check the miner key" + why, AUTH_REFUSED)]
    if c.link is not Link.BACKING_OFF:
        return []
    status = answered_status(c.reason)
    if status:
        return [Problem("link", f"coordinator answers {status}: {c.reason}",
                        f"answers {status}", OFFLINE)]
    return [Problem("link", "coordinator unreachable: " + (c.reason or "no answer"),
                    "why: " + (c.reason or "no answer"), OFFLINE)]


def problems(snap: Snapshot) -> tuple[Problem, ...]:
    """The rig's current problems, the most pressing first."""
    found = [Problem(f"warning:{w}", w, w.partition(":")[0].upper()) for w in snap.warnings]
    found += _link(snap)
    for gpu in snap.gpu.gpus:
        if gpu.state == "lost":
            found.append(Problem(f"gpu-lost:{gpu.uuid}", f"GPU {gpu.index} LOST"
                                 + (f" ({gpu.lost_reason})" if gpu.lost_reason else ""),
                                 f"GPU {gpu.index} LOST", GPU_LOST))
        elif gpu.hot:  # the engine's verdict
            temp = "" if gpu.temperature_c is None else f" {gpu.temperature_c:.0f} °C"
            found.append(Problem(f"gpu-hot:{gpu.uuid}", f"GPU {gpu.index} HOT{temp}",
                                 f"GPU {gpu.index} HOT{temp}", GPU_HOT, "warning"))
    d = snap.disk
    if d.low:
        found.append(Problem("disk", f"data disk low: {d.free_mb:g} MB free, floor "
                             f"{d.floor_mb:g} MB", f"DISK LOW {d.free_mb:g}/{d.floor_mb:g} MB"))
    if snap.outbox and snap.connection.link is not Link.REGISTERED:
        n = snap.outbox
        found.append(Problem("undelivered", f"{n} outcome{'s' if n != 1 else ''} not "
                             "delivered while the link is down", f"{n} undelivered",
                             severity="warning"))
    if failures_rising(snap.recent):
        now, seen, before = failure_counts(snap.recent)
        found.append(Problem("failures", f"failures rising: {now} of the last {seen} jobs "
                             f"failed ({before} of the {seen} before)",
                             f"{now}/{seen} jobs failed", FAILURES, "warning"))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Alert:
    """A problem that has just appeared (or, with ``cleared``, one that has just gone)."""

    kind: str
    text: str
    severity: str
    cleared: bool = False


class AlertWatch:
    """Alerts once per transition: feed it each snapshot's problems."""

    def __init__(self) -> None:
        self._active: dict[str, Problem] = {}

    def feed(self, current: Sequence[Problem]) -> list[Alert]:
        now = {p.key: p for p in current if p.alert is not None}
        alerts = [Alert(p.alert or "", p.text, p.severity)
                  for key, p in now.items() if key not in self._active]
        link_alerts = (OFFLINE, AUTH_REFUSED)
        was_down = any(p.alert in link_alerts for p in self._active.values())
        if was_down and not any(p.alert in link_alerts for p in now.values()):
            alerts.append(Alert("ONLINE", "the coordinator answers again", "information",
                                cleared=True))
        self._active = now
        return alerts
