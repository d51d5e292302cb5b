"""Three real rigs (``aitbc-miner --headless`` processes), the reference coordinator (a
process, each dialect) and a real redis-server run 1,000 jobs through every trouble a
fleet exists for, and not one job is lost or receipted twice:

- rig A's (simulated) GPU falls off the bus mid-job: that job finishes on rig B;
- Redis is SIGKILLed and restarted mid-run;
- rig C is SIGKILLed and its state dir deleted while it holds staged outcomes (its
  coordinator answers /result with 503 through a proxy, so they stay staged): another
  rig delivers them.

Jobs are builtin noop/sha256 (cheap on a 2-core CI); nothing here asserts a duration.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.integration.conftest import DevnetProc, MinerLauncher, Proc, event_is

from .conftest import RedisServer

JOBS = 1000
C_SLOTS = 2  # every rig's CPU slots (SLOTS__CPU below)
KEYS = {"rig-a": "fleet-proc-key-a", "rig-b": "fleet-proc-key-b", "rig-c": "fleet-proc-key-c"}
FLEET = "procs"
WAIT_S = 240.0  # the whole run on a loaded 2-core machine; a bound, not a measure
SLEEP = shutil.which("sleep") or "/bin/sleep"


class BlockingProxy:
    """An HTTP proxy to the coordinator that answers /result and /fail with 503 while
    ``blocked`` (rig C's outcomes then stay staged); every other call goes through."""

    def __init__(self, target: str) -> None:
        self.blocked = threading.Event()
        self.target = target.rstrip("/")
        client = httpx.Client(timeout=10.0)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.blocked.is_set() and self.path.rstrip("/").endswith(("/result",
                                                                               "/fail")):
                    self._answer(503, b'{"detail":"blocked by the test proxy"}', {})
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                r = client.request(self.command, proxy.target + self.path, content=body,
                                   headers=headers)
                self._answer(r.status_code, r.content, dict(r.headers))

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                         "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.client = client
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def poll(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Re-check state held by other processes (nothing to await across them), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def ask(server: RedisServer, *command: str) -> Any:
    """One command on a fresh connection (the test's own Redis client outlives no restart)."""
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return client.execute_command(*command)


def allowlist(root: Path) -> Path:
    folder = root / "allowlist.d"
    folder.mkdir(mode=0o755)
    (folder / "gpu.yaml").write_text(yaml.safe_dump({"commands": {"gpu-sleep": {
        "executable": os.path.realpath(SLEEP), "fixed_args": ["5"], "gpu": True}}}))
    return folder


def start_rig(name: str, root: Path, procs: list[Proc], devnet: DevnetProc, url: str,
              redis_url: str, **extra: str) -> tuple[Proc, MinerLauncher]:
    launcher = MinerLauncher(root / name, procs)
    (root / name).mkdir()
    settings = {
        "MINER__KEY": KEYS[name], "MINER__ID": name, "FLEET__REDIS_URL": redis_url,
        "FLEET__NAME": FLEET, "FLEET__RIG_ID": name, "FLEET__LEASE_S": "2",
        "SLOTS__CPU": str(C_SLOTS), "LOG__LEVEL": "INFO", "COORDINATOR__URL": url,
        "JOBS__DEFAULT_TIMEOUT_S": "60", **extra,
    }
    proc = launcher.start(devnet, **settings)
    proc.name = name
    proc.wait_for(event_is("fleet_joined"), timeout=60)
    return proc, launcher


def fleet_rows(launcher: MinerLauncher) -> list[tuple[str, str, str, str]]:
    with launcher.journal() as conn:
        return list(conn.execute(
            "SELECT job_id, claimed_by, ran_by, delivered_by FROM fleet_jobs"
            " WHERE claimed_by IS NOT NULL"))


def journal_rows(launcher: MinerLauncher) -> dict[str, str]:
    path = launcher.state_dir / "journal.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT job_id, state FROM jobs"))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("dialect", ["2026-01", "2026-08"])
def test_three_rigs_run_1000_jobs_through_gpu_loss_redis_restart_and_a_dead_rig(
        tmp_path: Path, procs: list[Proc], redis_server: RedisServer, dialect: str) -> None:
    root = tmp_path / "devnet"
    root.mkdir()
    devnet = DevnetProc(root, dialect, procs, tuple(KEYS.values())).start()
    proxy = BlockingProxy(devnet.url)
    allow = allowlist(tmp_path)
    lost_file = tmp_path / "gpu-a.lost"
    gpu: dict[str, Any] = {"GPU__SIMULATE": "1", "GPU__SAMPLE_INTERVAL_S": "0.2",
           "SLOTS__GPU": None,  # the launcher's default of 0 GPU slots, taken away
           "RUNNERS__ALLOWLIST_DIRS": json.dumps([str(allow)]),
           "RUNNERS__ISOLATION": "none"}
    try:
        # Given rig A running a GPU job
        a, la = start_rig("rig-a", tmp_path, procs, devnet, devnet.url, redis_server.url,
                          LOG__LEVEL="DEBUG", GPU__SIMULATE_LOST_FILE=str(lost_file), **gpu)
        gpu_job = devnet.submit({"type": "cli-gpu", "command": "gpu-sleep"})
        a.wait_for(event_is("job_started", job_id=gpu_job), timeout=60)
        # When A's GPU falls off the bus mid-job, the job goes to the fleet's retry queue
        lost_file.write_text("0\n")
        a.wait_for(event_is("job_handed_off", job_id=gpu_job), timeout=60)
        # where rig B (a GPU) takes it; rig C's results a proxy will hold back later
        b, lb = start_rig("rig-b", tmp_path, procs, devnet, devnet.url, redis_server.url,
                          **gpu)
        c, lc = start_rig("rig-c", tmp_path, procs, devnet, proxy.url, redis_server.url)
        jobs = [gpu_job]
        jobs += [devnet.submit({"type": "noop"} if i % 2 else
                               {"type": "sha256", "data": f"job {i}"}) for i in range(JOBS)]

        def completed() -> int:
            return int(devnet.admin_state()["job_states"].get("COMPLETED", 0))

        # and Redis is killed mid-run, and comes back later
        poll(lambda: completed() >= JOBS // 4, "a quarter of the jobs done")
        redis_server.kill()
        at_kill = completed()
        poll(lambda: completed() >= at_kill + JOBS // 10, "jobs done while Redis is down")
        for p in (a, b, c):  # each rig saw it, and worked on alone
            p.wait_for(event_is("fleet_unreachable"), timeout=60)
        marks = {p.name: p.mark() for p in (a, b, c)}
        redis_server.start()
        for p in (a, b, c):  # every rig joins again
            p.wait_for(event_is("fleet_joined"), after=marks[p.name], timeout=60)
        # and rig C dies holding staged outcomes, and its state dir is deleted
        proxy.blocked.set()
        def c_holds_undelivered() -> bool:
            # C's outcomes in the fleet's care, none of which reached the coordinator
            # (one whose 200 came back just before the proxy blocked is marked done soon),
            # as many as its slots: C then has no poll in flight. (A rig killed while the
            # coordinator answers its poll leaves that job RUNNING there: no call lists a
            # miner's jobs, so nobody can find it; docs/protocol.md, "Limits".)
            held = ask(redis_server, "SMEMBERS", f"aitbc:fleet:{FLEET}:outcomes:rig-c")
            jobs_now = devnet.admin_state()["jobs"]
            return len(held) == C_SLOTS and all(jobs_now[j]["receipts"] == 0 for j in held)

        poll(c_holds_undelivered, "rig C holds staged outcomes in the fleet's care")
        c.kill()
        shutil.rmtree(lc.state_dir)
        shutil.rmtree(lc.data_dir, ignore_errors=True)

        # Then every job completes, each with exactly one receipt
        def settled() -> bool:
            state = devnet.admin_state()
            return state["job_states"].get("COMPLETED", 0) == len(jobs)

        try:
            poll(settled, "every job completed")
        except AssertionError:
            state = devnet.admin_state()
            stuck = {j: state["jobs"][j] for j in jobs
                     if state["jobs"][j]["state"] != "COMPLETED"}
            said = {p.name: [ln.get("msg") for ln in p.lines()
                             if ln.get("job_id") in stuck or "fleet" in str(ln.get("logger"))]
                    for p in (a, b, c)}
            raise AssertionError(f"{len(stuck)} job(s) not completed: "
                                 f"{json.dumps(stuck, default=str)[:3000]}\n"
                                 f"{json.dumps(said, default=str)[-6000:]}") from None
        state = devnet.admin_state()
        receipts = {j: state["jobs"][j]["receipts"] for j in jobs}
        assert sum(1 for n in receipts.values() if n == 0) == 0  # nothing lost
        twice = {j: [(x["provider"], x.get("receipt_id")) for x in devnet.receipts(j)]
                 for j, n in receipts.items() if n > 1}
        told = {p.name: [ln.get("msg") for ln in p.lines() if ln.get("job_id") in twice]
                for p in (a, b, c)}
        assert not twice, f"receipted twice: {twice}; {json.dumps(told)[-5000:]}"
        assert ask(redis_server, "SCARD", f"aitbc:fleet:{FLEET}:outcomes:rig-c") == 0
        # The GPU job: claimed by A, run and delivered by B (B's identity on the receipt)
        (receipt,) = [x for x in devnet.receipts(gpu_job)]
        assert receipt["provider"] == (KEYS["rig-b"] if dialect == "2026-01" else "rig-b")
    finally:
        proxy.close()
        devnet.close()
    for proc in (a, b):
        proc.send(__import__("signal").SIGTERM)
        proc.wait_exit(timeout=60)
    rows_b = fleet_rows(lb)
    assert (gpu_job, "rig-a", "rig-b", "rig-b") in rows_b
    assert journal_rows(la)[gpu_job] == "handed_off"
    # C's outcomes were delivered by A or B, which say so in their ledgers
    adopted = [row for row in fleet_rows(la) + rows_b if row[1] == "rig-c"]
    assert adopted and all(row[3] in ("rig-a", "rig-b") for row in adopted)
