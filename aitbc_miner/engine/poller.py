"""The poll loop: claim work whenever a slot can take it, and not otherwise.

The coordinator never long-polls (spec fact 1), so the cadence is ours: right after a
claim we ask again at once (a free slot should not wait), and after empty answers we
back off from ``poll.min_interval_s`` to ``poll.max_interval_s``. An idle miner thus
costs a coordinator about one request per ``max_interval_s`` (1 s by default: ~60/min,
under 2026-08's limit of 100 polls/min per IP) and picks new work up within that time;
a busy one costs one poll per claimed job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..backoff import Backoff, idle_interval
from ..coordinator import (
    AuthRefused,
    NotRegistered,
    ProtocolViolation,
    RateLimited,
    Rejected,
    Unavailable,
    Uncertain,
)
from ..protocol import AssignedJob
from .core import Core
from .snapshot import AuthRefusedEvent, BackingOff, Link, ProtocolProblem

StartJob = Callable[[AssignedJob | dict[str, Any]], Awaitable[None]]


class Poller:
    def __init__(self, core: Core, start_job: StartJob) -> None:
        self.core = core
        self.start_job = start_job
        self.backoff = Backoff(rng=core.rng)
        self._idle_polls = 0
        self._last_problem: str | None = None

    def _blocked_by(self) -> str | None:
        """Why we may not poll now, or None."""
        core = self.core
        if core.disk.low and core.disk.reason:
            return core.disk.reason
        if not core.claiming:
            return f"not claiming ({core.mode.value})"
        if core.need_register or core.link is not Link.REGISTERED:
            return "waiting for registration"
        if not core.capacity_free():
            return "all slots busy"
        return None

    async def run(self) -> None:
        core = self.core
        while True:
            blocked = self._blocked_by()
            if blocked:
                core.set_loop("poll", blocked)
                await core.wake_poll.wait()
                core.wake_poll.clear()
                self._idle_polls = 0  # something changed here: ask again at full pace
                continue
            delay = await self._poll_once()
            # A freed slot may cut an idle wait short, never a backoff after an error:
            # the coordinator's Retry-After (or our backoff) is honoured in full.
            wake = core.wake_poll if self.backoff.attempt == 0 else None
            if delay > 0 and await core.sleep(delay, wake):
                core.wake_poll.clear()
                self._idle_polls = 0

    async def _poll_once(self) -> float:
        """Poll once; returns how long to wait before the next poll."""
        core = self.core
        core.polls_in_flight = 1
        try:
            job = await core.client.poll()
        except NotRegistered:
            core.need_register = True
            core.wake_session.set()
            return 0.0  # blocked until the session registers again
        except AuthRefused as exc:
            core.set_link(Link.AUTH_REFUSED, f"poll answered {exc.message}")
            core.emit(AuthRefusedEvent(at=core.clock(), endpoint="poll", status=exc.status,
                                       message=f"the coordinator refused the miner key on poll "
                                       f"({exc.message}); claiming stopped"))
            return 0.0
        # Any other refusal (422, an unexpected 404) is shown and retried with backoff.
        except (Unavailable, ProtocolViolation, Rejected) as exc:
            if isinstance(exc, Uncertain | ProtocolViolation):
                # The coordinator may have handed us a job we never got to read: its
                # inflight count is one too high until a heartbeat says otherwise.
                core.wake_session.set()
            delay = self.backoff.next_delay(
                exc.retry_after if isinstance(exc, RateLimited) else None)
            self._report(exc, delay)
            return delay
        finally:
            core.polls_in_flight = 0
        self.backoff.reset()
        self._last_problem = None
        if job is None:
            self._idle_polls += 1
            delay = idle_interval(self._idle_polls, core.tuning.poll_min_s,
                                  core.tuning.poll_max_s, core.rng)
            core.poll_interval_s = delay
            core.set_loop("poll", f"no work; polling every {delay:.2f}s")
            return delay
        self._idle_polls = 0
        core.poll_interval_s = core.tuning.poll_min_s
        core.set_loop("poll", "claimed a job; polling again")
        await self.start_job(job)
        return 0.0

    def _report(self, exc: Unavailable | ProtocolViolation | Rejected, delay: float) -> None:
        core = self.core
        reason = str(exc)
        core.set_loop("poll", f"backing off {delay:.1f}s after {reason}", reason)
        kind = f"{type(exc).__name__} {exc.status}"  # not the text: it may quote a job id
        if kind == self._last_problem:
            return  # logged once per streak
        self._last_problem = kind
        if isinstance(exc, ProtocolViolation):
            core.emit(ProtocolProblem(at=core.clock(), endpoint="poll", status=exc.status,
                                      message=f"malformed answer from {reason}"))
        core.emit(BackingOff(at=core.clock(), loop="poll", delay_s=round(delay, 3),
                             attempt=self.backoff.attempt, reason=reason,
                             message=f"{reason}; polling again in {delay:.1f}s"))
