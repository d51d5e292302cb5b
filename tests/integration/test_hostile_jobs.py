"""Strangers' code against a real agent: every escape a job tries is stopped, by its effects.

One headless agent (root, or the unprivileged ``aitbc-test``), the reference coordinator,
and a victim job holding a secret and a file. Then each attack of
``fixtures_runners/hostile.py`` runs twice, as an allowlisted command and as a trusted
Python function. Nothing the attacks report is believed: the test looks at the host's
files, at a server the jobs try to reach, at what the victim still holds, at the process
table, and at what the coordinator's client receives. Last, the agent must still be
serving: the victim completes intact and a plain job completes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.runners.helpers import sandbox_or_skip
from tests.unprivileged import as_user, give

from .conftest import MINER_KEY, TERMINAL, event_is, message_has

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures_runners"
HOSTILE = str(FIXTURES / "hostile.py")
JOB_PYTHON = "/usr/bin/python3"  # one the job user can run (the test's may be under /root)
ANY_TEXT = {"max_count": 1, "rules": [{"type": "string", "pattern": "[ -~]*",
                                       "max_length": 8192}]}
LIMITS = {"memory_mb": 256, "disk_mb": 16, "timeout_s": 60, "processes": 64}


class Canary:
    """A TCP server the jobs must never reach; it counts every connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()


def _layout(root: Path, secret: str) -> dict[str, Path]:
    allow = root / "allowlist.d"
    allow.mkdir(mode=0o755)
    entry = {"executable": os.path.realpath(JOB_PYTHON), "fixed_args": ["-I", HOSTILE],
             "read_only": [HOSTILE], "args": ANY_TEXT, "network": "none", "limits": LIMITS}
    (allow / "hostile.yaml").write_text(yaml.safe_dump({"commands": {
        "hostile": entry, "victim": {**entry, "secrets": ["vtok"]}}}))
    key = root / "miner.key"
    key.write_text(MINER_KEY + "\n")
    key.chmod(0o600)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "miner": {"key_file": str(key)},
        "runners": {
            "allowlist_dirs": [str(allow)],
            "kill": {"sigint_grace_s": 0.5, "sigterm_grace_s": 0.5},
            "secrets": {"vtok": {"value": secret}},
            "python": {"executable": JOB_PYTHON, "paths": [str(FIXTURES)], "functions": [
                {"target": "hostile:attack", "network": "none", "limits": LIMITS}]}}}))
    config.chmod(0o600)
    return {"key": key, "config": config, "allow": allow}


def _start(miner: Any, devnet: Any, files: dict[str, Path], agent: str) -> Any:
    settings = {"SLOTS__CPU": "3", "LOG__LEVEL": "DEBUG", "MINER__KEY": None,
                "JOBS__DEFAULT_TIMEOUT_S": "60"}
    for folder in (miner.state_dir, miner.data_dir):
        folder.mkdir(mode=0o700)
    if agent == "root":
        return miner.start(devnet, "--config", str(files["config"]), **settings)
    prefix, env, account = as_user()
    give(miner.root, account)
    for path in (files["allow"], files["allow"] / "hostile.yaml"):
        os.chown(path, 0, 0)  # the operator's allowlist: root's, as it should be
    argv = [*prefix, "-m", "aitbc_miner", "--headless", "--config", str(files["config"])]
    proc = miner.start(devnet, argv=argv, **settings)
    return proc


def _job_process(job_id: str) -> psutil.Process | None:
    """The job's own process (not bubblewrap's), found by the id in its environment."""
    for proc in psutil.process_iter():
        try:
            if proc.name() != "bwrap" and proc.environ().get("AITBC_JOB_ID") == job_id:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def _left_behind(job_ids: list[str]) -> list[str]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AITBC_JOB_ID") in job_ids:
                found.append(f"{proc.pid} {proc.cmdline()}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _what_the_client_sees(devnet: Any, job_id: str) -> str:
    job = devnet.job(job_id)
    result = devnet.http.get(f"/v1/jobs/{job_id}/result", headers=devnet.ready["client_headers"])
    return json.dumps(job) + result.text


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["root", "unprivileged"])
def test_hostile_jobs_are_stopped_and_the_agent_serves_on(agent, start_devnet, miner,
                                                          tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the agent-as-root case needs root, the other one a user to switch to")
    sandbox_or_skip()
    devnet = start_devnet("2026-08")
    canary = Canary()
    secret, marker = f"victim-{uuid.uuid4().hex}", f"mark-{uuid.uuid4().hex}"
    files = _layout(miner.root, secret)
    proc = _start(miner, devnet, files, agent)
    proc.wait_for(event_is("registered"), timeout=60)
    if agent == "root":  # and it says at start that jobs never run as root
        proc.wait_for(message_has("jobs run as the unprivileged user aitbc-job"))
    agent_pid = next(p.pid for p in [psutil.Process(proc.pid), *psutil.Process(
        proc.pid).children(recursive=True)] if "aitbc_miner" in " ".join(p.cmdline())
        or "aitbc-miner" in " ".join(p.cmdline()))

    # Given a victim job that holds a secret and a file in its workspace, and waits
    victim = devnet.submit({"type": "cli", "command": "victim", "args": [json.dumps(
        {"attack": "victim", "secret": "vtok", "marker": marker})]})
    proc.wait_for(lambda ln: ln.get("event") == "job_log" and ln.get("job_id") == victim
                  and ln.get("line") == "ready", timeout=60)
    victim_proc = _job_process(victim)
    assert victim_proc is not None
    victim_ws = miner.data_dir / "jobs" / victim
    state = miner.state_dir
    pwned = f"aitbc-pwned-{uuid.uuid4().hex[:8]}"
    targets = {
        "net": {"targets": [["127.0.0.1", canary.port],
                            [httpx.URL(devnet.url).host, httpx.URL(devnet.url).port]]},
        "read": {"paths": [str(files["key"]), str(files["config"]), str(state),
                           str(state / "journal.sqlite3"), str(victim_ws), "/etc/shadow",
                           str(miner.data_dir)],
                 "pids": [victim_proc.pid, agent_pid]},
        "write": {"marker": pwned, "folders": ["/etc", "/root", str(state), str(miner.root),
                                               str(victim_ws), str(victim_ws / "work"),
                                               str(miner.data_dir), "/usr/local/bin"]},
        "control": {"sockets": [str(state / "control.sock"), str(state / "control.ro.sock")]},
        "cgroup": {}, "daemon": {},
        "fill": {"mib": 64}, "memory": {"processes": 4, "mib_each": 100},
    }
    # When each attack runs as an allowlisted command and as a trusted function
    jobs: dict[str, tuple[str, str]] = {}
    for name, args in targets.items():
        payload = {"attack": name, **args}
        jobs[devnet.submit({"type": "cli", "command": "hostile",
                            "args": [json.dumps(payload)]})] = (name, "cli")
        jobs[devnet.submit({"type": "python", "function": "hostile:attack", **payload})] = (
            name, "python")
    devnet.poll_until(lambda _s: all(devnet.job(j)["state"] in TERMINAL for j in jobs),
                      timeout=240, what="every hostile job ended")
    seen = {j: devnet.job(j) for j in jobs}

    # Then nothing left the sandbox: no connection, no file, no secret, no process
    assert canary.hits == 0
    for folder in targets["write"]["folders"]:
        assert not (Path(folder) / pwned).exists(), folder
    for job_id, (name, form) in jobs.items():
        text = _what_the_client_sees(devnet, job_id)
        for leak in (MINER_KEY, secret, marker, "SQLite format 3"):
            assert leak not in text, (name, form, leak)
    assert _left_behind(list(jobs)) == []
    # And the limits held, each named: disk and memory over the whole job
    for job_id, (name, form) in jobs.items():
        if name == "fill":
            assert seen[job_id]["state"] == "FAILED", (form, seen[job_id])
            assert seen[job_id]["error"].startswith("limits.disk_mb: filled its 16 MiB"), form
        if name == "memory":
            assert seen[job_id]["state"] == "FAILED", (form, seen[job_id])
            assert seen[job_id]["error"].startswith("limits.memory_mb:"), form
    # And the agent was never steered through its control socket
    assert not [ln for ln in proc.lines() if ln.get("event") == "mode_changed"]

    # And the victim still holds its secret and file, untouched, and finishes
    victim_proc.send_signal(signal.SIGUSR1)
    devnet.poll_until(lambda _s: devnet.job(victim)["state"] in TERMINAL, what="victim ended")
    answer = devnet.http.get(f"/v1/jobs/{victim}/result",
                             headers=devnet.ready["client_headers"]).json()
    report = json.loads(answer["result"]["stdout"].splitlines()[-1])
    assert report == {"secret_intact": True, "marker_intact": True, "strangers": []}
    # And the agent goes on serving: a plain job after all of that completes
    plain = devnet.submit({"type": "cli", "command": "hostile", "args": [json.dumps(
        {"attack": "write", "marker": "ok", "folders": ["."]})]})
    devnet.poll_until(lambda _s: devnet.job(plain)["state"] in TERMINAL, what="plain job")
    assert devnet.job(plain)["state"] == "COMPLETED"
    assert proc.popen.poll() is None


def test_without_the_sandbox_every_log_line_says_so(start_devnet, miner) -> None:
    devnet = start_devnet("2026-08")
    proc = miner.start(devnet, RUNNERS__ISOLATION="none")
    proc.wait_for(event_is("registered"))
    lines = proc.lines()
    assert lines and all(line.get("isolation") == "OFF" for line in lines)
    assert any("WITHOUT a sandbox" in str(line.get("msg")) for line in lines[:3])
