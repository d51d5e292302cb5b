"""Who is on each GPU: per-process VRAM (compute and graphics), named with psutil, each
process's role for the miner (job, backend, miner, foreign), and a warning in the engine's
snapshot when someone else is on a GPU the miner schedules on. Real processes throughout
(``sleep``, a ``sleep`` named ``ollama``, PID 1 as the stranger); the GPU is the fake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from aitbc_miner.engine.gpu import gpu_status
from aitbc_miner.engine.slots import Slot, SlotKind
from aitbc_miner.gpu import Sampler
from aitbc_miner.gpu.processes import ProcessDirectory, ProcessInfo, ProcessRole
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

MakeSampler = Callable[..., tuple[FakeNvml, Sampler]]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def child_of(pid: int) -> int:
    """The PID of ``pid``'s child, once it has one (a shell's ``sleep``)."""
    parent = psutil.Process(pid)
    for _ in range(500):
        children = parent.children()
        if children:
            return children[0].pid
        psutil.wait_procs([], timeout=0.01)  # ~10 ms: the shell is forking
    raise AssertionError(f"{pid} started no child")


async def test_every_process_on_a_gpu_with_its_vram_user_command_and_role(
        sampler_for: MakeSampler, spawn: Callable[..., subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    # Given a job process, a sandbox-like job whose CUDA process is its child, an Ollama
    # server, this miner itself, and PID 1 (not ours: the stranger) on one GPU
    job = spawn("sleep", "60")
    wrapper = spawn("sh", "-c", "sleep 60 & wait")
    wrapped = child_of(wrapper.pid)
    ollama_exe = tmp_path / "ollama"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", ollama_exe)
    server = spawn(str(ollama_exe), "60")
    me = os.getpid()
    fake, sampler = sampler_for(FakeNvml([FakeGpu(
        processes={job.pid: 3000, wrapped: 1500, server.pid: 9000, 1: 2048},
        graphics={me: 300, 1: 2048}, process_util={server.pid: 83, 1: 12, 999_999: 50})]),
        process_every=1)
    sampler.track_job("job-a", fake.gpus[0].uuid, [job.pid])
    sampler.track_job("job-b", fake.gpus[0].uuid, [wrapper.pid])
    # When it is sampled
    snap = await sampler.sample_once()
    procs = {p.pid: p for p in snap.gpus[0].processes}
    # Then each process has its VRAM, kind, user, command and role
    assert [p.pid for p in snap.gpus[0].processes] == [server.pid, job.pid, 1, wrapped, me]
    assert (procs[job.pid].role, procs[job.pid].job_id, procs[job.pid].vram_mib) == (
        ProcessRole.JOB, "job-a", 3000)
    assert (procs[wrapped].role, procs[wrapped].job_id) == (ProcessRole.JOB, "job-b")
    assert (procs[server.pid].role, procs[server.pid].command) == (ProcessRole.BACKEND,
                                                                   "ollama")
    assert (procs[me].role, procs[me].kind, procs[me].vram_mib) == (ProcessRole.MINER, "G", 300)
    stranger = procs[1]
    assert stranger.role is ProcessRole.FOREIGN and stranger.kind == "C+G"
    assert stranger.vram_mib == 2048  # one context in both lists: counted once
    assert stranger.user == psutil.Process(1).username()
    assert stranger.command == psutil.Process(1).name()
    assert procs[job.pid].user == psutil.Process().username()
    assert procs[job.pid].command == "sleep"
    # And each its share of the SMs where NVML has a sample (a PID on no list is ignored)
    assert {p.pid: p.sm_pct for p in procs.values()} == {
        job.pid: None, wrapped: None, server.pid: 83, me: None, 1: 12}
    # And a second sample names nobody again (cached per process start)
    lookups = sampler.process_lookups
    await sampler.sample_once()
    assert sampler.process_lookups == lookups == 5


async def test_someone_else_on_a_scheduled_gpu_is_a_warning_in_the_snapshot(
        sampler_for: MakeSampler) -> None:
    # Given GPU 0 (the miner's slot) and GPU 1 (no slot), each with PID 1 on it
    fake, sampler = sampler_for(FakeNvml([FakeGpu(processes={1: 3072}),
                                          FakeGpu(processes={1: 1024})]), process_every=1)
    tele = await sampler.sample_once()
    slots = [Slot("gpu:0", SlotKind.GPU, gpu_uuid=fake.gpus[0].uuid)]
    # When the engine makes its GPU status
    status = gpu_status(tele, slots)
    # Then GPU 0 warns, naming the process and its VRAM; GPU 1 is not the miner's business
    who = psutil.Process(1)
    assert status.warnings == (
        f"GPU 0: someone else is on it: pid 1 ({who.username()}, {who.name()}) holds 3.0 GiB",)
    assert [len(g.foreign) for g in status.gpus] == [1, 1]
    assert status.gpus[0].processes[0].vram_mib == 3072


async def test_devices_without_process_lists_and_odd_answers_never_stop_sampling(
        sampler_for: MakeSampler) -> None:
    # Given GPU 0 that supports no process list, and GPU 1 whose power call breaks oddly
    fake, sampler = sampler_for(FakeNvml([
        FakeGpu(util_gpu=30, processes={1: 10}, unsupported={
            "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
            "nvmlDeviceGetProcessUtilization"}),
        FakeGpu(util_gpu=70)]), process_every=1)

    def broken(handle: object) -> int:
        if handle.gpu is fake.gpus[1]:  # type: ignore[attr-defined]
            raise RuntimeError("driver answered garbage")
        return 60_000

    fake.nvmlDeviceGetPowerUsage = broken  # type: ignore[method-assign]
    # When sampled
    snap = await sampler.sample_once()
    # Then GPU 0 reads without processes, GPU 1 is N/A for this sample (not lost), and
    # the next sample goes on
    assert snap.gpus[0].processes == () and snap.gpus[0].sample.util_gpu_pct == 30
    assert not snap.gpus[1].lost and snap.gpus[1].sample.reason is not None
    assert "garbage" in snap.gpus[1].sample.reason
    fake.nvmlDeviceGetPowerUsage = lambda handle: 90_000  # type: ignore[method-assign]
    later = await sampler.sample_once()
    assert later.gpus[1].sample.util_gpu_pct == 70 and later.gpus[1].sample.reason is None


@pytest.mark.skipif(sys.platform != "linux", reason="PIDs of /proc")
async def test_a_process_that_is_gone_keeps_its_vram_and_has_no_name(
        sampler_for: MakeSampler, spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    gone = spawn("true")
    gone.wait()
    fake, sampler = sampler_for(FakeNvml([FakeGpu(processes={gone.pid: 77})]), process_every=1)
    snap = await sampler.sample_once()
    (proc,) = snap.gpus[0].processes
    assert (proc.vram_mib, proc.user, proc.command) == (77, None, None)
    assert proc.role is ProcessRole.FOREIGN


def test_names_are_cached_then_checked_again(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    # Given a directory with a hand-moved clock, and a process it has named
    now = [0.0]
    directory = ProcessDirectory(recheck_s=30.0, clock=lambda: now[0])
    proc = spawn("sleep", "60")
    assert directory.resolve([proc.pid])[proc.pid].command == "sleep"
    # When the process ends, its name stands until the recheck is due (no /proc read)
    proc.kill()
    proc.wait()
    now[0] = 29.0
    assert directory.resolve([proc.pid])[proc.pid].command == "sleep"
    # Then at the recheck the PID is read again: gone, it has no name any more
    now[0] = 30.0
    assert directory.resolve([proc.pid])[proc.pid] == ProcessInfo(proc.pid)
    assert directory.lookups == 1
