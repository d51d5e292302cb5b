"""Dialogs that tell the truth while they are open (issue 11): the quit and drain dialogs
follow the live snapshot, count waiting jobs as waiting, and re-check on confirm; a
read-only attached console binds no command key, and pressing one sends nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aitbc_miner.engine.snapshot import RunningJob, Snapshot
from tui.app import COMMAND_ACTIONS, MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot
from tui.screens import ConfirmScreen, QuitScreen

from .conftest import RICH_TERMINAL, screen_text, until, until_exited


def console(engine: Any) -> MinerConsole:
    return MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None,
                        theme="aitbc-dark", environ=RICH_TERMINAL)


def with_jobs(snap: Snapshot, seq: int, jobs: tuple[RunningJob, ...]) -> Snapshot:
    return dataclasses.replace(snap, seq=seq, jobs=jobs)


def waiting(job: RunningJob, job_id: str) -> RunningJob:
    return dataclasses.replace(job, job_id=job_id, slot_id=None, started_at=None,
                               state="queued")


@asynccontextmanager
async def pressed_on_a_busy_rig(key: str) -> AsyncIterator[tuple[Snapshot, FakeEngine,
                                                                 MinerConsole, Any]]:
    """A console over a rig running 3 jobs, after ``key``: (snapshot, engine, app, pilot)."""
    base = sample_snapshot("busy")
    engine = FakeEngine(base)
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in screen_text(app))
        await pilot.press(key)
        yield base, engine, app, pilot


async def test_the_quit_dialog_follows_the_rig_while_open() -> None:
    async with pressed_on_a_busy_rig("q") as (base, engine, app, pilot):
        assert isinstance(app.screen, QuitScreen)
        await until(pilot, lambda: "3 jobs are still running." in screen_text(app))
        # one job finished, another was claimed and waits for a slot
        one, *_ = base.jobs
        engine.publish(with_jobs(base, 2, (one, waiting(one, "aa00bb11cc22dd33"))))
        await until(pilot, lambda: "1 job is still running and 1 waiting for a slot"
                    in screen_text(app), what="the dialog's new counts")
        assert "DRAINING 2 left" in screen_text(app)
        # only the waiting one is left: it is waiting, not running
        engine.publish(with_jobs(base, 3, (waiting(one, "aa00bb11cc22dd33"),)))
        await until(pilot, lambda: "1 job is waiting for a slot" in screen_text(app))
        assert "still running" not in screen_text(app)
        # everything finished: quitting loses nothing, and d quits at once without a drain
        engine.publish(with_jobs(base, 4, ()))
        await until(pilot, lambda: "Nothing is running any more" in screen_text(app))
        await pilot.press("d")
        await until_exited(app)
    assert [name for name, _ in engine.calls] == []


async def test_the_drain_dialog_counts_follow_the_rig() -> None:
    async with pressed_on_a_busy_rig("d") as (base, engine, app, pilot):
        assert isinstance(app.screen, ConfirmScreen)
        dialog = app.screen
        assert "the 3 running job(s) finish" in dialog.question
        one, two, _ = base.jobs
        engine.publish(with_jobs(base, 2, (one, two, waiting(one, "aa00bb11cc22dd33"))))
        await until(pilot, lambda: "the 2 running job(s) and the 1 waiting for a slot finish"
                    in dialog.question, what="the drain dialog's new counts")
        assert "waiting for a slot" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: ("drain", (False, None)) in engine.calls)


class ReadOnlyViewer(FakeEngine):
    """What ``aitbc-miner attach --read-only`` gives the console: an attached viewer."""

    attached = True
    read_only = True
    detached_quit = True
    socket_path = "/run/aitbc-miner/control.ro.sock"
    disconnected_since = None


async def test_a_read_only_attached_console_binds_no_command_key() -> None:
    engine = ReadOnlyViewer(sample_snapshot("busy"))
    app = console(engine)
    async with app.run_test(size=(120, 34), notifications=True) as pilot:
        await until(pilot, lambda: "READ-ONLY" in screen_text(app).splitlines()[0])
        bound = {b.binding.action for b in app.active_bindings.values()}
        assert not bound & COMMAND_ACTIONS, bound & COMMAND_ACTIONS
        assert {"help", "quit_console"} <= bound
        await pilot.press("p", "d", "D", "c")
        assert app.screen is app.screen_stack[0]  # no confirmation opened
        await until(pilot, lambda: "read-only: this console only watches" in screen_text(app))
        assert engine.calls == []  # nothing was sent
        await pilot.press("q")  # a viewer leaves at once: the agent runs on
        await until_exited(app)
    assert engine.calls == []
