"""A whole agent in its own process, for the test that kills one mid-job.

Usage: ``python agent.py <coordinator-url> <state-dir> <allowlist-dir>``. It runs an
Engine with the cli runner (state under ``<state-dir>/miner``, as the ``make_engine``
fixture lays it out) and prints each job log line as ``<job_id> <line>``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aitbc_miner.devnet import DEFAULT_MINER_KEYS
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.engine.snapshot import JobLogLine
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.settings import RunnerSettings


async def main(url: str, state: Path, allowlist: Path) -> None:
    settings = RunnerSettings(allowlist_dirs=[allowlist])
    engine = Engine(
        Tuning(miner_id="rig-test", coordinator_url=url, heartbeat_interval_s=5.0,
               poll_min_s=0.05, poll_max_s=0.5),
        miner_key=DEFAULT_MINER_KEYS[0], journal_path=state / "miner" / "journal.sqlite3",
        workspace_root=state / "miner" / "jobs", pool=SlotPool.from_counts(cpu=2, gpu=0),
        registry=RunnerRegistry([CliRunner(settings)]), connect_timeout_s=1.0,
        read_timeout_s=2.0, seed=7)
    events = engine.subscribe()
    task = asyncio.create_task(engine.run())
    async for event in events:
        if isinstance(event, JobLogLine):
            print(event.job_id, event.line, flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
