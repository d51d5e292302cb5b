"""The python runner: trusted functions only, in a child process, JSON in and out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed
from aitbc_miner.runners.python import PythonRunner
from aitbc_miner.runners.settings import RunnerSettings

from .helpers import FAST_KILL, PY, Lines, default_network, make_ctx, processes_of, sandbox_or_skip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures_runners"
FUNCTIONS = ["trusted_jobs:add", "trusted_jobs:add_later", "trusted_jobs:whoami",
             "trusted_jobs:bad_result", "trusted_jobs:not_finite", "trusted_jobs:boom",
             "trusted_jobs:chatty", {"target": "trusted_jobs:artifact", "network": "host"}]


@pytest.fixture
def runner() -> PythonRunner:
    functions = [f if isinstance(f, dict) else {"target": f, "network": default_network()}
                 for f in FUNCTIONS]
    sandbox_or_skip()
    return PythonRunner(RunnerSettings.model_validate({
        "allowlist_dirs": [], "kill": FAST_KILL,
        "python": {"executable": PY, "paths": [str(FIXTURES)], "functions": functions}}))


async def _fail(runner: PythonRunner, payload: dict[str, Any], tmp_path: Path) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "python", **payload}, make_ctx(tmp_path))
    return caught.value


@pytest.mark.parametrize("target", ["trusted_jobs:add", "trusted_jobs:add_later"])
async def test_a_trusted_function_gets_the_payload_and_its_value_is_the_output(
        runner, tmp_path, target):
    # Given a configured function (plain or async) / When a job calls it with input
    output = await runner.run({"type": "python", "function": target, "a": 2, "b": 40},
                              make_ctx(tmp_path))
    # Then its return value is the result's output, with process metrics
    assert output.result == {"status": "completed", "function": target, "output": {"sum": 42}}
    assert output.metrics["exit_code"] == 0 and output.metrics["cpu_time_ms"] >= 0


async def test_the_function_runs_in_a_child_process_never_in_the_agent(runner, tmp_path):
    ctx = make_ctx(tmp_path)
    output = await runner.run({"type": "python", "function": "trusted_jobs:whoami"}, ctx)
    seen = output.result["output"]
    assert seen["pid"] != os.getpid() and seen["ppid"] != os.getpid()
    # In a session of its own: bubblewrap's init (pid 1 of the job's namespace) leads it
    assert seen["sid"] in (seen["pid"], 1) and seen["job_id"] == ctx.job_id
    assert processes_of(ctx.job_id) == []


@pytest.mark.parametrize(("target", "text"), [
    ("trusted_jobs:bad_result", "trusted_jobs:bad_result returned a set that is not JSON"),
    ("trusted_jobs:not_finite", "trusted_jobs:not_finite returned a float that is not JSON"),
])
async def test_a_result_that_is_not_json_is_e_badresult(runner, tmp_path, target, text):
    failure = await _fail(runner, {"function": target}, tmp_path)
    assert failure.code is ErrorCode.E_BADRESULT and failure.message.startswith(text)


async def test_an_exception_is_e_exit_with_the_traceback_tail(runner, tmp_path):
    failure = await _fail(runner, {"function": "trusted_jobs:boom"}, tmp_path)
    assert failure.code is ErrorCode.E_EXIT
    assert failure.message.startswith("exited with code 1: ")
    assert "ValueError: the function failed on purpose" in failure.message


@pytest.mark.parametrize("target", ["os:system", "trusted_jobs:secret_thing", "builtins:eval"])
async def test_functions_not_in_the_config_are_refused(runner, tmp_path, target):
    failure = await _fail(runner, {"function": target}, tmp_path)
    assert failure.code is ErrorCode.E_DENY
    assert failure.message.startswith("function.unknown: ")


async def test_a_missing_function_name_is_e_badjob(runner, tmp_path):
    assert (await _fail(runner, {"function": 7}, tmp_path)).code is ErrorCode.E_BADJOB


async def test_printed_lines_are_logs_not_the_result(runner, tmp_path):
    lines = Lines()
    output = await runner.run({"type": "python", "function": "trusted_jobs:chatty"},
                              make_ctx(tmp_path, lines=lines))
    assert output.result["output"] == "done"
    assert lines.lines == ["a line the function printed"]


async def test_files_in_out_become_artifacts(runner, tmp_path):
    output = await runner.run({"type": "python", "function": "trusted_jobs:artifact",
                               "name": "a.bin", "size": 5}, make_ctx(tmp_path))
    assert [(a["path"], a["size"], a["delivery"]) for a in output.result["artifacts"]] == [
        ("a.bin", 5, "inline")]


def test_targets_must_name_a_module_and_function():
    with pytest.raises(ValueError, match=r"must look like package\.module:function"):
        RunnerSettings.model_validate({"python": {"functions": ["os.system"]}})
