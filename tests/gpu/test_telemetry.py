"""The sampler: off-loop reads, frozen snapshots, bounded history, lost GPUs, job figures."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from aitbc_miner.gpu import NA, DriverState, GpuState, GpuView, Nvml, Sampler, simulated_nvml
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

from .conftest import Install

MakeSampler = Callable[..., tuple[FakeNvml, Sampler]]


async def test_a_gpu_lost_mid_run_is_reported_once_and_the_others_keep_sampling(
        sampler_for: MakeSampler) -> None:
    # Given two GPUs sampled once, and a listener for lost GPUs
    lost: list[tuple[GpuView, bool]] = []
    loop_thread = threading.get_ident()
    fake, sampler = sampler_for(FakeNvml.with_gpus(2), on_lost=lambda v: lost.append(
        (v, threading.get_ident() == loop_thread)))
    first = await sampler.sample_once()
    assert [g.state for g in first.gpus] == [GpuState.OK, GpuState.OK] and not lost
    # When GPU 1 falls off the bus and GPU 0's load changes
    fake.gpus[1].lose()
    fake.gpus[0].util_gpu = 88
    snap = await sampler.sample_once()
    # Then GPU 1 is lost, reported once, on the loop; GPU 0 shows its new reading
    assert snap.gpu("1").lost and snap.gpu("1").lost_at == snap.at  # type: ignore[union-attr]
    assert snap.gpu("0").sample.util_gpu_pct == 88  # type: ignore[union-attr]
    assert [(v.uuid, on_loop) for v, on_loop in lost] == [(fake.gpus[1].uuid, True)]
    fake.gpus[0].util_gpu = 12
    later = await sampler.sample_once()
    assert len(lost) == 1 and later.gpu("0").sample.util_gpu_pct == 12  # type: ignore[union-attr]
    assert later.lost == (later.gpu("1"),) and later.state is DriverState.OK


async def test_no_driver_gives_a_plain_state_and_the_loop_ends_quietly(
        sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml.no_driver())
    snap = await sampler.sample_once()
    assert snap.state is DriverState.NO_DRIVER and snap.gpus == ()
    assert snap.message.startswith("no NVIDIA driver found")
    async with asyncio.timeout(5):
        await sampler.run()  # returns at once: nothing to sample
    assert fake.calls["nvmlInit"] == 1


async def test_sampling_never_blocks_the_event_loop(sampler_for: MakeSampler) -> None:
    # Given a driver whose memory call blocks for 0.5 s
    block_s = 0.5
    fake, sampler = sampler_for(FakeNvml([FakeGpu(slow={"nvmlDeviceGetMemoryInfo": block_s})]))
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    # When a 10 ms ticker runs while two samples are taken
    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await sampler.sample_once()
    await sampler.sample_once()
    took = time.perf_counter() - started
    done.set()
    await tick
    # Then the samples took the blocked time, and the ticker never waited anywhere near it
    assert took >= 2 * block_s
    assert len(gaps) > 20
    assert max(gaps) < block_s / 2, f"the loop stalled for {max(gaps):.3f}s"
    assert sampler.snapshot.sample_cost_s >= block_s


async def test_history_is_bounded_and_oldest_first(sampler_for: MakeSampler) -> None:
    clock = iter(range(1000, 2000, 5))  # one sample per 5 s bucket
    fake, sampler = sampler_for(FakeNvml.with_gpus(1), history=5,
                                clock=lambda: float(next(clock)))
    for i in range(12):
        fake.gpus[0].util_gpu = i
        fake.gpus[0].memory_used_mib = 100 + i
        await sampler.sample_once()
    history = sampler.snapshot.gpus[0].history
    assert history.util_pct.means == (7, 8, 9, 10, 11)
    assert history.vram_mib.means == (107, 108, 109, 110, 111)
    assert sampler.snapshot.seq == 12


async def test_snapshots_are_immutable_and_old_ones_do_not_change(
        sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml([FakeGpu(processes={10: 5})]), process_every=1)
    old = await sampler.sample_once()
    fake.gpus[0].util_gpu = 99
    fake.gpus[0].processes[11] = 6
    new = await sampler.sample_once()
    assert old.gpus[0].sample.util_gpu_pct == 0
    assert old.gpus[0].history.util_pct.latest == 0
    assert dict(old.gpus[0].sample.processes) == {10: 5}
    assert dict(new.gpus[0].sample.processes) == {10: 5, 11: 6}
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.seq = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.gpus[0].sample.util_gpu_pct = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        new.gpus[0].sample.processes[12] = 1  # type: ignore[index]


async def test_processes_are_read_every_nth_sample_and_carried_between(
        sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml([FakeGpu(processes={1: 10})]), process_every=2)
    seen = []
    for _ in range(4):
        snap = await sampler.sample_once()
        seen.append(dict(snap.gpus[0].sample.processes))
        fake.gpus[0].processes[1] += 10
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 2
    assert fake.calls["nvmlDeviceGetGraphicsRunningProcesses"] == 2
    assert seen == [{1: 10}, {1: 10}, {1: 30}, {1: 30}]


async def test_per_job_mean_utilization_and_peak_vram_of_its_own_processes(
        sampler_for: MakeSampler) -> None:
    # Given two GPUs, job A on GPU 0 with its PIDs known, job B on GPU 1 without
    fake, sampler = sampler_for(FakeNvml.with_gpus(2), process_every=1)
    g0, g1 = fake.gpus
    sampler.track_job("A", g0.uuid, pids=[100])
    sampler.track_job("B", g1.uuid)
    # When three samples see the load change (a foreign process 999 shares GPU 0)
    for util, a_mib, dev_used in ((30, 1000, 2000), (60, 3000, 9000), (90, 2000, 4000)):
        g0.util_gpu, g1.util_gpu = util, util // 3
        g0.processes = {100: a_mib, 999: 50_000}
        g1.memory_used_mib = dev_used
        await sampler.sample_once()
    # Then A's figures count only its processes, B's the whole device
    a = sampler.snapshot.job("A")
    assert a is not None and (a.samples, a.mean_util_pct, a.peak_vram_mib) == (3, 60.0, 3000)
    sampler.set_job_pids("A", [100, 101])
    g0.processes = {100: 1000, 101: 2500}
    await sampler.sample_once()
    assert sampler.job_stats("A").peak_vram_mib == 3500  # type: ignore[union-attr]
    b = sampler.end_job("B")
    assert b is not None and b.samples == 4  # 10, 20, 30 and 30 again
    assert (b.mean_util_pct, b.peak_vram_mib, b.gpu_lost) == (22.5, 9000, False)
    assert sampler.job_stats("B") is None and sampler.end_job("B") is None


async def test_a_job_on_a_lost_gpu_is_flagged_and_keeps_its_figures(
        sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml.with_gpus(1, util_gpu=40, memory_used_mib=700))
    sampler.track_job("J", fake.gpus[0].uuid)
    await sampler.sample_once()
    fake.gpus[0].lose()
    await sampler.sample_once()
    stats = sampler.end_job("J")
    assert stats is not None and stats.gpu_lost
    assert (stats.mean_util_pct, stats.peak_vram_mib) == (40.0, 700)


async def test_a_job_on_a_mig_instance_has_na_utilization(sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml([FakeGpu.a100_mig(instances=1)]))
    inst = fake.gpus[0].mig[0]  # type: ignore[index]
    sampler.track_job("M", inst.uuid)  # type: ignore[union-attr]
    await sampler.sample_once()
    stats = sampler.job_stats("M")
    assert stats is not None and stats.mean_util_pct is NA and stats.peak_vram_mib == 13


async def test_the_run_loop_survives_a_failing_sample(sampler_for: MakeSampler,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a sampler whose first read raises a bug-like error
    fake, sampler = sampler_for(FakeNvml.with_gpus(1), interval_s=0.01)
    calls = {"n": 0}
    real_read = sampler.nvml.read_all

    def flaky(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_read(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sampler.nvml, "read_all", flaky)
    published = asyncio.Event()
    sampler.on_snapshot = lambda snap: published.set()
    # When the loop runs, Then a later sample is still published
    task = asyncio.create_task(sampler.run())
    async with asyncio.timeout(10):
        await published.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls["n"] >= 2 and sampler.snapshot.gpus[0].state is GpuState.OK


async def test_a_failing_listener_does_not_stop_sampling(sampler_for: MakeSampler) -> None:
    def broken(_view: GpuView) -> None:
        raise RuntimeError("listener bug")

    fake, sampler = sampler_for(FakeNvml.with_gpus(2), on_lost=broken)
    await sampler.sample_once()
    fake.gpus[0].lose()
    snap = await sampler.sample_once()
    assert snap.gpus[0].lost and not snap.gpus[1].lost


async def test_snapshot_as_dict_is_json_ready(sampler_for: MakeSampler) -> None:
    import json

    fake, sampler = sampler_for(FakeNvml([FakeGpu(unsupported={"nvmlDeviceGetTemperature"})]))
    sampler.track_job("J", fake.gpus[0].uuid)
    snap = await sampler.sample_once()
    data = json.loads(json.dumps(snap.as_dict()))
    assert data["state"] == "ok" and data["cuda_version"] == "12.4"
    assert data["gpus"][0]["temperature_c"] is None and data["gpus"][0]["state"] == "ok"
    assert data["jobs"][0]["job_id"] == "J"


async def test_simulated_gpus_say_simulated_everywhere(fake_nvml: Install,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    sampler = Sampler(simulated_nvml(3))
    with caplog.at_level("INFO", logger="aitbc_miner.gpu"):
        snap = await sampler.sample_once()
    assert snap.simulated and snap.message.startswith("SIMULATED")
    assert all(g.name.startswith("SIMULATED ") and g.sample.simulated for g in snap.gpus)
    assert len(snap.gpus) == 3 and all(g.state is GpuState.OK for g in snap.gpus)
    assert any("SIMULATED" in r.getMessage() for r in caplog.records)


def test_bad_settings_are_refused() -> None:
    for kw in ({"interval_s": 0}, {"history": 0}, {"process_every": 0}):
        with pytest.raises(ValueError):
            Sampler(Nvml(FakeNvml()), **kw)  # type: ignore[arg-type]


def test_a_blocking_sample_serves_start_up_before_the_loop_runs(
        sampler_for: MakeSampler) -> None:
    fake, sampler = sampler_for(FakeNvml.with_gpus(2))
    snap = sampler.sample_blocking()
    assert snap.seq == 1 and [g.uuid for g in snap.gpus] == [g.uuid for g in fake.gpus]
    assert sampler.snapshot is snap
