"""A job that misbehaves on request; the runner tests allowlist it as a real executable.

Usage: ``python -I behave.py <mode> [args...]``. Standard library only. Every mode that
must be observed while it runs prints ``ready`` on its own line first (the test waits
for that line, never for a fixed time).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import signal
import socket
import sys
import time


def ready() -> None:
    print("ready", flush=True)


def status() -> None:
    with open("/proc/self/stat") as fh:
        nice = int(fh.read().rpartition(")")[2].split()[16])
    libc = ctypes.CDLL(None, use_errno=True)
    number = {"x86_64": 252, "aarch64": 31}.get(platform.machine())
    ioprio = libc.syscall(number, 1, 0) if number else -1
    with open("/proc/self/limits") as fh:
        limits = fh.read()
    with open("/proc/self/cgroup") as fh:
        cgroup = fh.read()
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    print(json.dumps({"fds": fds, "nice": nice, "ioprio": ioprio, "limits": limits,
                      "cgroup": cgroup,
                      "session_leader": os.getsid(0) == os.getpid(),
                      "group_leader": os.getpgid(0) == os.getpid(), "sid": os.getsid(0),
                      "env": dict(os.environ),
                      "cwd": os.getcwd(), "argv": sys.argv[1:], "pid": os.getpid()}))


def fail(code: str) -> None:
    print("something went wrong on purpose", file=sys.stderr)
    sys.exit(int(code))


def spin() -> None:
    ready()
    while True:
        pass


def hog(megabytes: str) -> None:
    ready()
    chunks = []
    for _ in range(int(megabytes)):
        chunks.append(b"x" * (1 << 20))  # touched, so it is resident
    print("allocated", len(chunks), "MiB", flush=True)


def forkbomb() -> None:
    ready()
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)  # refused by pids.max: keep pressing


def stubborn() -> None:
    """Ignores SIGINT and SIGTERM, printing when each came; only SIGKILL ends it."""

    def note(sig: int, _frame: object) -> None:  # os.write: the signal may come mid-print
        os.write(1, f"{signal.Signals(sig).name} {time.monotonic()}\n".encode())

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    print(f"START {time.monotonic()}", flush=True)
    ready()
    while True:
        signal.pause()


def daemon(pidfile: str, stay: str) -> None:
    """The classic double fork: the grandchild leaves the session and outlives its parents."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(pidfile + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(pidfile + ".tmp", pidfile)
            while True:
                signal.pause()
        os._exit(0)
    os.wait()
    while not os.path.exists(pidfile):
        time.sleep(0.01)
    ready()
    if stay == "stay":
        while True:
            signal.pause()


def net(host: str, port: str) -> None:
    try:
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            sock.sendall(b"hello from the job\n")
            print(json.dumps({"connected": True}))
    except OSError as exc:
        print(json.dumps({"connected": False, "error": exc.__class__.__name__}))


def secret(name: str) -> None:
    folder = os.environ["AITBC_SECRETS_DIR"]
    path = os.path.join(folder, name)
    with open(path, "rb") as fh:
        value = fh.read()
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split(" - ")[1].split()[0] for line in fh if f" {folder} " in line]
    report = {"dir": folder, "sha256": hashlib.sha256(value).hexdigest(),
              "dir_mode": oct(os.stat(folder).st_mode & 0o777),
              "file_mode": oct(os.stat(path).st_mode & 0o777), "fs": mounts,
              "in_env": any(value.decode() in v for v in os.environ.values()),
              "in_argv": any(value.decode() in a for a in sys.argv)}
    released = []
    signal.signal(signal.SIGUSR1, lambda *_: released.append(1))
    print(json.dumps(report), flush=True)
    ready()
    while not released:  # until the test has looked at the process table (SIGUSR1)
        signal.pause()


def spam(count: str) -> None:
    line = b"y" * 1023 + b"\n"
    for _ in range(int(count) // 1024 + 1):
        sys.stdout.buffer.write(line)
    sys.stdout.flush()


def write(name: str, size: str) -> None:
    out = os.environ["AITBC_OUT_DIR"]
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(bytes(range(256)) * (int(size) // 256) + b"z" * (int(size) % 256))


def lines(count: str) -> None:
    for i in range(int(count)):
        print(f"line {i}", flush=True)


def echo(*words: str) -> None:
    print(" ".join(words))


def wait() -> None:
    ready()
    while True:
        signal.pause()


MODES = {"status": status, "fail": fail, "spin": spin, "hog": hog, "forkbomb": forkbomb,
         "stubborn": stubborn, "daemon": daemon, "net": net, "secret": secret, "spam": spam,
         "write": write, "lines": lines, "echo": echo, "wait": wait}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
