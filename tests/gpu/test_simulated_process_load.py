"""Simulated GPUs follow the load the miner puts on them: idle (0 %, idle power, no
process) while nothing runs, busy with the job's (or the backend's) process while a job
runs, idle again when it ends. The demo wiring (``probe_gpus``) is the one under test."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from aitbc_miner.config import load_settings
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import Mode
from aitbc_miner.gpu import Sampler, simulated_nvml
from aitbc_miner.gpu.processes import ProcessRole
from aitbc_miner.gpu.simulate import IDLE_POWER_FRACTION, IDLE_VRAM_MIB
from aitbc_miner.host.runtime import probe_gpus

from .test_engine_integration import HoldingGpuRunner, engine_with_gpus


def idle(sampler: Sampler) -> list[tuple[object, ...]]:
    return [(g.sample.util_gpu_pct, g.sample.power_w, g.sample.memory_used_mib, g.processes)
            for g in sampler.snapshot.gpus]


async def test_the_demos_simulated_gpus_idle_while_no_job_runs(tmp_path: Path) -> None:
    # Given the demo's GPU side: two simulated GPUs built as the demo builds them
    settings = load_settings(None, overrides={
        "gpu": {"simulate": 2}, "paths": {"state_dir": str(tmp_path / "s"),
                                          "data_dir": str(tmp_path / "d")}}, env={})
    sampler, specs = probe_gpus(settings)
    assert sampler is not None and len(specs) == 2
    idle_w = IDLE_POWER_FRACTION * 700
    # When nothing runs (a drained rig), then every device idles, sample after sample
    for _ in range(3):
        await sampler.sample_once()
        assert idle(sampler) == [(0, idle_w, IDLE_VRAM_MIB, ())] * 2
    # When an inference job (no PID of its own: it goes through the server) runs on GPU 1
    sampler.track_job("job-1", specs[1].gpu_uuid)
    snap = await sampler.sample_once()
    busy = snap.gpus[1]
    # Then GPU 1 works, and the backend (in-process in the demo: the miner) holds its VRAM
    assert busy.sample.util_gpu_pct >= 70 and busy.sample.power_w > 400  # type: ignore[operator]
    assert busy.sample.memory_used_mib > IDLE_VRAM_MIB  # type: ignore[operator]
    assert [(p.pid, p.role) for p in busy.processes] == [(os.getpid(), ProcessRole.MINER)]
    assert idle(sampler)[0] == (0, idle_w, IDLE_VRAM_MIB, ())  # GPU 0 still idle
    # When the job ends (drained), then GPU 1 is idle again at the next sample (and its
    # process list, read every 2nd sample, at the next reading of it)
    sampler.end_job("job-1")
    await sampler.sample_once()
    assert [g.sample.util_gpu_pct for g in sampler.snapshot.gpus] == [0, 0]
    await sampler.sample_once()
    assert idle(sampler) == [(0, idle_w, IDLE_VRAM_MIB, ())] * 2


async def test_a_job_with_its_own_process_holds_the_vram_faithfully(tmp_path: Path) -> None:
    # Given a simulated GPU following a sampler, and a job process on it
    sampler: Sampler | None = None
    nvml = simulated_nvml(1, load=lambda: sampler.workload if sampler else {})
    sampler = Sampler(nvml, process_every=1)
    await sampler.sample_once()
    uuid = sampler.snapshot.gpus[0].uuid
    job = subprocess.Popen(["sleep", "60"])
    try:
        sampler.track_job("job-2", uuid, [job.pid])
        snap = await sampler.sample_once()
    finally:
        job.kill()
        job.wait()
    # Then the process list shows the job's process with the VRAM the device added
    (proc,) = snap.gpus[0].processes
    sample = snap.gpus[0].sample
    assert (proc.pid, proc.role, proc.job_id, proc.command) == (job.pid, ProcessRole.JOB,
                                                                "job-2", "sleep")
    assert proc.vram_mib == sample.memory_used_mib - IDLE_VRAM_MIB  # type: ignore[operator]
    assert sample.process_kinds == {job.pid: "C"}
    assert proc.sm_pct is not None and 70 <= proc.sm_pct <= 97  # the device's load, its own


async def test_a_drained_engine_leaves_its_simulated_gpus_idle(tmp_path: Path,
                                                               run_engine: Any) -> None:
    # Given an engine over two simulated GPUs that follow its sampler, a job on each
    sampler: Sampler | None = None
    nvml = simulated_nvml(2, load=lambda: sampler.workload if sampler else {})
    sampler = Sampler(nvml, interval_s=3600, process_every=1)  # the test samples
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_01, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, sampler, runner)
        running = run_engine(engine)
        for _ in range(2):
            await devnet.submit_job({"type": "gpu-hold"})
        async with asyncio.timeout(20):
            await runner.wait_started(2)
        await sampler.sample_once()
        snap = engine.snapshot()
        # Then both work, and the console's view says who holds the VRAM (the jobs run
        # in this process here: the miner)
        assert all(g.util_gpu_pct and g.util_gpu_pct >= 70 for g in snap.gpu.gpus)
        assert [[p.role for p in g.processes] for g in snap.gpu.gpus] == [
            [ProcessRole.MINER]] * 2
        # When the miner drains and its jobs finish
        engine.drain()
        runner.release.set()
        await engine.wait_until(lambda s: s.mode is Mode.DRAINED, timeout=20)
        await sampler.sample_once()
        # Then its GPUs idle: 0 %, idle power, a driver's few hundred MiB, no process
        idle_w = IDLE_POWER_FRACTION * 700
        assert [(g.util_gpu_pct, g.power_w, g.memory_used_mb, g.processes)
                for g in engine.snapshot().gpu.gpus] == [(0, idle_w, IDLE_VRAM_MIB, ())] * 2
        await running.stop()
