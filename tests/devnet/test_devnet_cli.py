"""The CLI as a subprocess: ready line, SIGKILL and restart on the same port with state intact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from devnet_helpers import MINER_KEY

from aitbc_miner.devnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


@asynccontextmanager
async def devnet_process(
    *args: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aitbc_miner.devnet", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if not line:
            assert proc.stderr is not None
            raise AssertionError((await proc.stderr.read()).decode())
        yield proc, json.loads(line)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_kill_9_and_restart_on_same_port(tmp_path: Path) -> None:
    state, key = tmp_path / "state.sqlite3", tmp_path / "receipt.key"
    common = [
        "--dialect",
        "2026-08",
        "--state",
        str(state),
        "--signing-key-file",
        str(key),
        "--miner-key",
        MINER_KEY,
    ]
    async with devnet_process("--port", "0", "--no-rate-limits", *common) as (proc, ready):
        assert ready["event"] == "ready" and ready["url"] == f"http://127.0.0.1:{ready['port']}"
        assert key.exists() and ready["public_key_id"]
        headers = {"X-Api-Key": MINER_KEY, "X-Miner-ID": "rig-9"}
        async with httpx.AsyncClient(base_url=ready["api_url"]) as http:
            assert (
                await http.post("/miners/register", json={"capabilities": {}}, headers=headers)
            ).status_code == 200
            job = await http.post(
                "/jobs", json={"payload": {"type": "echo", "data": "x"}},
                headers=ready["client_headers"],
            )
            assert job.status_code == 201
            assert (await http.post("/miners/poll", json={}, headers=headers)).status_code == 200
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
    port = str(ready["port"])
    async with devnet_process("--port", port, *common) as (proc, again):
        assert (again["port"], again["public_key_id"]) == (ready["port"], ready["public_key_id"])
        async with httpx.AsyncClient(base_url=again["url"]) as http:
            snapshot = (await http.get("/_devnet/state")).json()
        assert snapshot["miners"]["rig-9"]["inflight"] == 1
        assert snapshot["jobs"][job.json()["job_id"]]["state"] == "RUNNING"
        assert snapshot["rate_limits"]["poll"] == [100, 60.0]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    async with devnet_process("--port", "0", *common) as (proc, third):
        assert third["port"] == ready["port"]  # port 0 with known state: the same port again
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), READY_TIMEOUT) == 0


async def test_sigint_exits_zero_and_feed(tmp_path: Path) -> None:
    async with devnet_process(
        "--port", "0", "--feed", "3", "--feed-interval", "0.05"
    ) as (proc, ready):
        assert ready["dialect"] == "2026-01" and ready["health"] == "/v1/health"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), READY_TIMEOUT) == 0


def test_parser_flags() -> None:
    args = build_parser().parse_args(
        ["--dialect", "2026-08", "--miner-key", "a", "--miner-key", "b", "--no-rate-limits",
         "--feed", "4"]
    )
    assert (args.dialect, args.miner_keys, args.no_rate_limits, args.feed, args.port) == (
        "2026-08",
        ["a", "b"],
        True,
        4,
        18000,
    )
