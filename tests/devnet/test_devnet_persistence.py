"""State survives a stop/start on the same sqlite file: miners, inflight, jobs, receipts, key,
port."""

from __future__ import annotations

from pathlib import Path

import httpx
from devnet_helpers import MINER_KEY, MinerClient

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.receipts import Verdict, verify


async def test_restart_keeps_state(tmp_path: Path, dialect: Dialect) -> None:
    state = tmp_path / "devnet.sqlite3"
    first = Devnet(dialect, miner_keys=[MINER_KEY], state_path=state, rate_limits=False)
    await first.start()
    async with httpx.AsyncClient(base_url=first.api_url) as http:
        miner = MinerClient(http, first, "rig-1")
        await miner.register({"models": ["m"]}, concurrency=3, region="eu")
        done = (await first.submit_job({"type": "echo", "data": "a"}))["job_id"]
        running = (await first.submit_job({"type": "echo", "data": "b"}))["job_id"]
        queued = (await first.submit_job({"type": "echo", "data": "c"}))["job_id"]
        await miner.poll()
        await miner.poll()
        receipt = (await miner.result(done)).json()["receipt"]
    before = (first.port, first.public_key_id, first.miners, first.jobs)
    await first.stop()

    second = Devnet(dialect, miner_keys=[MINER_KEY], state_path=state, rate_limits=False)
    async with second:
        assert (second.port, second.public_key_id, second.miners, second.jobs) == before
        assert second.miners[miner.id]["inflight"] == 1
        states = [j["state"]
                  for j in (second.jobs[done], second.jobs[running], second.jobs[queued])]
        assert states == [
            "COMPLETED", "RUNNING", "QUEUED",
        ]  # fmt: skip
        assert second.receipts == [receipt]
        assert verify(receipt, pinned_key=second.public_key_id).verdict is Verdict.VALID_PINNED
        async with httpx.AsyncClient(base_url=second.api_url) as http:
            miner = MinerClient(http, second, "rig-1")
            assert (await miner.heartbeat(0)).status_code == 200  # still registered
            assert (await miner.poll()).json()["job_id"] == queued


async def test_in_memory_state_is_kept_across_stop_start_of_one_object(dialect: Dialect) -> None:
    devnet = Devnet(dialect, rate_limits=False)
    await devnet.start()
    job_id = (await devnet.submit_job({"type": "echo", "data": "a"}))["job_id"]
    await devnet.stop()
    async with devnet:
        assert list(devnet.jobs) == [job_id]
