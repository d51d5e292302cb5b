"""The control socket: owner-only, the engine's snapshot, events and commands."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from aitbc_miner.control import ControlServer
from aitbc_miner.devnet import Devnet


async def test_control_socket_is_owner_only_and_drives_the_engine(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner with a control socket and a sleeping job on it
    job = await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    socket_path = tmp_path / "ctl" / "control.sock"
    server = ControlServer(engine, socket_path)
    await server.start()
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    try:
        # Then only the owner can reach it
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        async with httpx.AsyncClient(transport=transport, base_url="http://miner") as http:
            # When an operator reads the snapshot and pauses
            snapshot = (await http.get("/snapshot")).json()
            paused = (await http.post("/pause")).json()
            unknown = await http.post("/cancel/no-such-job")
            async with http.stream("GET", "/events") as events:
                # ... and cancels the running job
                canceled = await http.post(f"/cancel/{job['job_id']}")
                first = None
                async for line in events.aiter_lines():
                    if '"job_finished"' in line:
                        first = line
                        break
        # Then each took effect through the engine's commands
        assert snapshot["jobs"][0]["job_id"] == job["job_id"]
        assert snapshot["mode"] == "running" and paused["mode"] == "paused"
        assert engine.snapshot().mode.value == "paused"
        assert unknown.status_code == 404
        assert canceled.status_code == 200
        assert first is not None and '"E_CANCELED"' in first
    finally:
        await server.stop()
    assert not socket_path.exists()
