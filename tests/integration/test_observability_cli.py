"""The command line as an operator (and systemd, and a shell pipe) meets it: global flags
anywhere, one ``--format``, ``--log-level``, one INFO line per job, ``ctl events`` in the
log schema, journald priorities, one-line operator errors, and a reader that leaves.

Real subprocesses against the reference coordinator; nothing sleeps to synchronise.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
from typing import Any

import pytest

from .conftest import MINER_EXE, WAIT_S, DevnetProc, MinerLauncher, event_is

pytestmark = pytest.mark.timeout(120)

CORE = ("ts", "level", "logger", "event", "msg")


def cli(miner: MinerLauncher, *args: str,
        **settings: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MINER_EXE), *args], env=miner.env(None, **settings),
                          cwd=miner.root, capture_output=True, text=True, timeout=WAIT_S,
                          stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single stderr line of an operator error, checked."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in lines[0], lines
    return lines[0]


# --- global flags, before or after the subcommand -------------------------------------------


def test_global_flags_work_after_the_subcommand(miner: MinerLauncher) -> None:
    # Given a config file of the operator's
    cfg = miner.root / "x.yaml"
    cfg.write_text("miner:\n  region: eu-test\n", encoding="utf-8")
    # When the flags come after the subcommand (or its action), or before it
    after = cli(miner, "config", "check", "--config", str(cfg), "--log-level", "warning")
    before = cli(miner, "--config", str(cfg), "config", "check")
    mixed = cli(miner, "--log-level", "error", "config", "--config", str(cfg), "check")
    # Then each reads the file, and the flags' values
    for result in (after, before, mixed):
        assert result.returncode == 0, result.stderr
        assert f"# config file: {cfg}" in result.stdout and "region: eu-test" in result.stdout
    assert "level: WARNING" in after.stdout and "level: ERROR" in mixed.stdout
    assert "level: DEBUG" in before.stdout  # the environment's (the test harness sets it)


def test_a_subcommand_reads_the_config_named_after_it(miner: MinerLauncher) -> None:
    # Given a config whose state dir holds no running miner
    state = miner.root / "elsewhere"
    cfg = miner.root / "x.yaml"
    cfg.write_text(f"paths:\n  state_dir: {state}\n", encoding="utf-8")
    # When ctl is given it after its action
    result = cli(miner, "ctl", "status", "--config", str(cfg), PATHS__STATE_DIR=None)
    # Then it looked where that config says, and says so in one line
    one_line(result, 1, "no miner is running here", str(state / "control.sock"))


# --- one miner: INFO, ctl, formats -------------------------------------------------------------


def _lines_with_job(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [ln for ln in lines if "job_id" in ln]


def test_at_info_a_job_is_one_line_and_ctl_events_speak_the_log_schema(
        start_devnet, miner: MinerLauncher) -> None:
    # Given a headless miner at INFO (the flag beats the environment's DEBUG)
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet, "--log-level", "info")
    proc.wait_for(event_is("registered"))
    # When it runs two good jobs and a malformed one
    jobs = [devnet.submit({"type": "echo", "data": "hi"}),
            devnet.submit({"type": "sha256", "data": "x"}),
            devnet.submit({"type": "sleep", "seconds": "soon"})]
    for job_id in jobs:
        proc.wait_for(event_is("outcome_delivered", job_id=job_id))
    # ... and the operator reads its events and status through ctl
    events = subprocess.Popen([str(MINER_EXE), "ctl", "events"], env=miner.env(None),
                              cwd=miner.root, stdout=subprocess.PIPE, text=True)
    try:
        assert events.stdout is not None
        seen = [json.loads(events.stdout.readline()) for _ in range(4)]
    finally:
        events.kill()
        events.wait(WAIT_S)
        assert events.stdout is not None
        events.stdout.close()
    status = cli(miner, "ctl", "status", "--format", "json")
    text = cli(miner, "ctl", "status", "--format", "text")
    proc.send(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.tail()
    # Then each job has exactly one line at INFO and above: its summary, naming how it ended
    # (WARNING for the failed one)
    per_job = _lines_with_job(proc.lines())
    assert sorted(ln["job_id"] for ln in per_job) == sorted(jobs), per_job
    assert [(ln["level"], ln["event"]) for ln in sorted(
        per_job, key=lambda ln: jobs.index(ln["job_id"]))] == [
        ("INFO", "outcome_delivered"), ("INFO", "outcome_delivered"),
        ("WARNING", "outcome_delivered")]
    summary = {ln["job_id"]: ln for ln in per_job}
    assert summary[jobs[0]]["outcome"] == "completed" and summary[jobs[0]]["job_type"] == "echo"
    assert summary[jobs[0]]["receipt_id"] and summary[jobs[0]]["duration_s"] >= 0
    assert summary[jobs[2]]["code"] == "E_BADJOB" and "E_BADJOB" in summary[jobs[2]]["msg"]
    # ... every line of the miner's has the one schema
    assert all(all(key in ln for key in CORE) for ln in proc.lines())
    # ... ctl events prints the same schema (the recent events first)
    assert all(all(key in ln for key in CORE) for ln in seen), seen
    assert "registered" in {ln["event"] for ln in seen}
    assert not any("at" in ln or "message" in ln for ln in seen)
    # ... and --format picks ctl's output
    assert status.returncode == 0 and json.loads(status.stdout)["miner_id"] == "rig-it"
    assert text.returncode == 0 and text.stdout.startswith("rig-it @ ")
    # When, stopped, its journal is reported in each format ("table" is read as "text")
    formats = {fmt: cli(miner, "receipts", "--format", fmt)
               for fmt in ("text", "table", "json", "csv")}
    earned = cli(miner, "earnings", "--format", "json")
    # Then each format is what it says
    assert all(r.returncode == 0 for r in (*formats.values(), earned)), formats
    assert formats["text"].stdout == formats["table"].stdout
    assert len(json.loads(formats["json"].stdout)) == 2
    assert len(list(csv.DictReader(io.StringIO(formats["csv"].stdout)))) == 2
    assert isinstance(json.loads(earned.stdout), dict)


def test_log_level_warning_leaves_routine_lines_out(start_devnet, miner: MinerLauncher) -> None:
    # Given a headless miner at WARNING that runs a job
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet, "--log-level", "WARNING")
    job_done(devnet, devnet.submit({"type": "echo", "data": "quiet"}))
    proc.send(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.tail()
    # Then it logged nothing below WARNING
    assert {ln["level"] for ln in proc.lines()} <= {"WARNING", "ERROR", "CRITICAL"}, proc.tail()


def job_done(devnet: DevnetProc, job_id: str) -> None:
    """Wait (bounded polling of the coordinator, where nothing can be awaited) until the
    job is completed."""
    devnet.poll_until(lambda _s: devnet.job(job_id)["state"] == "COMPLETED",
                      what=f"job {job_id} completed")


# --- a reader that leaves -------------------------------------------------------------------------


def test_a_shell_pipe_into_head_ends_the_demo_quietly(miner: MinerLauncher) -> None:
    # When the operator pipes the headless demo into head (pipefail: the demo's own status)
    script = (f"set -o pipefail; {MINER_EXE} demo --headless --simulate-gpus 0 2>demo.err "
              "| head -n 3")
    result = subprocess.run(["bash", "-c", script], env=miner.env(None), cwd=miner.root,
                            capture_output=True, text=True, timeout=90)
    # Then head got its lines, and the demo drained and ended on its own: status 0, no word
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert len(result.stdout.splitlines()) == 3
    assert all(json.loads(line)["event"] for line in result.stdout.splitlines())
    assert (miner.root / "demo.err").read_text(encoding="utf-8") == ""


def test_a_closed_stdout_drains_the_miner_and_ends_it(start_devnet, miner: MinerLauncher) -> None:
    # Given a headless miner whose stdout reader is gone once it registered
    devnet: DevnetProc = start_devnet("2026-08")
    proc = subprocess.Popen([str(MINER_EXE), "--headless"], env=miner.env(devnet),
                            cwd=miner.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if json.loads(line)["event"] == "registered":
                break
        proc.stdout.close()
        # When it has something to say (a job arrives)
        job_id = devnet.submit({"type": "echo", "data": "nobody reads this"})
        # Then it finishes that job, delivers it and exits 0, without a word on stderr
        assert proc.wait(WAIT_S) == 0
        assert proc.stderr.read() == ""
        job_done(devnet, job_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


# --- operator errors: one line, an exit code, never a traceback -----------------------------------


@pytest.mark.parametrize("which", ["STATE_DIR", "DATA_DIR"])
def test_an_unusable_folder_is_one_line(miner: MinerLauncher, which: str) -> None:
    # Given the state (or data) dir is a file
    blocker = miner.root / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    # When the miner starts
    result = cli(miner, "--headless", **{f"PATHS__{which}": str(blocker)})
    # Then it says which path, in one line, and exits 1
    one_line(result, 1, "aitbc-miner: error: ", str(blocker))


def test_a_metrics_address_in_use_is_one_line_naming_it(start_devnet,
                                                         miner: MinerLauncher) -> None:
    # Given the metrics port is taken
    devnet: DevnetProc = start_devnet("2026-08")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When the miner starts at the quietest level
        proc = miner.start(devnet, "--log-level", "error", METRICS__LISTEN=f"127.0.0.1:{port}")
        code = proc.wait_exit()
    # Then it exits 1 with one line naming the setting and the cause
    assert code == 1, proc.tail()
    lines = proc.lines()
    assert [ln["event"] for ln in lines] == ["fatal_error"], proc.tail()
    assert f"metrics.listen 127.0.0.1:{port}" in lines[0]["msg"]
    assert "address already in use" in lines[0]["msg"].lower()
    assert "Traceback" not in proc.text()


def test_under_systemd_an_operator_error_carries_the_error_priority(
        miner: MinerLauncher) -> None:
    # Given stderr is the journal stream systemd named (a real pipe standing in for it)
    read, write = os.pipe()
    st = os.fstat(write)
    env = miner.env(None)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    # When the miner is given a config file that does not exist
    with os.fdopen(read, encoding="utf-8") as err:
        proc = subprocess.Popen([str(MINER_EXE), "--headless", "--config",
                                 str(miner.root / "missing.yaml")], env=env, cwd=miner.root,
                                stdout=subprocess.DEVNULL, stderr=write,
                                stdin=subprocess.DEVNULL)
        os.close(write)
        text = err.read()
    # Then journald gets one line at priority 3 (SD_ERR)
    assert proc.wait(WAIT_S) == 2
    [line] = text.splitlines()
    assert line.startswith("<3>config error") and "missing.yaml" in line, line
