"""A secret reaches the job's file and nothing else: not logs, journal, result, env, or ps."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine.snapshot import JobLogLine
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.allowlist import Allowlist
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.settings import RunnerSettings
from aitbc_miner.sandbox import Isolation, Sandbox

from .helpers import (
    FAST_KILL,
    Lines,
    behave,
    features_or_skip,
    host_features,
    make_ctx,
    processes_of,
    sandbox_or_skip,
    write_allowlist,
)

ARGS = {"max_count": 1, "rules": [{"type": "enum", "choices": ["api_token"]}]}


def _release(job_id: str) -> None:
    """Let the waiting job finish (SIGUSR1 to its own process, not to bubblewrap's)."""
    for proc in processes_of(job_id):
        if proc.name() != "bwrap":
            proc.send_signal(signal.SIGUSR1)


def _in_process_table(secret: str) -> list[str]:
    hits = []
    for proc in psutil.process_iter():
        try:
            text = " ".join(proc.cmdline()) + " " + " ".join(proc.environ().values())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if secret in text:
            hits.append(f"{proc.pid} {proc.name()}")
    return hits


def _files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_fifo()
            and secret in p.read_bytes()]


async def test_secret_reaches_only_the_jobs_file(devnet: Devnet, make_engine, run_engine,
                                                 tmp_path: Path, caplog) -> None:
    features_or_skip(tmpfs=True)
    caplog.set_level(logging.DEBUG)
    secret = f"s3cret-{uuid.uuid4().hex}"
    # Given an entry that needs `api_token`, whose value is in the operator's config
    folder = write_allowlist(tmp_path / "allowlist.d",
                             {"secret": behave("secret", secrets=["api_token"], args=ARGS)})
    settings = RunnerSettings.model_validate({"allowlist_dirs": [folder], "kill": FAST_KILL,
                                              "secrets": {"api_token": {"value": secret}}})
    runner = CliRunner(settings, allowlist=Allowlist.load([folder], secrets=["api_token"]),
                       sandbox=sandbox_or_skip())
    job = await devnet.submit_job({"type": "cli", "command": "secret", "args": ["api_token"]})
    engine = make_engine(devnet.url, registry=RunnerRegistry([runner]),
                         pinned_key=devnet.public_key_id)
    events = engine.subscribe()
    running = run_engine(engine)
    # When the job has read it and waits
    async with asyncio.timeout(20):
        async for event in events:
            if isinstance(event, JobLogLine) and event.line == "ready":
                break
    seen_by_ps = _in_process_table(secret)
    workspace = tmp_path / "miner" / "jobs" / job["job_id"]
    host_view = sorted(os.listdir(workspace))
    _release(job["job_id"])
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=30)
    await running.stop()
    events.close()
    # Then the job read the right value from a 0400 file in a private 0700 tmpfs ...
    answer = (await devnet.client_request("GET", f"/jobs/{job['job_id']}/result")).json()
    report = json.loads(answer["result"]["stdout"].splitlines()[0])
    assert report["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert (report["dir"], report["dir_mode"], report["file_mode"], report["fs"]) == (
        "/run/secrets", "0o700", "0o400", ["tmpfs"])
    assert report["in_env"] is False and report["in_argv"] is False
    # ... which the host's view of the workspace never held
    assert "secrets" not in host_view
    # And the value is nowhere else: process table, result, logs, journal, workspace
    assert seen_by_ps == []
    assert secret not in json.dumps(answer)
    assert secret not in caplog.text
    assert _files_containing(tmp_path, secret.encode()) == []


async def test_without_a_private_tmpfs_secrets_sit_in_a_private_shm_folder_for_the_run_only(
        make_runner, tmp_path: Path) -> None:
    # Given the sandbox turned off, on a host without mount namespaces
    secret = f"s3cret-{uuid.uuid4().hex}"
    sandbox = Sandbox(replace(host_features(), private_tmpfs=False), isolation=Isolation.NONE,
                      **FAST_KILL)
    runner = make_runner({"secret": behave("secret", secrets=["api_token"], args=ARGS,
                                           network="host")},
                         sandbox=sandbox, secrets={"api_token": {"value": secret}})
    lines = Lines()
    ctx = make_ctx(tmp_path, lines=lines)
    task = asyncio.create_task(runner.run(
        {"type": "cli", "command": "secret", "args": ["api_token"]}, ctx))
    # When the job has read it
    await lines.wait_for("ready")
    report = json.loads(lines.lines[0])
    folder = Path(report["dir"])
    during = sorted(os.listdir(folder))
    _release(ctx.job_id)
    output = await task
    # Then it came from a 0400 file in a 0700 folder in /dev/shm, removed after the job
    assert report["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert (report["dir_mode"], report["file_mode"]) == ("0o700", "0o400")
    assert folder.parent == Path("/dev/shm") and folder.name.startswith("aitbc-secrets-")
    assert during == ["api_token"] and not folder.exists()
    assert secret not in json.dumps(output.result)
    assert _files_containing(tmp_path, secret.encode()) == []


@pytest.mark.parametrize("source", ["value", "file"])
def test_secret_sources_are_read_per_job_and_redacted_from_logs(tmp_path: Path, source: str,
                                                                caplog) -> None:
    from aitbc_miner import logs

    value = f"tok-{uuid.uuid4().hex}"
    secret_file = tmp_path / "token"
    secret_file.write_text(value + "\n")
    spec = {"value": value} if source == "value" else {"file": str(secret_file)}
    settings = RunnerSettings.model_validate({"allowlist_dirs": [], "secrets": {"t": spec}})
    read = settings.secret_values(["t"])["t"]
    assert read.strip() == value.encode()
    assert logs.redact(f"leaked {value}") == "leaked ***"
    assert value not in repr(settings)
