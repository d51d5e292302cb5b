"""Every key against a real engine and the reference coordinator: the engine's state
changes (read from ``engine.snapshot()``) and the screen shows it (read from the screen)."""

from __future__ import annotations

import json
from typing import Any

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Mode
from tui.screens import (
    ConfirmScreen,
    HelpScreen,
    JobDetailsScreen,
    QuitScreen,
    ReceiptDetailsScreen,
)
from tui.widgets.events import EventLog

from .conftest import screen_text, until, until_exited


async def sleep_job(devnet: Devnet, seconds: float = 30.0) -> str:
    return str((await devnet.submit_job({"type": "sleep", "seconds": seconds}))["job_id"])


def header(app: Any) -> str:
    return screen_text(app).splitlines()[0]


async def test_p_pauses_and_resumes_claiming(live: Any) -> None:
    engine, app = await live()
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in header(app))
        await pilot.press("p")
        assert engine.snapshot().mode is Mode.PAUSED
        await until(pilot, lambda: "PAUSED" in header(app), what="header says PAUSED")
        await until(pilot, lambda: "p Resume" in screen_text(app).splitlines()[-1],
                    what="the footer offers Resume")
        await pilot.press("p")
        assert engine.snapshot().mode is Mode.RUNNING
        await until(pilot, lambda: "RUNNING" in header(app), what="header says RUNNING")


async def test_d_drains_after_confirming_and_shift_d_undrains(live: Any, devnet: Devnet) -> None:
    engine, app = await live()
    await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 1)
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # declined: nothing changes
        assert engine.snapshot().mode is Mode.RUNNING
        await pilot.press("d", "y")
        assert engine.snapshot().mode is Mode.DRAINING
        await until(pilot, lambda: "DRAINING 1 left" in header(app), what="DRAINING 1 left")
        await pilot.press("D")
        assert engine.snapshot().mode is Mode.RUNNING
        await until(pilot, lambda: "RUNNING" in header(app))


async def test_c_cancels_the_selected_job_after_confirming(live: Any, devnet: Devnet,
                                                          eventually: Any) -> None:
    engine, app = await live(cpu=2)
    first, second = await sleep_job(devnet), await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 2)
    async with app.run_test(size=(120, 34)) as pilot:
        jobs = app.dashboard.jobs
        await until(pilot, lambda: jobs.row_count == 2)
        await pilot.press("down")
        target = jobs.selected_job_id
        assert target in (first, second)
        other = first if target == second else second
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        assert target in screen_text(app)
        await pilot.press("y")
        snap = await engine.wait_until(lambda s: s.job(target) is None and s.counters.canceled == 1)
        assert snap.job(other) is not None  # only the selected one
        await until(pilot, lambda: target not in jobs.rows and jobs.row_count == 1)
        assert jobs.selected_job_id == other
        await eventually(lambda: "E_CANCELED" in str(devnet.jobs[target].get("error")),
                         what="the coordinator hears E_CANCELED")


async def test_the_job_selection_survives_updates(live: Any, devnet: Devnet) -> None:
    engine, app = await live(cpu=3)
    short = await sleep_job(devnet, 0.6)
    await sleep_job(devnet)
    await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 3)
    async with app.run_test(size=(120, 34)) as pilot:
        jobs = app.dashboard.jobs
        await until(pilot, lambda: jobs.row_count == 3)
        order = [str(key.value) for key in jobs.rows]
        # a row below the short job's: its removal would shift a cursor kept by index
        target = max(i for i, job_id in enumerate(order) if job_id != short)
        await pilot.press("home", *["down"] * target)
        chosen = jobs.selected_job_id
        assert chosen == order[target] != short
        await until(pilot, lambda: short not in jobs.rows, what="the short job's row goes")
        await pilot.pause(0.5)  # several snapshots and ticks later
        assert jobs.selected_job_id == chosen


async def test_enter_opens_job_then_receipt_details(live: Any, devnet: Devnet) -> None:
    engine, app = await live(cpu=2)
    done = await sleep_job(devnet, 0.1)
    await engine.wait_until(lambda s: s.counters.receipts >= 1, timeout=20)
    running = await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 1)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.dashboard.jobs.row_count == 1)
        await pilot.press("enter")
        assert isinstance(app.screen, JobDetailsScreen)
        await until(pilot, lambda: running in screen_text(app) and "cpu:" in screen_text(app))
        await pilot.press("escape")
        receipts = app.dashboard.receipts
        await until(pilot, lambda: len(receipts) >= 1)
        receipts.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, ReceiptDetailsScreen)
        receipt = engine.snapshot().receipts[0]
        assert receipt.job_id == done
        text = screen_text(app)
        assert receipt.receipt_id in text and "✓ pinned" in text and '"verdict"' in text
        shown = json.loads(str(app.screen.query_one("#json").content))
        assert shown["receipt_id"] == receipt.receipt_id and shown["verdict"] == "valid_pinned"
        await pilot.press("escape")
        assert not isinstance(app.screen, ReceiptDetailsScreen)


async def test_l_focuses_the_log_and_ampersand_filters_it(live: Any, devnet: Devnet) -> None:
    engine, app = await live()
    async with app.run_test(size=(120, 34)) as pilot:
        job = await sleep_job(devnet, 0.1)  # its events reach the console's log
        await engine.wait_until(lambda s: s.counters.delivered >= 1, timeout=20)
        panel = app.dashboard.events
        await pilot.press("l")
        assert isinstance(app.focused, EventLog)
        await until(pilot, lambda: any(getattr(e, "job_id", None) == job for e in panel.events))
        await pilot.press("ampersand")  # in the log & filters (/ searches)
        await pilot.press(*job[:8], "enter")
        assert panel.filter.job == job[:8]
        assert f"job {job[:8]}" in panel.border_title
        lines = [str(panel.log_view.get_option_at_index(i).prompt)
                 for i in range(panel.log_view.option_count)]
        assert lines and all(job[:8] in line for line in lines)
        await pilot.press("ampersand", "ctrl+a", "ctrl+k", "e", "r", "r", "o", "r", "enter")
        assert panel.filter.min_level == "ERROR" and not panel.filter.job
        assert all("ERROR" in str(panel.log_view.get_option_at_index(i).prompt)
                   for i in range(panel.log_view.option_count))
        await pilot.press("ampersand", "ctrl+a", "ctrl+k", "enter")
        assert panel.filter.is_default


async def test_t_switches_theme_and_remembers_it(live: Any, console_factory: Any,
                                                 tmp_path: Any) -> None:
    engine, app = await live(theme=None)
    async with app.run_test(size=(120, 34)) as pilot:
        assert app.theme == "aitbc-dark"
        await pilot.press("t")
        assert app.theme == "aitbc-light"
        await pilot.press("t")
        assert app.theme == "aitbc-ansi"
    prefs = tmp_path / "state" / "console.json"
    assert json.loads(prefs.read_text())["theme"] == "aitbc-ansi"
    again = console_factory(engine, theme=None, default_theme="aitbc-dark")
    async with again.run_test(size=(80, 24)):
        assert again.theme == "aitbc-ansi"  # remembered beats the config's default
    explicit = console_factory(engine, theme="aitbc-light")
    async with explicit.run_test(size=(80, 24)):
        assert explicit.theme == "aitbc-light"  # --theme beats what was remembered


async def test_question_mark_shows_help(live: Any) -> None:
    engine, app = await live()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "drain" in screen_text(app) and "AUTH REFUSED" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert engine.snapshot().mode is Mode.RUNNING


async def test_the_command_palette_runs_the_same_commands(live: Any) -> None:
    engine, app = await live()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"pause claiming")
        await until(pilot, lambda: "Pause claiming" in screen_text(app))
        await pilot.press("enter")
        await engine.wait_until(lambda s: s.mode is Mode.PAUSED, timeout=5)
        await until(pilot, lambda: "PAUSED" in header(app))


async def test_q_with_nothing_running_quits_at_once(live: Any) -> None:
    engine, app = await live()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("q")
        await until_exited(app)
    assert app.return_code == 0
    assert engine.snapshot().mode is Mode.RUNNING  # the host stops the engine after the UI


async def test_q_then_stay_keeps_everything_running(live: Any, devnet: Devnet) -> None:
    engine, app = await live()
    await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 1)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.dashboard.jobs.row_count == 1)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        assert "drain" in screen_text(app) and "cancel" in screen_text(app)
        await pilot.press("s")
        assert not isinstance(app.screen, QuitScreen)
        assert app.is_running and engine.snapshot().mode is Mode.RUNNING
        assert engine.snapshot().running == 1


async def test_q_then_drain_waits_for_the_job_then_quits(live: Any, devnet: Devnet) -> None:
    engine, app = await live()
    job = await sleep_job(devnet, 1.5)
    await engine.wait_until(lambda s: s.running == 1)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.dashboard.jobs.row_count == 1)
        await pilot.press("q", "d")
        assert engine.snapshot().mode is Mode.DRAINING
        await until(pilot, lambda: "DRAINING 1 left" in header(app), what="DRAINING 1 left")
        await until_exited(app)
    assert app.return_code == 0
    snap = engine.snapshot()
    assert snap.counters.completed == 1 and snap.counters.canceled == 0  # the result is kept
    assert devnet.jobs[job]["state"] == "COMPLETED"


async def test_q_then_cancel_reports_e_canceled_and_quits(live: Any, devnet: Devnet,
                                                         eventually: Any) -> None:
    engine, app = await live()
    job = await sleep_job(devnet)
    await engine.wait_until(lambda s: s.running == 1)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.dashboard.jobs.row_count == 1)
        await pilot.press("q", "c")
        await until_exited(app)
    assert app.return_code == 0
    await eventually(lambda: "E_CANCELED" in str(devnet.jobs[job].get("error")),
                     what="the coordinator hears E_CANCELED")
    assert engine.snapshot().counters.canceled == 1


async def test_keys_act_at_once_while_the_coordinator_is_slow(live: Any, devnet: Devnet) -> None:
    """Every coordinator answer hangs for an hour: the console still acts on every key, so
    none of them can have waited on the coordinator."""
    engine, app = await live()
    hang = devnet.inject("*", "delay", delay=3600, times=None)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: hang.hits > 0)  # the engine's requests are now hanging
        await pilot.press("p")
        assert engine.snapshot().mode is Mode.PAUSED
        await until(pilot, lambda: "PAUSED" in header(app))
        await pilot.press("p")
        await until(pilot, lambda: "RUNNING" in header(app))
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
    devnet.faults.clear()
