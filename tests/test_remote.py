"""A console attached to a running miner through its control socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aitbc_miner.config import load_settings
from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Mode
from aitbc_miner.host.cli import build_parser, socket_for
from aitbc_miner.host.control import ControlServer, read_only_socket_path
from aitbc_miner.host.remote import RemoteEngine
from tests.fakes.receipts import seed_receipts
from tests.tui.conftest import screen_text, until
from tui.app import MinerConsole
from tui.screens import JobDetailsScreen


async def _served(engine, tmp_path: Path) -> tuple[ControlServer, Path]:
    path = tmp_path / "ctl" / "control.sock"
    server = ControlServer(engine, path)
    await server.start()
    return server, path


async def _serving_a_job(devnet: Devnet, make_engine, run_engine,
                         tmp_path: Path) -> tuple[Any, ControlServer, Path]:
    """A running miner holding a sleeping job, served on its control sockets."""
    await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    server, path = await _served(engine, tmp_path)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    return engine, server, path


async def test_a_remote_engine_follows_and_steers_the_agent(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner with a sleeping job, and a viewer attached to its socket
    job = await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    server, path = await _served(engine, tmp_path)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    remote = RemoteEngine(path)
    watcher = RemoteEngine(path, read_only=True)
    await remote.connect()
    await watcher.connect()
    paused_seen = asyncio.Event()
    remote.add_listener(lambda snap: snap.mode is Mode.PAUSED and paused_seen.set())
    events = remote.subscribe()
    try:
        assert remote.snapshot().job(job["job_id"]) is not None
        # When the read-only viewer pauses, nothing happens; when the other one does, it does
        watcher.pause()
        remote.pause()
        async with asyncio.timeout(10):
            await paused_seen.wait()  # the viewer sees it in a snapshot from the agent
        assert engine.snapshot().mode is Mode.PAUSED
        # ... and it cancels the running job
        assert remote.cancel(job["job_id"])
        async for event in events:
            if event.name == "job_finished":
                break
    finally:
        await remote.close()
        await watcher.close()
        await server.stop()
    # Then the viewer saw the cancel as the agent reported it; the watcher could not act
    assert event.code == "E_CANCELED"  # type: ignore[attr-defined]
    assert not watcher.cancel(job["job_id"])  # read-only


async def test_quitting_an_attached_console_leaves_the_agent_running(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a console attached to a miner that holds a job
    engine, server, path = await _serving_a_job(devnet, make_engine, run_engine, tmp_path)
    remote = RemoteEngine(path)
    await remote.connect()
    app = MinerConsole(remote, prefs_path=tmp_path / "console.json")
    try:
        async with app.run_test(size=(120, 34)) as pilot:
            # When the operator pauses through the console, then quits
            await pilot.press("p")
            await engine.wait_until(lambda s: s.mode is Mode.PAUSED, timeout=10)
            await pilot.press("q")
            await pilot.pause()
    finally:
        await remote.close()
        await server.stop()
    # Then the console is gone, but the agent still runs its job, undrained
    snap = engine.snapshot()
    assert snap.mode is Mode.PAUSED and snap.running == 1, snap.recent


async def test_a_console_on_the_read_only_socket_cannot_steer_even_if_it_tries(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner, and a viewer attached to its read-only socket that does not
    # hold itself back (a client that ignores --read-only)
    engine, server, path = await _serving_a_job(devnet, make_engine, run_engine, tmp_path)
    rogue = RemoteEngine(read_only_socket_path(path))
    await rogue.connect()
    try:
        # When it pauses and cancels every job
        rogue.pause()
        assert rogue.cancel_all() == 1  # posted...
    finally:
        await rogue.close()  # ... and answered
        await server.stop()
    # Then the agent refused both: it still runs its job, unpaused
    snap = engine.snapshot()
    assert snap.mode is Mode.RUNNING and snap.running == 1


def test_attach_and_ctl_use_the_read_only_socket_when_asked(tmp_path: Path) -> None:
    settings = load_settings(None, overrides={"paths": {"state_dir": str(tmp_path)}}, env={})
    parse = build_parser().parse_args
    assert socket_for(parse(["attach"]), settings) == tmp_path / "control.sock"
    assert socket_for(parse(["attach", "--read-only"]), settings) == tmp_path / "control.ro.sock"
    assert socket_for(parse(["ctl", "status", "--read-only"]), settings) == tmp_path / (
        "control.ro.sock")
    named = parse(["ctl", "pause", "--socket", "/run/aitbc-miner/control.sock", "--read-only"])
    assert socket_for(named) == Path("/run/aitbc-miner/control.sock")  # as named, no config


def footer(app: MinerConsole) -> str:
    return screen_text(app).splitlines()[-1]


async def test_a_read_only_console_has_no_command_keys(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a console attached read-only to a miner that runs a job
    engine, server, path = await _serving_a_job(devnet, make_engine, run_engine, tmp_path)
    viewer = RemoteEngine(read_only_socket_path(path), read_only=True)
    await viewer.connect()
    app = MinerConsole(viewer, prefs_path=tmp_path / "console.json")
    try:
        async with app.run_test(size=(120, 34), notifications=True) as pilot:
            await until(pilot, lambda: "READ-ONLY" in screen_text(app).splitlines()[0],
                        what="the READ-ONLY badge")
            # Then it says so, and offers no command: not in the footer, the palette, the help
            assert "ATTACHED" in screen_text(app).splitlines()[0]
            await until(pilot, lambda: "Quit" in footer(app), what="the footer")
            bar = footer(app)
            assert "Help" in bar and "Details" in bar
            assert not [word for word in ("Pause", "Drain", "Cancel") if word in bar], bar
            palette = [c.title for c in app.get_system_commands(app.screen)]
            assert "Quit" in palette and "Details" in palette
            assert not [t for t in palette if t.startswith(("Pause", "Resume", "Drain",
                                                            "Undrain", "Cancel"))], palette
            await pilot.press("question_mark")
            shown = screen_text(app)
            assert "READ-ONLY" in shown and "pause / resume" not in shown
            await pilot.press("escape")
            # When the operator presses every command key anyway
            await pilot.press("p", "d", "D", "c")
            # Then no dialog opens, the console says it is read-only, and the agent is as it was
            assert app.screen is app.screen_stack[0]
            await until(pilot, lambda: "read-only: this console only watches" in screen_text(app),
                        what="the read-only note")
            # and a job's details offer no cancel either
            await pilot.press("enter")
            assert isinstance(app.screen, JobDetailsScreen)
            assert "read-only · Esc close" in screen_text(app)
            await pilot.press("c")
            assert isinstance(app.screen, JobDetailsScreen)
    finally:
        await viewer.close()
        await server.stop()
    snap = engine.snapshot()
    assert snap.mode is Mode.RUNNING and snap.running == 1


async def test_an_attached_console_pages_receipts_in_and_follows_new_ones(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a miner holding 450 receipts, and a console attached to it
    ids = await seed_receipts(tmp_path / "miner" / "journal.sqlite3", 450, prefix="p")
    engine = make_engine(devnet.url, cpu=1)
    server, path = await _served(engine, tmp_path)
    run_engine(engine)
    await engine.wait_until(lambda s: s.counters.receipts == 450, timeout=10)
    remote = RemoteEngine(path)
    await remote.connect()
    app = MinerConsole(remote, prefs_path=tmp_path / "console.json")
    try:
        async with app.run_test(size=(120, 34)) as pilot:
            table = app.dashboard.receipts
            # Then only the newest page came with the snapshots
            await until(pilot, lambda: len(table) == 200, what="the newest page")
            assert len(remote.snapshot().receipts) == 200
            assert table.row(0).receipt_id == ids[-1]
            assert "Receipts (450) · newest 200 shown" in (table.border_title or "")
            # When the operator goes down to the oldest receipts loaded, twice
            table.focus()
            await pilot.press("end")
            await until(pilot, lambda: len(table) == 400, what="a second page")
            await pilot.press("end")
            # Then the older pages come in, down to the oldest receipt
            await until(pilot, lambda: len(table) == 450, what="the last page")
            assert table.row(449).receipt_id == ids[0] and table.pages == 2
            assert table.border_title == "Receipts (450)"
            # When a job earns a new receipt
            job = await devnet.submit_job({"type": "noop"})
            # Then it arrives on top, the rest stays loaded
            await until(pilot, lambda: len(table) == 451, what="the new receipt")
            assert table.row(0).job_id == job["job_id"] and table.rebuilds == 0
    finally:
        await remote.close()
        await server.stop()
