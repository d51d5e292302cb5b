"""A console attached to a running miner through its control socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aitbc_miner.control import ControlServer
from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Mode
from aitbc_miner.remote import RemoteEngine
from tui.app import MinerConsole


async def _served(engine, tmp_path: Path) -> tuple[ControlServer, Path]:
    path = tmp_path / "ctl" / "control.sock"
    server = ControlServer(engine, path)
    await server.start()
    return server, path


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
    await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    server, path = await _served(engine, tmp_path)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
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
