"""The truth, loudly (issue 11): a failed job is a WARN line in the warning colour, the
header counts the current problems, and OFFLINE, AUTH REFUSED, GPU LOST, GPU HOT and rising
failures each make one toast when they appear, however many snapshots repeat them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from aitbc_miner.engine.snapshot import (
    DiskView,
    JobFinished,
    Link,
    OutcomeDelivered,
    OutcomeView,
    Snapshot,
)
from tui.alerts import AlertWatch, failures_rising, problems
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot
from tui.palette import Palette
from tui.widgets.events import EventLog
from tui.widgets.header import line_one, line_two

from .conftest import RICH_TERMINAL, screen_text, until


def console(engine: FakeEngine, **kwargs: Any) -> MinerConsole:
    return MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None,
                        theme="aitbc-dark", environ=RICH_TERMINAL, **kwargs)


class Toasts:
    """Every ``notify`` the console makes, in order (the toasts themselves expire)."""

    def __init__(self, app: MinerConsole) -> None:
        self.seen: list[tuple[str, str, str]] = []
        real = app.notify

        def notify(message: str, **kwargs: Any) -> None:
            self.seen.append((kwargs.get("title", ""), message, kwargs.get("severity", "")))
            real(message, **kwargs)

        app.notify = notify  # type: ignore[method-assign]

    def titled(self, title: str) -> list[tuple[str, str, str]]:
        return [t for t in self.seen if t[0] == title]


def offline(snap: Snapshot, seq: int, reason: str = "connect error: connection refused"
            ) -> Snapshot:
    return dataclasses.replace(snap, seq=seq, connection=dataclasses.replace(
        snap.connection, link=Link.BACKING_OFF, reason=reason, backoff_until=T0 + 4))


def lost_gpu(snap: Snapshot, seq: int) -> Snapshot:
    return dataclasses.replace(sample_snapshot("lost_gpu"), seq=seq,
                               connection=snap.connection)


def outcomes(*kinds: str) -> tuple[OutcomeView, ...]:
    """Newest first, as in the snapshot."""
    return tuple(OutcomeView(f"j{i:03d}", "sleep", kind, None if kind == "completed"
                             else "E_TIMEOUT", T0 - i, 1.0) for i, kind in enumerate(kinds))


async def test_offline_and_gpu_lost_toast_once_per_transition() -> None:
    # Given a console over a healthy busy rig
    base = sample_snapshot("busy")
    engine = FakeEngine(base)
    app = console(engine)
    async with app.run_test(size=(120, 34), notifications=True) as pilot:
        toasts = Toasts(app)
        await until(pilot, lambda: "RUNNING" in screen_text(app))
        assert toasts.seen == []
        # When the link goes down, and five more snapshots say it is still down
        for seq in range(2, 8):
            engine.publish(offline(base, seq))
            await until(pilot, lambda s=seq: app.latest is not None and app.latest.seq == s)
        # Then one OFFLINE toast, in red and in words, and it is on the screen
        assert toasts.titled("OFFLINE") == [
            ("OFFLINE", "coordinator unreachable: connect error: connection refused", "error")]
        await until(pilot, lambda: "coordinator unreachable" in screen_text(app), what="toast")
        # When a GPU is lost as well (still offline), then one GPU LOST toast
        for seq in range(8, 11):
            engine.publish(offline(lost_gpu(base, seq), seq))
            await until(pilot, lambda s=seq: app.latest is not None and app.latest.seq == s)
        assert [m for _, m, _ in toasts.titled("GPU LOST")] == ["GPU 1 LOST (NVML: GPU is lost)"]
        assert len(toasts.titled("OFFLINE")) == 1
        # When the link comes back, it says so once; when it drops again, a second OFFLINE
        engine.publish(lost_gpu(base, 11))
        await until(pilot, lambda: bool(toasts.titled("ONLINE")))
        engine.publish(offline(lost_gpu(base, 12), 12, "/v1/miners/poll: 503 busy"))
        await until(pilot, lambda: len(toasts.titled("OFFLINE")) == 2)
        assert toasts.titled("OFFLINE")[1][1] == (
            "coordinator answers 503: /v1/miners/poll: 503 busy")
        assert len(toasts.titled("GPU LOST")) == 1 and len(toasts.titled("ONLINE")) == 1


@pytest.mark.parametrize(("bell", "rings"), [(False, 0), (True, 2)])
async def test_the_bell_rings_with_each_alert_when_configured(bell: bool, rings: int) -> None:
    base = sample_snapshot("busy")
    engine = FakeEngine(base)
    app = console(engine, bell=bell)
    rung: list[int] = []
    app.bell = lambda: rung.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(120, 34)) as pilot:
        for seq in range(2, 5):  # OFFLINE and GPU LOST, then the same again
            engine.publish(offline(lost_gpu(base, seq), seq))
            await until(pilot, lambda s=seq: app.latest is not None and app.latest.seq == s)
        engine.publish(lost_gpu(base, 5))  # back online: a toast, but no bell
        await until(pilot, lambda: app.latest is not None and app.latest.seq == 5)
    assert len(rung) == rings


def test_problems_are_counted_from_snapshot_fields() -> None:
    base = sample_snapshot("busy")
    assert problems(base) == ()
    rig = dataclasses.replace(
        offline(lost_gpu(base, 2), 2), outbox=3, warnings=("jobs not sandboxed: no bwrap",),
        disk=DiskView("/data", free_mb=100, floor_mb=500, low=True))
    found = problems(rig)
    assert [p.key for p in found] == [
        "warning:jobs not sandboxed: no bwrap", "link", f"gpu-lost:{rig.gpu.gpus[1].uuid}",
        "disk", "undelivered"]
    assert [p.alert for p in found] == [None, "OFFLINE", "GPU LOST", None, None]
    # the header says how many, and line 2 names each one
    one = line_one(rig, T0, T0 - 60, 200, False, problem_count=len(found)).plain
    assert " 5 PROBLEMS " in one
    assert " PROBLEM" not in line_one(base, T0, T0 - 60, 200, False).plain
    auth = dataclasses.replace(base, connection=dataclasses.replace(
        base.connection, link=Link.AUTH_REFUSED, reason="401"))
    assert [(p.key, p.alert) for p in problems(auth)] == [("auth", "AUTH REFUSED")]
    # outcomes waiting while the link is up are routine, not a problem
    assert problems(dataclasses.replace(base, outbox=3)) == ()


def test_a_hot_gpu_is_a_problem_that_alerts() -> None:
    base = sample_snapshot("busy")
    hot = dataclasses.replace(base.gpu.gpus[0], temperature_c=91.0, hot=True)
    rig = dataclasses.replace(base, gpu=dataclasses.replace(base.gpu, gpus=(
        hot, base.gpu.gpus[1])))
    found = problems(rig)
    assert [(p.key, p.alert, p.text) for p in found] == [
        (f"gpu-hot:{hot.uuid}", "GPU HOT", "GPU 0 HOT 91 °C")]
    watch = AlertWatch()
    assert [a.kind for a in watch.feed(found)] == ["GPU HOT"]
    assert watch.feed(problems(rig)) == []


def test_a_rising_failure_rate_alerts_once() -> None:
    ok, bad = "completed", "failed"
    assert not failures_rising(outcomes(bad, bad, bad))  # fewer than 10 jobs: too few to say
    assert not failures_rising(outcomes(bad, bad, *[ok] * 8, *[ok] * 10))  # 2 of 10
    rising = outcomes(bad, ok, bad, ok, bad, *[ok] * 5, bad, *[ok] * 9)  # 3 of 10, 1 before
    assert failures_rising(rising)
    assert not failures_rising(outcomes(bad, bad, bad, *[ok] * 7, bad, bad, bad, *[ok] * 7))
    assert not failures_rising(outcomes("canceled", "canceled", "canceled", *[ok] * 7))
    base = sample_snapshot("busy")
    watch = AlertWatch()
    alerts = [a.kind for seq in range(3)
              for a in watch.feed(problems(dataclasses.replace(base, recent=rising)))]
    assert alerts == ["FAILURES RISING"]
    assert watch.feed(problems(base)) == []  # cleared: no toast for that


def test_failed_jobs_are_warnings_in_the_engine_itself() -> None:
    def finished(outcome: str, code: str | None) -> JobFinished:
        return JobFinished(at=T0, job_id="j1", outcome=outcome, code=code)

    assert finished("completed", None).severity() == "INFO"
    assert finished("canceled", "E_CANCELED").severity() == "INFO"
    assert finished("failed", "E_TIMEOUT").severity() == "WARNING"
    assert finished("interrupted", "E_INTERRUPTED").severity() == "WARNING"
    assert finished("failed", "E_INTERNAL").severity() == "ERROR"
    assert finished("failed", "E_TIMEOUT").log_severity() == "DEBUG"  # a step; the line below
    delivered = OutcomeDelivered(at=T0, job_id="j1", endpoint="fail", attempts=1,
                                 outcome="failed", code="E_TIMEOUT")
    assert delivered.severity() == delivered.log_severity() == "WARNING"


async def test_a_failed_job_is_a_warn_line_in_the_warning_colour() -> None:
    failed = JobFinished(at=T0, job_id="71de33aa", outcome="failed", code="E_TIMEOUT",
                         message="job 71de33aa failed (E_TIMEOUT: ran past 30 s)")
    fine = JobFinished(at=T0, job_id="0c3b9e10", outcome="completed",
                       message="job 0c3b9e10 completed")
    app = console(FakeEngine(sample_snapshot("busy"), [failed, fine]))
    async with app.run_test(size=(120, 34)) as pilot:
        log = app.query_one(EventLog)
        await until(pilot, lambda: log.option_count == 2)
        bad, good = (log.get_option_at_index(i).prompt for i in range(2))
        assert bad.plain.startswith("12:00:00 WARN   FAILED E_TIMEOUT  job 71de33aa failed")
        assert good.plain.startswith("12:00:00 INFO  job 0c3b9e10 completed")
        warn = Palette(app).warn
        assert warn.color is not None
        coloured = {bad.plain[s.start:s.end] for s in bad.spans if warn.color == getattr(
            s.style, "color", None)}
        assert "WARN " in coloured and "job 71de33aa failed (E_TIMEOUT: ran past 30 s)" in coloured
        assert not any(warn.color == getattr(s.style, "color", None) for s in good.spans)
        assert "WARN   FAILED E_TIMEOUT" in screen_text(app)


def test_the_header_never_claims_to_poll_while_the_miner_does_not() -> None:
    running = sample_snapshot("busy")
    assert "poll 0.50 s · 1 in flight" in line_two(running, False).plain
    for snap in (sample_snapshot("paused"), sample_snapshot("draining"),
                 offline(running, 2), sample_snapshot("auth")):
        two = line_two(snap, False).plain
        assert "not polling" in two and "poll 0.50" not in two, two
