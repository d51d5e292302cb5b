"""Every error code, produced by a real job through a real engine, as the client sees it.

Each case submits one job to the reference coordinator (both dialects), runs an engine
with the process runners until the outcome is delivered, and checks the failure text
the coordinator stores: ``"<code>: <message>"`` on 2026-01, the message on 2026-08.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.artifacts import Uploader
from aitbc_miner.backoff import Backoff
from aitbc_miner.codes import ErrorCode
from aitbc_miner.devnet import Devnet
from aitbc_miner.engine.snapshot import JobLogLine
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.allowlist import Allowlist
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.python import PythonRunner
from aitbc_miner.runners.settings import RunnerSettings

from .helpers import FAST_KILL, PY, behave, default_network, sandbox_or_skip, write_allowlist

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures_runners"
During = Callable[[Any, Any, str], Awaitable[None]]


async def _cancel_when_ready(engine: Any, events: Any, job_id: str) -> None:
    async with asyncio.timeout(20):
        async for event in events:
            if isinstance(event, JobLogLine) and event.job_id == job_id and event.line == "ready":
                break
    assert engine.cancel(job_id)


@dataclass(frozen=True)
class Case:
    payload: dict[str, Any]
    message: str  # what the client's error text starts with (after "<code>: " on 2026-01)
    during: During | None = None


CASES: dict[ErrorCode, Case] = {
    ErrorCode.E_DENY: Case({"type": "cli", "command": "rm", "args": ["-rf", "/"]},
                           "command.unknown: no allowlist entry named 'rm'"),
    ErrorCode.E_BADJOB: Case({"type": "cli", "command": "echo", "args": "a b"},
                             "'args' must be a list of strings"),
    ErrorCode.E_UNSUPPORTED: Case({"type": "cli", "command": "cuda"},
                                  "gpu: entry 'cuda' uses a GPU; send it as type 'cli-gpu'"),
    ErrorCode.E_TIMEOUT: Case({"type": "cli", "command": "spin", "timeout_s": 1},
                              "ran past its 1s limit"),
    ErrorCode.E_OOM: Case({"type": "cli", "command": "hog", "args": ["512"]},
                          "limits.memory_mb: "),
    ErrorCode.E_EXIT: Case({"type": "cli", "command": "fail", "args": ["3"]},
                           "exited with code 3: something went wrong on purpose"),
    ErrorCode.E_OUTPUT_LIMIT: Case({"type": "cli", "command": "spam", "args": ["1000000"]},
                                   "limits.output_bytes: wrote more than 65536 bytes"),
    ErrorCode.E_CANCELED: Case({"type": "cli", "command": "wait"}, "canceled by operator",
                               during=_cancel_when_ready),
    ErrorCode.E_BADRESULT: Case({"type": "python", "function": "trusted_jobs:bad_result"},
                                "trusted_jobs:bad_result returned a set that is not JSON"),
    ErrorCode.E_BACKEND_UNAVAILABLE: Case(
        {"type": "cli", "command": "write", "args": ["big.bin", "4096"]},
        "artifacts.upload_url: out/big.bin could not be uploaded after 2 attempts "
        "(last: HTTP 503)"),
    ErrorCode.E_INTERNAL: Case({"type": "cli", "command": "broken"},
                               "sandbox: could not start the executable: "),
    ErrorCode.E_DISK: Case({"type": "cli", "command": "fill", "args": ["big.bin", "3000000"]},
                           "limits.disk_mb: filled its 1 MiB workspace"),
}
# Produced by a dedicated test, or by a runner outside this issue.
ELSEWHERE = {
    ErrorCode.E_INTERRUPTED: "test_agent_death.py (the agent is killed mid-job)",
    ErrorCode.E_MODEL_NOT_FOUND: "the Ollama runner",
    ErrorCode.E_GPU_LOST: "the GPU monitor",
    ErrorCode.E_SANDBOX_UNAVAILABLE: "test_isolation.py (a host without bubblewrap)",
}


def test_every_error_code_is_produced_by_a_case_here_or_named_elsewhere():
    assert set(CASES) | set(ELSEWHERE) == set(ErrorCode)
    assert not set(CASES) & set(ELSEWHERE)


@pytest.fixture
def registry(tmp_path: Path, artifact_store: Any) -> RunnerRegistry:
    store, url = artifact_store
    store.fail_next(503, 503, 503)
    garbage = tmp_path / "bin" / "garbage"
    garbage.parent.mkdir(mode=0o755)
    garbage.write_bytes(b"\x7fNOT-ELF")
    garbage.chmod(0o755)
    folder = write_allowlist(tmp_path / "allowlist.d", {
        "echo": behave("echo"),
        "cuda": behave("echo", gpu=True),
        "spin": behave("spin"),
        "hog": behave("hog", limits={"memory_mb": 64}),
        "fail": behave("fail", args={"max_count": 1, "rules": [{"type": "int"}]}),
        "spam": behave("spam", limits={"output_bytes": 65536}),
        "wait": behave("wait"),
        "write": behave("write", args={"max_count": 2, "rest": {"type": "string"}}),
        "fill": behave("write", args={"max_count": 2, "rest": {"type": "string"}},
                       limits={"disk_mb": 1}),
        "broken": {"executable": str(garbage)},
    })
    settings = RunnerSettings.model_validate({
        "allowlist_dirs": [folder], "kill": FAST_KILL,
        "artifacts": {"inline_max_bytes": 100, "upload_url": url + "/v1/miners/{job_id}/artifacts"},
        "python": {"executable": PY, "paths": [str(FIXTURES)], "functions": [
            {"target": "trusted_jobs:bad_result", "network": default_network()}]},
    })
    uploader = Uploader(settings.artifacts.upload_url or "", attempts=2,
                        backoff=Backoff(base_s=0.01, cap_s=0.02))
    cli = CliRunner(settings, allowlist=Allowlist.load([folder]), uploader=uploader,
                    sandbox=sandbox_or_skip())
    return RunnerRegistry([cli, PythonRunner(settings)])


@pytest.mark.parametrize("code", list(CASES), ids=[c.value for c in CASES])
async def test_error_code_reaches_the_client(code: ErrorCode, devnet: Devnet, make_engine,
                                             run_engine, registry: RunnerRegistry) -> None:
    case = CASES[code]
    # Given a job that ends in this code, and a miner running the process runners
    job = await devnet.submit_job(case.payload)
    engine = make_engine(devnet.url, registry=registry, pinned_key=devnet.public_key_id)
    events = engine.subscribe()
    running = run_engine(engine)
    # When it runs (and, for a cancel, the operator cancels it once it is running)
    if case.during is not None:
        await case.during(engine, events, job["job_id"])
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=30)
    await running.stop()
    events.close()
    # Then the coordinator holds the failure with the code and the rule in its text
    seen = devnet.jobs[job["job_id"]]
    assert seen["state"] == "FAILED"
    expected = case.message if devnet.dialect.value == "2026-08" else f"{code}: {case.message}"
    assert seen["error"].startswith(expected), seen["error"]
