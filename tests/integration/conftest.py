"""Process-level harness: the devnet and the miner as real subprocesses on loopback.

Nothing here sleeps to synchronise. A reader thread per pipe turns each process's output
into lines the test waits on (``Proc.wait_for``) with a deadline; the devnet is asked
through its HTTP admin routes, and only polled (``poll_until``) where nothing can be
awaited. Every process started is killed and reaped by the fixture that made it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MINER_EXE = VENV_BIN / "aitbc-miner"
MINER_KEY = "devnet-miner-key"  # the devnet's default miner key
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
WAIT_S = 20.0  # the longest any single awaited event may take on a slow 2-core machine

Line = dict[str, Any]


def event_is(name: str, **fields: Any) -> Callable[[Line], bool]:
    """A predicate for a miner log line: engine event ``name`` (with these field values)."""

    def match(line: Line) -> bool:
        if line.get("event") != name and line.get("event_name") != name:
            return False
        return all(line.get(k) == v for k, v in fields.items())

    return match


def message_has(text: str) -> Callable[[Line], bool]:
    return lambda line: text in str(line.get("msg", "")) or text in str(line.get("event", ""))


class Proc:
    """A subprocess whose stdout/stderr are read line by line into lists, in threads."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, name: str) -> None:
        self.name = name
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.stdout: list[tuple[float, str]] = []  # (monotonic time read, line)
        self.stderr: list[str] = []
        self._json: list[Line] = []  # stdout lines that are JSON objects, ``_t`` = read at
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout, True),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr, False),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: Any, into: list[Any], stamped: bool) -> None:
        for raw in stream:
            text, now = raw.rstrip("\n"), time.monotonic()
            obj = None
            if stamped:
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
            with self._cond:
                into.append((now, text) if stamped else text)
                if isinstance(obj, dict):
                    self._json.append({**obj, "_t": now})
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def lines(self) -> list[Line]:
        """stdout lines that are JSON objects, with ``_t`` = when the test read them."""
        with self._cond:
            return list(self._json)

    def text(self) -> str:
        with self._cond:
            return "\n".join(t for _, t in self.stdout) + "\n" + "\n".join(self.stderr)

    def wait_for(self, predicate: Callable[[Line], bool], *, after: int = 0,
                 timeout: float = WAIT_S, count: int = 1) -> list[Line]:
        """Wait until ``count`` JSON stdout lines from index ``after`` on match; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [ln for ln in self._json[after:] if predicate(ln)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"{self.name}: {len(found)}/{count} matching line(s) within {timeout}s "
                        f"(exit={self.popen.poll()}); output tail:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def _alive_readers(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def mark(self) -> int:
        """The index of the next stdout line: pass it as ``after`` to wait for later lines."""
        return len(self.lines())

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(t for _, t in self.stdout[-n:]) + "\n--- stderr ---\n" + "\n".join(
                self.stderr[-n:])

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s:\n{self.tail()}") from None
        for t in self._threads:
            t.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL the process (and its process group) and reap it."""
        if self.popen.poll() is None:
            # Its own session and group (start_new_session): the group id is its pid,
            # which cannot be reused before we reap it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for t in self._threads:
            t.join(5)

    def close(self) -> None:
        self.kill()
        for pid in _group_members(self.popen.pid):  # children it left behind: no orphans
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (Linux /proc; empty elsewhere)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
            members.append(int(stat.parent.name))
    return members


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    for name in ("NO_COLOR", "TEXTUAL_THEME", "COVERAGE_PROCESS_START"):
        env.pop(name, None)
    return env


class DevnetProc:
    """The reference coordinator as a subprocess with persisted state; killable and restartable."""

    def __init__(self, root: Path, dialect: str, procs: list[Proc],
                 miner_keys: tuple[str, ...] = ()) -> None:
        self.root = root
        self.dialect = dialect
        self.state = root / "devnet.sqlite3"
        self.key_file = root / "devnet-signing.key"
        self.port = 0
        self.miner_keys = miner_keys
        self._procs = procs
        self.proc: Proc | None = None
        self.ready: Line = {}
        self.ready_at = 0.0
        self._http: httpx.Client | None = None

    def start(self) -> DevnetProc:
        argv = [sys.executable, "-m", "aitbc_miner.devnet", "--port", str(self.port),
                "--state", str(self.state), "--signing-key-file", str(self.key_file),
                "--dialect", self.dialect, "--no-rate-limits"]
        for key in self.miner_keys:
            argv += ["--miner-key", key]
        self.proc = Proc(argv, env=base_env(), cwd=self.root, name=f"devnet-{self.dialect}")
        self._procs.append(self.proc)
        (ready,) = self.proc.wait_for(lambda ln: ln.get("event") == "ready")
        self.ready, self.ready_at = ready, ready["_t"]
        self.port = int(ready["port"])  # a restart comes back on the same port
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def url(self) -> str:
        return str(self.ready["url"])

    @property
    def public_key_id(self) -> str:
        return str(self.ready["public_key_id"])

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=5.0)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- client and admin calls ------------------------------------------------------

    def submit(self, payload: dict[str, Any], ttl_seconds: int = 900) -> str:
        r = self.http.post("/v1/jobs", json={"payload": payload, "constraints": {},
                                             "ttl_seconds": ttl_seconds},
                           headers=self.ready["client_headers"])
        assert r.status_code == 201, r.text
        return str(r.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}", headers=self.ready["client_headers"])
        assert r.status_code == 200, r.text
        return dict(r.json())

    def receipts(self, job_id: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/v1/jobs/{job_id}/receipts", headers=self.ready["client_headers"])
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def admin_state(self) -> dict[str, Any]:
        r = self.http.get("/_devnet/state")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def inject(self, **fault: Any) -> None:
        r = self.http.post("/_devnet/faults", json=fault)
        assert r.status_code == 200, r.text

    def clear_faults(self) -> None:
        r = self.http.delete("/_devnet/faults")
        assert r.status_code == 200, r.text

    def poll_until(self, predicate: Callable[[dict[str, Any]], bool], *,
                   timeout: float = WAIT_S, what: str = "devnet state") -> dict[str, Any]:
        """Re-read the admin state until ``predicate`` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.admin_state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout}s: "
                                     f"{json.dumps(state['job_states'])} "
                                     f"miners={json.dumps(state['miners'], default=str)[:800]}")
            time.sleep(0.1)  # bounded polling of a state nothing can await


class MinerLauncher:
    """Starts ``aitbc-miner --headless`` subprocesses configured through the environment."""

    def __init__(self, root: Path, procs: list[Proc]) -> None:
        self.root = root
        self.state_dir = root / "miner-state"
        self.data_dir = root / "miner-data"
        self._procs = procs

    def env(self, devnet: DevnetProc | None, **settings: str) -> dict[str, str]:
        env = base_env()
        values = {
            "MINER__KEY": MINER_KEY,
            "MINER__ID": "rig-it",
            "PATHS__STATE_DIR": str(self.state_dir),
            "PATHS__DATA_DIR": str(self.data_dir),
            "SLOTS__CPU": "2",
            "SLOTS__GPU": "0",
            "INFERENCE__BACKEND": "off",  # no probing of a real local Ollama
            "POLL__MIN_INTERVAL_S": "0.05",
            "POLL__MAX_INTERVAL_S": "0.3",
            "HEARTBEAT_INTERVAL_S": "2",
            "COORDINATOR__CONNECT_TIMEOUT_S": "1",
            "COORDINATOR__READ_TIMEOUT_S": "3",
            # Tests wait on each step of a job (job_claimed, job_started, ...), which log
            # at DEBUG: at INFO a job has one line, outcome_delivered.
            "LOG__LEVEL": "DEBUG",
        }
        if devnet is not None:
            values["COORDINATOR__URL"] = devnet.url
            values["COORDINATOR__PUBLIC_KEY"] = devnet.public_key_id
        values.update(settings)
        env.update({f"AITBC_MINER_{k}": v for k, v in values.items() if v is not None})
        # No per-user config file of the machine's owner leaks in.
        env["XDG_CONFIG_HOME"] = str(self.root / "xdg-config")
        return env

    def start(self, devnet: DevnetProc | None, *args: str, argv: list[str] | None = None,
              **settings: str) -> Proc:
        cmd = argv if argv is not None else [str(MINER_EXE), "--headless", *args]
        proc = Proc(cmd, env=self.env(devnet, **settings), cwd=self.root, name="miner")
        self._procs.append(proc)
        return proc

    def journal(self) -> contextlib.closing[sqlite3.Connection]:
        """The miner's journal (real SQLite), to read once the miner has stopped."""
        path = self.state_dir / "journal.sqlite3"
        assert path.exists(), f"no journal at {path}"
        return contextlib.closing(sqlite3.connect(path))


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every subprocess a test starts; all are killed and reaped at the end."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.close()


@pytest.fixture
def start_devnet(tmp_path: Path, procs: list[Proc]) -> Iterator[Callable[..., DevnetProc]]:
    made: list[DevnetProc] = []

    def start(dialect: str, miner_keys: tuple[str, ...] = ()) -> DevnetProc:
        root = tmp_path / f"devnet-{len(made)}"
        root.mkdir()
        devnet = DevnetProc(root, dialect, procs, miner_keys).start()
        made.append(devnet)
        return devnet

    yield start
    for devnet in made:
        devnet.close()


@pytest.fixture
def miner(tmp_path: Path, procs: list[Proc]) -> MinerLauncher:
    root = tmp_path / "miner"
    root.mkdir()
    return MinerLauncher(root, procs)
