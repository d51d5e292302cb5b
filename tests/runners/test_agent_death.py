"""When the agent dies mid-job, the job dies with it, and the restart reports E_INTERRUPTED."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import psutil

from aitbc_miner.devnet import Devnet

from .helpers import behave, processes_of, sandbox_or_skip, write_allowlist

AGENT = Path(__file__).resolve().parents[1] / "fixtures_runners" / "agent.py"


async def test_killed_agent_takes_its_jobs_along_and_the_restart_reports_interrupted(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    sandbox_or_skip()
    # Given an agent in its own process running a job that double-forked a daemon and waits
    allowlist = write_allowlist(tmp_path / "allowlist.d", {"daemon": behave("daemon", args={
        "max_count": 2, "rules": [{"type": "path"}, {"type": "enum", "choices": ["stay"]}]})})
    job = await devnet.submit_job({"type": "cli", "command": "daemon",
                                   "args": ["daemon.pid", "stay"]})
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENT), devnet.url, str(tmp_path), str(allowlist),
        stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            assert agent.stdout is not None
            while (await agent.stdout.readline()).decode().split() != [job["job_id"], "ready"]:
                pass
        family = psutil.Process(agent.pid).children(recursive=True)
        job_processes = processes_of(job["job_id"])
        assert len(job_processes) >= 2  # the job and its daemon
        assert {p.pid for p in job_processes} <= {p.pid for p in family}
        # When the agent is killed outright
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    # Then the launcher, the job and its daemon all die (parent-death signal, then sweep)
    _, alive = await asyncio.to_thread(psutil.wait_procs, family, 10)
    assert alive == [], [p.cmdline() for p in alive]
    assert processes_of(job["job_id"]) == []
    # And the restarted agent reports the job as interrupted, not re-run
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=30)
    await running.stop()
    seen = devnet.jobs[job["job_id"]]
    message = "the miner stopped while this job was running; it is not re-run"
    expected = message if devnet.dialect.value == "2026-08" else f"E_INTERRUPTED: {message}"
    assert seen["state"] == "FAILED" and seen["error"].startswith(expected)


def test_a_restarted_agent_removes_job_cgroups_left_by_a_dead_one():
    from aitbc_miner.sandbox.cgroups import CgroupMode, detect

    from .helpers import features_or_skip

    features_or_skip(cgroup=True)
    # Given a job cgroup named after an agent pid that no longer exists
    host = detect()
    assert host.mode is not CgroupMode.NONE
    dead = psutil.Process().pid
    while psutil.pid_exists(dead):
        dead += 1
    name = f"job-left-over-{dead}-1"
    for base in set(host.bases.values()):
        (base / name).mkdir()
    # When an agent finds its cgroups again
    detect()
    # Then the left-over groups are gone, in every hierarchy
    assert not any((base / name).exists() for base in host.bases.values())
