"""GPU telemetry driving the real engine against the reference coordinator on loopback.

The engine does not own a sampler yet; ``bind_lost_gpus`` is the hook the integration
adds to it (mark the GPU's slots lost, fail the job running there). Until jobrun maps
that reason to ``E_GPU_LOST`` the job ends ``E_CANCELED`` with the reason in its message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.engine import Engine, Slot, SlotPool, SlotState, Tuning
from aitbc_miner.engine import jobrun as jobrun_module
from aitbc_miner.gpu import DriverState, GpuSlotSpec, GpuView, Nvml, Sampler, gpu_slot_specs
from aitbc_miner.runners import RunnerRegistry, RunOutput
from aitbc_miner.runners.base import RunContext, SlotKind
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.fakes.fake_pynvml import FakeNvml

from .conftest import Install

GPU_LOST_REASON: str = getattr(jobrun_module, "GPU_LOST_REASON", "gpu lost")
MAPS_GPU_LOST = hasattr(jobrun_module, "GPU_LOST_REASON")


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


def pool_from(specs: tuple[GpuSlotSpec, ...], cpu: int = 1) -> SlotPool:
    slots = [Slot(f"cpu:{i}", SlotKind.CPU) for i in range(cpu)]
    slots += [Slot(s.slot_id, SlotKind.GPU, gpu_uuid=s.gpu_uuid, lost=s.lost) for s in specs]
    return SlotPool(slots)


def bind_lost_gpus(engine: Engine) -> Callable[[GpuView], None]:
    """What the engine's sampler hook does: the GPU's slots go lost, their jobs fail."""

    def on_lost(view: GpuView) -> None:
        pool = engine.core.pool
        for slot in pool.slots:
            if slot.gpu_uuid == view.uuid:
                pool.mark_lost(slot.slot_id)
                if slot.job_id is not None:
                    engine.cancel(slot.job_id, reason=GPU_LOST_REASON)

    return on_lost


def make_engine(devnet: Devnet, tmp_path: Path, pool: SlotPool, runner: HoldingGpuRunner,
                ) -> Engine:
    return Engine(
        Tuning(miner_id="rig-gpu", coordinator_url=devnet.url, pinned_key=devnet.public_key_id,
               heartbeat_interval_s=5.0, poll_min_s=0.05, poll_max_s=0.5),
        miner_key=DEFAULT_MINER_KEYS[0], journal_path=tmp_path / "journal.sqlite3",
        workspace_root=tmp_path / "jobs", pool=pool,
        registry=RunnerRegistry([BuiltinRunner(), runner]), connect_timeout_s=1.0,
        read_timeout_s=2.0, seed=7)


async def test_a_gpu_lost_mid_run_fails_its_job_cleanly_while_the_other_gpu_keeps_working(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given a miner with two GPUs (one slot each) and a job holding each GPU
    fake = fake_nvml(FakeNvml.with_gpus(2, name="NVIDIA L4"))
    sampler = Sampler(Nvml(), process_every=1)
    specs = gpu_slot_specs(await sampler.sample_once())
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        engine = make_engine(devnet, tmp_path, pool_from(specs), runner)
        sampler.on_lost = bind_lost_gpus(engine)
        running = run_engine(engine)
        ids = [(await devnet.submit_job({"type": "gpu-hold"}))["job_id"] for _ in range(2)]
        async with asyncio.timeout(20):
            await runner.wait_started(2)
        snap = engine.snapshot()
        on_slot = {j.slot_id: j.job_id for j in snap.jobs}
        assert set(on_slot) == {"gpu:0", "gpu:1"}
        assert runner.devices[on_slot["gpu:0"]] == fake.gpus[0].uuid  # its own device only
        for job_id, uuid in runner.devices.items():
            sampler.track_job(job_id, uuid)  # type: ignore[arg-type]

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
        assert outcome.error_code == ("E_GPU_LOST" if MAPS_GPU_LOST else "E_CANCELED")
        assert devnet.jobs[lost_job]["state"] == "FAILED"
        assert "lost" in devnet.jobs[lost_job]["error"].lower()
        assert sampler.end_job(lost_job).gpu_lost  # type: ignore[union-attr]

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
        stats = sampler.end_job(on_slot["gpu:0"])
        assert stats is not None and stats.mean_util_pct == 50.0 and not stats.gpu_lost
        await running.stop()
    assert ids == list(dict.fromkeys(ids))


async def test_without_a_driver_cpu_jobs_run_and_gpu_jobs_are_refused(
        fake_nvml: Install, tmp_path: Path, run_engine: Any) -> None:
    # Given no NVIDIA driver at all
    fake_nvml(FakeNvml.no_driver())
    sampler = Sampler(Nvml())
    tele = await sampler.sample_once()
    assert tele.state is DriverState.NO_DRIVER
    specs = gpu_slot_specs(tele)
    assert specs == ()
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_01, rate_limits=False) as devnet:
        engine = make_engine(devnet, tmp_path, pool_from(specs, cpu=1), runner)
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
