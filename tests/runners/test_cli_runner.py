"""The cli runner's result shape, stdin/env plumbing, GPU slots and its one-time notice."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed, SlotKind
from aitbc_miner.sandbox import Sandbox

from .helpers import FAST_KILL, Lines, behave, make_ctx, processes_of, without_cgroups

CAT = {"executable": "/usr/bin/cat", "stdin_max_bytes": 1000}


async def test_result_carries_stdout_exit_code_and_metrics(make_runner, tmp_path):
    runner = make_runner({"echo": behave("echo")})
    output = await runner.run({"type": "cli", "command": "echo", "args": ["a", "b"]},
                              make_ctx(tmp_path))
    assert output.result == {"status": "completed", "command": "echo", "exit_code": 0,
                             "stdout": "a b\n"}
    assert {"cpu_time_ms", "memory_peak_bytes", "output_bytes", "exit_code",
            "sandbox"} <= set(output.metrics)


async def test_stdin_and_allowed_variables_reach_the_job(make_runner, tmp_path):
    runner = make_runner({"cat": CAT, "status": behave("status", env={"QUALITY": None},
                                                       set_env={"MODE": "fast"})})
    cat = await runner.run({"type": "cli", "command": "cat", "stdin": "from stdin"},
                           make_ctx(tmp_path))
    status = await runner.run({"type": "cli", "command": "status", "env": {"QUALITY": "9"}},
                              make_ctx(tmp_path))
    env = json.loads(status.result["stdout"])["env"]
    assert cat.result["stdout"] == "from stdin"
    assert (env["QUALITY"], env["MODE"]) == ("9", "fast")


async def test_json_output_is_parsed_or_e_badresult(make_runner, tmp_path):
    runner = make_runner({"json": behave("echo", output="json")})
    good = await runner.run({"type": "cli", "command": "json", "args": ["123"]}, make_ctx(tmp_path))
    assert good.result["output"] == 123 and "stdout" not in good.result
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "json", "args": ["nope"]}, make_ctx(tmp_path))
    assert caught.value.code is ErrorCode.E_BADRESULT
    assert caught.value.message.startswith("output: entry 'json' promises JSON on stdout")


async def test_a_printed_secret_is_redacted_from_the_result(make_runner, tmp_path):
    from aitbc_miner import logs

    logs.add_secret("hunter2-redact-me")
    runner = make_runner({"echo": behave("echo")})
    output = await runner.run({"type": "cli", "command": "echo", "args": ["hunter2-redact-me"]},
                              make_ctx(tmp_path))
    assert output.result["stdout"] == "***\n"


async def test_gpu_entries_run_only_on_gpu_slots_and_see_only_their_gpu(make_runner, tmp_path):
    entries = {"gpu": behave("status", gpu=True), "cpu": behave("status")}
    gpu_runner = make_runner(entries, slot_kind=SlotKind.GPU)
    cpu_runner = make_runner(entries)
    ctx = make_ctx(tmp_path, slot_kind=SlotKind.GPU, gpu_uuid="GPU-1234")
    output = await gpu_runner.run({"type": "cli-gpu", "command": "gpu"}, ctx)
    assert json.loads(output.result["stdout"])["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-1234"
    assert gpu_runner.job_types == frozenset({"cli-gpu"})
    assert gpu_runner.capabilities() == {"cli_gpu_commands": ["gpu"]}
    assert cpu_runner.capabilities() == {"cli_commands": ["cpu"]}
    with pytest.raises(JobFailed) as on_cpu:
        await cpu_runner.run({"type": "cli", "command": "gpu"}, make_ctx(tmp_path))
    with pytest.raises(JobFailed) as on_gpu:
        await gpu_runner.run({"type": "cli-gpu", "command": "cpu"}, ctx)
    assert on_cpu.value.code is ErrorCode.E_UNSUPPORTED
    assert on_gpu.value.code is ErrorCode.E_DENY
    assert on_gpu.value.message == "gpu: entry 'cpu' may not use a GPU; send it as type 'cli'"


async def test_without_cgroups_the_miner_says_so_once(make_runner, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="aitbc_miner.sandbox.process")
    sandbox = Sandbox(without_cgroups(), **FAST_KILL)
    runner = make_runner({"echo": behave("echo", network="host")}, sandbox=sandbox)
    for _ in range(2):
        output = await runner.run({"type": "cli", "command": "echo", "args": ["x"]},
                                  make_ctx(tmp_path))
        assert output.metrics["sandbox"] == "rlimits"
    notices = [r for r in caplog.records if "cgroups are not usable here" in r.getMessage()]
    assert len(notices) == 1


async def test_the_job_main_pid_is_reported_for_gpu_accounting(make_runner, tmp_path):
    # Given a job that waits once it is ready
    runner = make_runner({"wait": behave("wait")})
    lines = Lines()
    ctx = make_ctx(tmp_path, lines=lines)
    reported: list[int] = []
    ctx.report_pid = reported.append
    # When it runs
    task = asyncio.create_task(runner.run({"type": "cli", "command": "wait"}, ctx))
    try:
        await lines.wait_for("ready")
        # Then the runner told the engine the host pid of the job's own process (the one
        # the GPU sampler sees in NVML), not bubblewrap's
        [job] = [p for p in processes_of(ctx.job_id) if p.name() != "bwrap"]
        assert reported == [job.pid]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
