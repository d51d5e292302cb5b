"""The jobs and receipts tables: sort (``s``, ``S``), search (``/``), and drill-down from a
receipt to its job and back, after the job has finished (read from the journal through
the engine: in-process, attached over the control socket, and over the fake)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine.snapshot import ReceiptView
from aitbc_miner.host.control import ControlServer
from aitbc_miner.host.remote import RemoteEngine
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, job_record, sample_events
from tui.screens import ConfirmScreen, JobDetailsScreen, ReceiptDetailsScreen
from tui.widgets.search import TableSearch

from .conftest import screen_text, until
from .test_layout import MODELS, busy_rig, settle


def console(engine: FakeEngine) -> MinerConsole:
    return MinerConsole(engine, theme="aitbc-dark", clock=lambda: T0, started_at=T0 - 7980,
                        prefs_path=None, tick=None)


@contextlib.asynccontextmanager
async def busy() -> AsyncIterator[tuple[FakeEngine, MinerConsole, Any]]:
    """A console at 120x34 over the busy rig: eight running jobs, 40 receipts."""
    engine = FakeEngine(busy_rig(), sample_events())
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        yield engine, app, pilot


def row_order(table: Any) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


# --- jobs ---------------------------------------------------------------------------------


async def test_s_sorts_the_jobs_by_each_column_and_shift_s_reverses() -> None:
    async with busy() as (engine, app, pilot):
        jobs = app.dashboard.jobs
        jobs.focus()
        await pilot.press("down", "down")
        chosen = jobs.selected_job_id
        claimed = row_order(jobs)
        assert claimed == [j.job_id for j in engine.snapshot().jobs]  # the engine's order
        await pilot.press("s")
        assert jobs.sort_by == "job" and row_order(jobs) == sorted(claimed)
        await pilot.press("s", "s")
        assert jobs.sort_by == "model"
        models = [str(jobs.get_cell(k, "model")) for k in row_order(jobs)]
        assert models == sorted(models)
        assert models[:4] == ["-"] * 4 and set(models[4:]) == set(MODELS)
        assert "model ▲" in str(jobs.columns["model"].label)
        assert "by model ▲" in str(jobs.border_title)
        await pilot.press("S")
        assert [str(jobs.get_cell(k, "model")) for k in row_order(jobs)] == models[::-1]
        assert "model ▼" in str(jobs.columns["model"].label)
        await pilot.press("s", "s")
        assert jobs.sort_by == "elapsed"
        elapsed = {j.job_id: T0 - j.started_at for j in engine.snapshot().jobs}
        assert row_order(jobs) == sorted(elapsed, key=elapsed.__getitem__)
        # the selected job stayed selected through every reordering
        assert jobs.selected_job_id == chosen
        # and a new snapshot keeps the order (the table is sorted again, not re-added)
        engine.publish(dataclasses.replace(engine.snapshot(), seq=5))
        await pilot.pause()
        assert row_order(jobs) == sorted(elapsed, key=elapsed.__getitem__)
        assert jobs.selected_job_id == chosen


async def test_slash_searches_the_jobs_and_letters_typed_at_once_go_into_the_search() -> None:
    async with busy() as (engine, app, pilot):
        jobs = app.dashboard.jobs
        jobs.focus()
        await pilot.pause()
        # "/" then "sha256" in one burst: had "s" or "d" reached the dashboard, it would
        # have sorted the table or asked to drain
        await pilot.press("slash", *"sha256")
        bar = app.dashboard.query_one(TableSearch)
        assert bar.display and bar.input.value == "sha256"
        assert jobs.sort_by == "claimed" and not isinstance(app.screen, ConfirmScreen)
        assert jobs.row_count == 2
        assert all(str(jobs.get_cell(k, "type")) == "sha256" for k in row_order(jobs))
        await pilot.press("enter")  # keep the search, back to the table
        assert not bar.display and app.focused is jobs
        assert '"sha256" 2 of 8' in str(jobs.border_title)
        engine.publish(dataclasses.replace(engine.snapshot(), seq=5))
        await pilot.pause()
        assert jobs.row_count == 2  # a new snapshot keeps the search
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"qwen")
        assert row_order(jobs) == ["a1c0ffee01d2e34f5a"]
        await pilot.press("escape")  # Esc clears it
        assert jobs.row_count == 8 and app.focused is jobs and not jobs.search_text
        assert "of 8" not in str(jobs.border_title)


async def test_slash_on_the_log_still_filters_the_log() -> None:
    async with busy() as (_engine, app, pilot):
        await pilot.press("l", "slash")
        assert not app.dashboard.query_one(TableSearch).display


# --- receipts -----------------------------------------------------------------------------


async def test_s_sorts_the_receipts_and_the_selected_one_stays_selected() -> None:
    async with busy() as (engine, app, pilot):
        table = app.dashboard.receipts
        table.focus()
        await pilot.press("down", "down", "down")
        chosen = table.selected
        assert chosen is not None
        shown = lambda: [table.row(i) for i in range(len(table))]  # noqa: E731
        await pilot.press("s")
        assert table.sort_by == "job"
        assert [r.job_id for r in shown()] == sorted(r.job_id for r in shown())
        assert table.selected == chosen
        await pilot.press("s")  # units: the most first
        units = [r.units for r in shown()]
        assert units == sorted(units, reverse=True) and len(units) == 40
        await pilot.press("S")
        assert [r.units for r in shown()] == sorted(units)
        assert "units ▲" in screen_text(app) and "by units ▲" in str(table.border_title)
        await pilot.press("s")  # price, the most first
        assert [r.price for r in shown()] == sorted((r.price for r in shown()), reverse=True)
        assert table.selected == chosen
        # a receipt arriving while sorted goes where the sort puts it
        top = ReceiptView("r9999999", "feedbeef", T0, 99.0, "gpu_seconds", 9.99, "valid_pinned",
                          "", True, False)
        snap = engine.snapshot()
        engine.publish(dataclasses.replace(
            snap, seq=9, receipts=(top, *snap.receipts),
            counters=dataclasses.replace(snap.counters, receipts=41)))
        await pilot.pause()
        assert table.row(0).receipt_id == "r9999999" and len(table) == 41
        assert table.selected == chosen
        await pilot.press("s", "s")  # back to time, newest first
        assert table.sort_by == "time" and table.row(0).receipt_id == "r9999999"
        assert [r.received_at for r in shown()] == sorted((r.received_at for r in shown()),
                                                            reverse=True)


async def test_slash_searches_the_receipts() -> None:
    async with busy() as (engine, app, pilot):
        table = app.dashboard.receipts
        table.focus()
        await pilot.pause()
        await pilot.press("slash", *"invalid", "enter")
        flagged = [r for r in engine.snapshot().receipts if not r.counted]
        assert len(table) == len(flagged) == 5
        assert all(not table.row(i).counted for i in range(len(table)))
        assert '"invalid" 5 of 40' in str(table.border_title)
        one = flagged[2]
        await pilot.press("slash", "ctrl+a", "ctrl+k", *one.job_id[:8], "enter")
        assert len(table) == 1 and table.selected == one
        await pilot.press("enter")  # details of what the search found
        assert isinstance(app.screen, ReceiptDetailsScreen) and app.screen.receipt == one
        await pilot.press("escape", "slash", "escape")
        assert len(table) == 40 and not table.search_text


# --- drill-down ---------------------------------------------------------------------------


def finished(engine: FakeEngine, job_id: str, **kwargs: Any) -> ReceiptView:
    """The fake's job ends: its record stays in the "journal", its receipt arrives."""
    receipt = ReceiptView(f"r-{job_id[:8]}", job_id, T0, 11.8, "gpu_seconds", 0.2369,
                          "valid_pinned", "", True, False)
    record = job_record(job_id, payload={"type": "inference", "model": "qwen2.5-coder:32b-instruct",
                                         "prompt": "Write a haiku about GPUs",
                                         "api_token": "***"}, **kwargs)
    engine.finish(job_id, record, receipt)
    return receipt


async def test_receipt_to_job_and_back_after_the_job_has_finished() -> None:
    job_id = "a1c0ffee01d2e34f5a"
    async with busy() as (engine, app, pilot):
        # a running job's details offer cancel
        jobs = app.dashboard.jobs
        jobs.focus()
        await pilot.press("down", "enter")
        assert isinstance(app.screen, JobDetailsScreen) and app.screen.job_id == job_id
        assert "c cancel this job" in screen_text(app)
        await pilot.press("escape")
        # when the job has finished and its receipt has come
        receipt = finished(engine, job_id)
        await until(pilot, lambda: job_id not in jobs.rows)
        table = app.dashboard.receipts
        table.focus()
        await pilot.press("home", "enter")
        assert isinstance(app.screen, ReceiptDetailsScreen) and app.screen.receipt == receipt
        assert "j its job" in screen_text(app)
        # then j shows the job, read from the journal: its real outcome, and no cancel
        await pilot.press("j")
        details = app.screen
        assert isinstance(details, JobDetailsScreen) and details.job_id == job_id
        await until(pilot, lambda: "COMPLETED" in screen_text(app), what="the outcome")
        text = screen_text(app)
        assert engine.record_reads[-1] == job_id  # the journal, through the engine
        assert "finished: COMPLETED · delivered to the coordinator" in text
        assert "duration  │ 12 s" in text and "slot      │ gpu:0/0" in text
        assert receipt.receipt_id in text and "✓ pinned" in text
        # payload keys and values in two columns, a bar between them; the token masked
        assert "model     │ qwen2.5-coder:32b-instruct" in text
        assert "api_token │ ***" in text
        assert "cancel" not in text.lower().split("events and log")[0]
        assert "r its receipt · Esc close" in text
        await pilot.press("c")  # not offered, and does nothing
        assert app.screen is details and engine.calls == []
        # r goes back to the receipt it came from (not a new view on top)
        await pilot.press("r")
        assert isinstance(app.screen, ReceiptDetailsScreen)
        assert len(app.screen_stack) == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, (ReceiptDetailsScreen, JobDetailsScreen))


async def test_a_failed_job_shows_its_error_and_r_opens_its_receipt() -> None:
    job_id = "b0beef0077aa4410"
    async with busy() as (engine, app, pilot):
        jobs = app.dashboard.jobs
        jobs.focus()
        await pilot.press("down", "down", "down", "down", "enter")  # the sha256 job on cpu:0
        details = app.screen
        assert isinstance(details, JobDetailsScreen) and details.job_id == job_id
        # the job fails while its details are open: they follow it, and cancel goes
        receipt = finished(engine, job_id, job_type="sha256", error_code="E_TIMEOUT",
                           error_message="the job ran past its 600 s timeout")
        await until(pilot, lambda: "FAILED" in screen_text(app), what="the failure")
        text = screen_text(app)
        assert "error     │ E_TIMEOUT" in text
        assert "message   │ the job ran past its 600 s timeout" in text
        assert "cancel" not in text.lower().split("events and log")[0]
        # r opens its receipt on top; j from there goes back
        await pilot.press("r")
        assert isinstance(app.screen, ReceiptDetailsScreen) and app.screen.receipt == receipt
        await pilot.press("j")
        assert app.screen is details


async def test_a_receipt_whose_job_the_journal_does_not_know_says_so() -> None:
    async with busy() as (engine, app, pilot):
        app.dashboard.receipts.focus()
        await pilot.press("enter", "j")
        assert isinstance(app.screen, JobDetailsScreen)
        await until(pilot, lambda: "not in its journal" in screen_text(app))


async def _drill_down(app: MinerConsole, job_id: str) -> None:
    async with app.run_test(size=(120, 34)) as pilot:
        table = app.dashboard.receipts
        await until(pilot, lambda: any(table.row(i).job_id == job_id for i in range(len(table))),
                    what="the job's receipt")
        table.focus()
        await pilot.press("slash", *job_id[:12], "enter", "enter")
        assert isinstance(app.screen, ReceiptDetailsScreen)
        assert app.screen.receipt.job_id == job_id
        await pilot.press("j")
        assert isinstance(app.screen, JobDetailsScreen)
        await until(pilot, lambda: "COMPLETED" in screen_text(app), what="the outcome")
        text = screen_text(app)
        assert "finished: COMPLETED · delivered to the coordinator" in text
        assert "seconds │ 0.1" in text  # the payload, from the journal
        assert "✓ pinned" in text and "c cancel" not in text
        await pilot.press("r")
        assert isinstance(app.screen, ReceiptDetailsScreen) and len(app.screen_stack) == 2


async def test_drill_down_over_a_real_engine_after_the_job_has_finished(
        live: Any, devnet: Devnet) -> None:
    engine, app = await live(cpu=1)
    job = await devnet.submit_job({"type": "sleep", "seconds": 0.1})
    job_id = str(job["job_id"])
    await engine.wait_until(lambda s: s.counters.receipts >= 1 and s.job(job_id) is None,
                            timeout=20)
    await _drill_down(app, job_id)


async def test_drill_down_over_an_attached_console(
        devnet: Devnet, make_engine: Any, run_engine: Any, console_factory: Any,
        tmp_path: Path) -> None:
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    server = ControlServer(engine, tmp_path / "ctl" / "control.sock")
    await server.start()
    run_engine(engine)
    remote = RemoteEngine(server.path, read_only=True)
    try:
        job = await devnet.submit_job({"type": "sleep", "seconds": 0.1})
        job_id = str(job["job_id"])
        await engine.wait_until(lambda s: s.counters.receipts >= 1 and s.job(job_id) is None,
                                timeout=20)
        await remote.connect()
        record = await remote.job_record(job_id)
        assert record is not None and record.outcome is not None
        assert record.outcome.value == "completed" and record.payload["seconds"] == "0.1"
        assert [r.job_id for r in await remote.job_receipts(job_id)] == [job_id]
        assert await remote.job_record("no-such-job") is None
        await _drill_down(console_factory(remote), job_id)
    finally:
        await remote.close()
        await server.stop()
