"""Where the sandbox cannot be built nothing is offered; where it is opted out, it is said.

Also: what a sandboxed job's world looks like (its own root, read-only), and a GPU job
sees its own GPU's device nodes and no other's.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from aitbc_miner.devnet import Devnet
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.base import SlotKind
from aitbc_miner.runners.python import PythonRunner
from aitbc_miner.sandbox import Isolation, Sandbox

from .helpers import FAST_KILL, behave, host_features, make_ctx

NO_BWRAP = "process jobs refused: bubblewrap cannot build a sandbox here: no bubblewrap executable"


async def test_without_bubblewrap_process_runners_are_not_offered_and_jobs_say_why(
        make_runner, devnet: Devnet, make_engine, run_engine):
    # Given a host where bubblewrap cannot build a sandbox
    found = replace(host_features(), bwrap=False, bwrap_error="no bubblewrap executable")
    sandbox = Sandbox(found, **FAST_KILL)
    runner = make_runner({"echo": behave("echo")}, sandbox=sandbox)
    registry = RunnerRegistry([runner, PythonRunner(runner.settings, sandbox=sandbox)])
    # Then neither process runner is advertised, and the miner says why
    caps = registry.capabilities()
    assert caps["runners"] == {"cli": False, "python": False}
    assert not {"cli", "python"} & set(caps["job_types"])
    assert registry.warnings() == (NO_BWRAP,)
    # And a job that reaches the miner anyway fails with the code, and is never run weaker
    job = await devnet.submit_job({"type": "cli", "command": "echo", "args": ["x"]})
    engine = make_engine(devnet.url, registry=registry, pinned_key=devnet.public_key_id)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=30)
    assert engine.snapshot().warnings == (NO_BWRAP,)  # every screen shows the snapshot's
    await running.stop()
    seen = devnet.jobs[job["job_id"]]
    message = ("sandbox: bubblewrap cannot build a sandbox here: no bubblewrap executable; "
               "not run")
    expected = message if devnet.dialect.value == "2026-08" else f"E_SANDBOX_UNAVAILABLE: {message}"
    assert seen["state"] == "FAILED" and seen["error"] == expected


def test_opting_out_is_a_standing_warning(make_runner):
    runner = make_runner({}, sandbox=Sandbox(host_features(), isolation=Isolation.NONE))
    assert runner.available()
    assert RunnerRegistry([runner]).warnings() == (
        "ISOLATION OFF: process jobs run without a sandbox (runners.isolation: none)",)


def test_a_root_agent_without_its_job_user_runs_no_job(make_runner):
    sandbox = Sandbox(host_features(), job_user="no-such-user-here")
    if os.geteuid() != 0:
        assert sandbox.unavailable() is None  # an unprivileged agent needs no job user
        return
    runner = make_runner({}, sandbox=sandbox)
    assert not runner.available()
    refusal = runner.refusal()
    assert refusal is not None and refusal.code.value == "E_SANDBOX_UNAVAILABLE"
    assert "'no-such-user-here' does not exist" in refusal.message


async def test_the_job_sees_its_own_small_world(make_runner, tmp_path):
    # Given a job that lists its root and /dev, and tries to write to both
    runner = make_runner({"look": {
        "executable": "/usr/bin/dash", "fixed_args": ["-c", "ls -1 / /dev; id -u; "
                                                    "touch /etc/x /usr/x /dev/x 2>&1 | wc -l"],
        "network": "none"}})
    # When it runs
    output = await runner.run({"type": "cli", "command": "look"}, make_ctx(tmp_path))
    lines = output.result["stdout"].split("\n")
    # Then its root holds only system folders (no /root, /home, /var, /srv, /mnt), and /dev
    # only the basic nodes; it is never root; and none of those can be written
    root = lines[lines.index("/:") + 1:lines.index("")]
    assert set(root) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                         "run", "sbin", "tmp", "usr"} | {tmp_path.parts[1]}
    assert "root" not in root and "home" not in root and "var" not in root
    assert not any(name.startswith("nvidia") for name in lines)
    assert lines[-3] != "0" or os.geteuid() != 0  # a root agent's job is not root
    assert lines[-2] == "3"  # three refusals


async def test_a_gpu_job_sees_its_own_gpu_nodes_and_no_other(make_runner, tmp_path):
    # Given two (dummy) GPUs' device nodes and the driver's control nodes
    dev = tmp_path / "dev"
    dev.mkdir(mode=0o755)
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (dev / name).write_text(name)
        (dev / name).chmod(0o644)
    sandbox = Sandbox(host_features(), dev=dev, **FAST_KILL)
    entry = {"executable": "/usr/bin/ls", "fixed_args": ["-1", "/dev"], "gpu": True,
             "network": "none"}
    runner = make_runner({"gpu-ls": entry, "cpu-ls": {**entry, "gpu": False}}, sandbox=sandbox,
                         slot_kind=SlotKind.GPU)
    cpu_runner = make_runner({"cpu-ls": {**entry, "gpu": False}}, sandbox=sandbox)
    # When a job on GPU 1's slot and a CPU job list /dev
    ctx = make_ctx(tmp_path, slot_kind=SlotKind.GPU, gpu_uuid="GPU-1")
    ctx.gpu_index = "1"
    on_gpu = await runner.run({"type": "cli-gpu", "command": "gpu-ls"}, ctx)
    on_cpu = await cpu_runner.run({"type": "cli", "command": "cpu-ls"}, make_ctx(tmp_path))
    # Then the GPU job has GPU 1 and the control nodes, never GPU 0; the CPU job none
    seen = set(on_gpu.result["stdout"].split())
    assert {"nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"} <= seen
    assert "nvidia0" not in seen
    assert not [n for n in on_cpu.result["stdout"].split() if n.startswith("nvidia")]


def test_gpu_nodes_of_a_mig_instance_are_its_parents(tmp_path: Path):
    from aitbc_miner.sandbox.isolation import gpu_nodes

    assert [p.name for p in gpu_nodes("2:1", tmp_path)][0] == "nvidia2"
    assert gpu_nodes(None, tmp_path) == []
