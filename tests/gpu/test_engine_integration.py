"""The engine owning the GPU sampler (``Engine(telemetry=...)``), end to end on loopback.

It checks E_GPU_LOST, admission by constraints, the capabilities the coordinator stores,
the console's ``GpuStatus``, and the GPU figures a job's metrics carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.engine import Engine, SlotPool, SlotState, Tuning
from aitbc_miner.gpu import DriverState, Nvml, Sampler, gpu_slot_specs
from aitbc_miner.runners import RunnerRegistry, RunOutput
from aitbc_miner.runners.base import RunContext, SlotKind
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

from .conftest import Install

MINER = "rig-gpu"


class HoldingGpuRunner:
    """``gpu-hold`` jobs: note the device they were given, then wait for ``release``."""

    name = "gpu-hold"
    job_types = frozenset({"gpu-hold"})
    slot_kind = SlotKind.GPU

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.devices: dict[str, str | None] = {}
        self._started = asyncio.Condition()

    async def wait_started(self, count: int) -> None:
        async with self._started:
            await self._started.wait_for(lambda: len(self.devices) >= count)

    def available(self) -> bool:
        return True

    def capabilities(self) -> Mapping[str, Any]:
        return {}

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        async with self._started:
            self.devices[ctx.job_id] = ctx.gpu_uuid
            self._started.notify_all()
        await self.release.wait()
        return RunOutput({"status": "completed"})


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


async def test_a_gpu_lost_mid_run_fails_its_job_cleanly_while_the_other_gpu_keeps_working(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given a miner with two GPUs (one slot each) and a job holding each GPU
    fake = fake_nvml(FakeNvml.with_gpus(2, name="NVIDIA L4"))
    sampler = Sampler(Nvml(), interval_s=3600, process_every=1)  # the test takes the samples
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, sampler, runner)
        running = run_engine(engine)
        ids = [(await devnet.submit_job({"type": "gpu-hold"}))["job_id"] for _ in range(2)]
        async with asyncio.timeout(20):
            await runner.wait_started(2)
        snap = engine.snapshot()
        on_slot = {j.slot_id: j.job_id for j in snap.jobs}
        assert set(on_slot) == {"gpu:0", "gpu:1"}
        assert runner.devices[on_slot["gpu:0"]] == fake.gpus[0].uuid  # its own device only

        # When GPU 1 falls off the bus and the next sample sees it
        fake.gpus[1].lose()
        fake.gpus[0].util_gpu = 75
        tele = await sampler.sample_once()

        # Then its slot is lost and its job fails, once, with the reason
        assert tele.gpu("1").lost and tele.gpu("0").sample.util_gpu_pct == 75  # type: ignore[union-attr]
        snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
        lost_job = on_slot["gpu:1"]
        assert {v.slot_id: v.state for v in snap.slots if v.kind == "gpu"} == {
            "gpu:0": SlotState.RUNNING, "gpu:1": SlotState.LOST}
        outcome = next(o for o in snap.recent if o.job_id == lost_job)
        assert outcome.error_code == "E_GPU_LOST"
        assert devnet.jobs[lost_job]["state"] == "FAILED"
        assert "lost" in devnet.jobs[lost_job]["error"].lower()

        # And GPU 0 keeps being sampled, its job finishes, and it takes the next job
        fake.gpus[0].util_gpu = 25
        tele = await sampler.sample_once()
        assert tele.gpu("0").sample.util_gpu_pct == 25 and tele.gpu("1").lost  # type: ignore[union-attr]
        runner.release.set()
        later = (await devnet.submit_job({"type": "gpu-hold"}))["job_id"]
        snap = await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=20)
        assert snap.counters.completed == 2
        assert runner.devices[later] == fake.gpus[0].uuid
        assert {devnet.jobs[i]["state"] for i in (on_slot["gpu:0"], later)} == {"COMPLETED"}
        assert engine.core.pool.usable() == 2  # cpu:0 and gpu:0
        await running.stop()
    # The surviving job's metrics carry what its GPU did while we watched it
    survivor = next(r for r in devnet.receipts if r["job_id"] == on_slot["gpu:0"])
    assert "gpu_utilization" in survivor["metadata"]["metrics"]
    assert ids == list(dict.fromkeys(ids))


async def test_without_a_driver_cpu_jobs_run_and_gpu_jobs_are_refused(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given no NVIDIA driver at all
    fake_nvml(FakeNvml.no_driver())
    sampler = Sampler(Nvml())
    tele = await sampler.sample_once()
    assert tele.state is DriverState.NO_DRIVER
    assert gpu_slot_specs(tele) == ()
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_01, rate_limits=False) as devnet:
        engine = engine_with_gpus(devnet, tmp_path, sampler, runner)
        running = run_engine(engine)
        # When a CPU job and a GPU job arrive
        cpu_job = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
        gpu_job = (await devnet.submit_job({"type": "gpu-hold"}))["job_id"]
        snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=20)
        await running.stop()
    # Then the CPU job completes and the GPU job is refused as unsupported, not hung
    assert snap.counters.completed == 1 and snap.counters.failed == 1
    assert devnet.jobs[cpu_job]["state"] == "COMPLETED"
    refused = next(o for o in snap.recent if o.job_id == gpu_job)
    assert refused.error_code == "E_UNSUPPORTED" and runner.devices == {}
