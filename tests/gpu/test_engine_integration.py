"""The engine owning the GPU sampler (``Engine(telemetry=...)``), end to end on loopback.

It checks E_GPU_LOST, admission by constraints, the capabilities the coordinator stores,
the console's ``GpuStatus``, and the GPU figures a job's metrics carry.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.engine import Engine, SlotPool, SlotState, Tuning
from aitbc_miner.gpu import Nvml, Sampler, gpu_slot_specs
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

from .conftest import Install
from .test_gpu_engine import HoldingGpuRunner

MINER = "rig-gpu"


def engine_with_gpus(devnet: Devnet, tmp_path: Path, sampler: Sampler,
                     runner: HoldingGpuRunner) -> Engine:
    specs = gpu_slot_specs(sampler.sample_blocking())
    return Engine(
        Tuning(miner_id=MINER, coordinator_url=devnet.url, pinned_key=devnet.public_key_id,
               heartbeat_interval_s=5.0, poll_min_s=0.05, poll_max_s=0.5),
        miner_key=DEFAULT_MINER_KEYS[0], journal_path=tmp_path / "journal.sqlite3",
        workspace_root=tmp_path / "jobs", pool=SlotPool.from_specs(1, specs),
        registry=RunnerRegistry([BuiltinRunner(), runner]), connect_timeout_s=1.0,
        read_timeout_s=2.0, seed=7, telemetry=sampler)


async def test_a_lost_gpu_fails_its_job_with_e_gpu_lost_and_the_miner_re_registers(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given an engine that owns a sampler over two GPUs, each running a job
    fake = fake_nvml(FakeNvml.with_gpus(2, name="NVIDIA L4", memory_total_mib=23034))
    sampler = Sampler(Nvml(), interval_s=3600)  # the test takes the samples that matter
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, sampler, runner)
        events = engine.subscribe()
        running = run_engine(engine)
        for _ in range(2):
            await devnet.submit_job({"type": "gpu-hold"})
        async with asyncio.timeout(20):
            await runner.wait_started(2)
        caps = devnet.miners[MINER]["capabilities"]
        assert caps["gpus"] == [{"name": "NVIDIA L4", "memory_mb": 23034}] * 2
        assert caps["cuda"] == "12.4" and devnet.miners[MINER]["concurrency"] == 3
        on_gpu1 = next(j for j, uuid in runner.devices.items() if uuid == fake.gpus[1].uuid)
        # When GPU 1 is lost
        fake.gpus[1].lose()
        await sampler.sample_once()
        # Then its job fails with E_GPU_LOST, its slot is lost, the console sees it
        snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
        assert next(o for o in snap.recent if o.job_id == on_gpu1).error_code == "E_GPU_LOST"
        assert devnet.jobs[on_gpu1]["state"] == "FAILED"
        assert {v.slot_id: v.state for v in snap.slots if v.kind == "gpu"} == {
            "gpu:0": SlotState.RUNNING, "gpu:1": SlotState.LOST}
        assert [(g.index, g.state, g.slot_ids) for g in snap.gpu.gpus] == [
            (0, "ok", ("gpu:0",)), (1, "lost", ("gpu:1",))]
        async with asyncio.timeout(10):
            async for event in events:
                if event.name == "gpu_lost":
                    assert event.jobs == (on_gpu1,)  # type: ignore[attr-defined]
                    break
        # And the miner re-registers with one slot fewer, and GPU 0 finishes its job
        await engine.wait_until(lambda s: s.connection.concurrency == 2, timeout=20)
        assert devnet.miners[MINER]["capabilities"]["gpus"] == [
            {"name": "NVIDIA L4", "memory_mb": 23034}]
        runner.release.set()
        snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=20)
        assert snap.counters.completed == 1
        await running.stop()


async def test_jobs_go_only_to_a_gpu_that_meets_their_constraints(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given a small GPU 0 and a large GPU 1, both free
    fake = fake_nvml(FakeNvml([FakeGpu(name="NVIDIA L4", memory_total_mib=23034),
                               FakeGpu(name="NVIDIA A100-SXM4-80GB", memory_total_mib=81920)]))
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_01, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, Sampler(Nvml(), interval_s=3600), runner)
        running = run_engine(engine)
        # When a job needing 40 GB arrives, then one needing an L4
        big = (await devnet.submit_job({"type": "gpu-hold"}, {"min_vram_gb": 40}))["job_id"]
        async with asyncio.timeout(20):
            await runner.wait_started(1)
        small = (await devnet.submit_job({"type": "gpu-hold"}, {"gpu": "NVIDIA L4"}))["job_id"]
        async with asyncio.timeout(20):
            await runner.wait_started(2)
        # Then each runs on the GPU that fits it
        assert runner.devices == {big: fake.gpus[1].uuid, small: fake.gpus[0].uuid}
        runner.release.set()
        await engine.wait_until(lambda s: s.counters.completed == 2, timeout=20)
        await running.stop()


async def test_no_driver_means_cpu_slots_only_and_a_plain_gpu_state(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    fake_nvml(FakeNvml.no_driver())
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, Sampler(Nvml()), runner)
        running = run_engine(engine)
        job = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
        snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
        assert devnet.jobs[job]["state"] == "COMPLETED" and snap.counters.completed == 1
        assert snap.gpu.state == "no_driver" and "libnvidia-ml" in snap.gpu.message
        caps = devnet.miners[MINER]["capabilities"]
        assert caps["gpus"] == [] and "cuda" not in caps
        await running.stop()


async def test_a_gpu_job_reports_its_mean_utilization_and_peak_vram(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given one GPU running a job while the sampler sees it at 30 % then 70 % busy
    fake = fake_nvml(FakeNvml.with_gpus(1, name="NVIDIA L4", memory_total_mib=23034))
    sampler = Sampler(Nvml(), interval_s=3600)
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_01, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, sampler, runner)
        run_engine(engine)
        job = await devnet.submit_job({"type": "gpu-hold"})
        async with asyncio.timeout(20):
            await runner.wait_started(1)
        for util, used in ((30, 4000), (70, 9000)):
            fake.gpus[0].util_gpu, fake.gpus[0].memory_used_mib = util, used
            await sampler.sample_once()
        # When it finishes
        runner.release.set()
        await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
    # Then the result's metrics carry what the GPU did, as the upstream miner names them
    metrics = devnet.receipts[0]["metadata"]["metrics"]
    assert metrics["gpu_utilization"] == 50.0 and metrics["memory_peak"] == 9000
    assert devnet.receipts[0]["job_id"] == job["job_id"]
