"""The job launcher: the only code that runs between the agent and a job's process.

Run as ``python -I -S launch.py <status-fd>`` (standard library only, so it starts fast and
imports nothing a job could plant). The agent writes one JSON line, the spec, to our stdin;
the rest of stdin carries commands (``signal <n>``). We report on the status fd as JSON lines:
``started`` (pid), ``setup_error`` (stage, error), ``exited`` (status, rusage) and
``done`` (totals after every descendant is gone).

Why a separate supervisor rather than ``preexec_fn``: ``fork`` in the threaded agent is
unsafe for Python code, and someone must outlive the job to reap what it leaves behind.
We are a child subreaper, so a double-forked daemon is re-parented to us; when the job's
main process exits, every descendant is killed and reaped before we report ``done``.
If the agent dies, the parent-death signal (SIGTERM) or EOF on stdin makes us kill the
job at once. The job itself runs in its own session with the parent-death signal SIGKILL,
an empty signal mask and default handlers, inside its cgroup and namespaces.

``--probe`` reports what isolation this host allows (network and mount namespaces).
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}  # syscall numbers
IOPRIO_CLASS_SHIFT = 13
SETUP_FAILED = 127  # the job's exit code when it never reached exec
RLIMITS = {"AS": resource.RLIMIT_AS, "CPU": resource.RLIMIT_CPU, "NOFILE": resource.RLIMIT_NOFILE,
           "NPROC": resource.RLIMIT_NPROC, "FSIZE": resource.RLIMIT_FSIZE,
           "CORE": resource.RLIMIT_CORE}

_libc = ctypes.CDLL(None, use_errno=True)
_agent_gone = False


class SetupError(Exception):
    """A step before exec failed; ``stage`` names it for the agent's error message."""

    def __init__(self, stage: str, error: BaseException | str) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage, self.error = stage, str(error)


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int) -> None:
    _call(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def _unshare(flags: int) -> None:
    _call(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _call(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def enter_namespaces(net: bool, mnt: bool) -> str:
    """unshare the network and/or mount namespace; fall back to a user namespace when not
    privileged (mapping our own uid, so files keep their owner). Returns how it was done."""
    flags = (CLONE_NEWNET if net else 0) | (CLONE_NEWNS if mnt else 0)
    if not flags:
        return "none"
    uid, gid = os.getuid(), os.getgid()
    try:
        _unshare(flags)
        how = "privileged"
    except PermissionError:
        _unshare(flags | CLONE_NEWUSER)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        how = "user-namespace"
    if mnt:  # our mounts must never propagate back to the host
        _mount("none", "/", "", MS_REC | MS_PRIVATE, "")
    if net:
        _loopback_up()
    return how


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def mount_secrets(directory: str, secrets: dict[str, str]) -> None:
    """A private tmpfs (0700) holding one 0400 file per secret, seen only by this job."""
    _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=4m")
    for name, encoded in secrets.items():
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(encoded))


def set_ioprio(klass: int, level: int) -> None:
    number = IOPRIO_SET.get(platform.machine())
    if number is not None:  # elsewhere: inherited I/O priority, nice still applies
        _call(_libc.syscall(number, 1, 0, (klass << IOPRIO_CLASS_SHIFT) | level), "ioprio_set")


def _reset_signals() -> None:
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _child(spec: dict[str, Any], launcher: int, err_w: int) -> None:
    """In the forked child: isolate, limit, then exec. Never returns."""
    stage = "session"
    try:
        signal.set_wakeup_fd(-1)
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher:
            os._exit(SETUP_FAILED)
        stage = "cgroup"
        for procs in spec.get("cgroup_procs", []):
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))
        stage = "network" if spec["network"] == "none" else "secrets"
        mount_mode = bool(spec.get("secrets")) and spec.get("secrets_mode") == "mount"
        enter_namespaces(spec["network"] == "none", mount_mode)
        stage = "secrets"
        if mount_mode:
            mount_secrets(spec["secrets_dir"], spec["secrets"])
        stage = "workspace"
        os.chdir(spec["cwd"])
        os.dup2(os.open(spec.get("stdin") or os.devnull, os.O_RDONLY), 0)
        _close_fds_except(0, 1, 2, err_w)  # before RLIMIT_NOFILE hides the high ones
        stage = "limits"
        for name, value in spec.get("rlimits", {}).items():
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(RLIMITS[name], (soft, hard))
        if spec.get("nice"):
            os.nice(spec["nice"])
        if spec.get("ioprio"):
            set_ioprio(*spec["ioprio"])
        stage = "exec"
        _reset_signals()
        os.execve(spec["executable"], spec["argv"], spec["env"])
    except BaseException as exc:  # noqa: BLE001 - everything must reach the agent
        try:
            os.write(err_w, json.dumps({"stage": stage, "error": _describe(exc)}).encode())
        finally:
            os._exit(SETUP_FAILED)


def _close_fds_except(*keep: int) -> None:
    """Close every other descriptor: the job must not inherit the agent's status pipe."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the descriptor listdir itself used, already closed
                pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"


class Launcher:
    """Supervises one job: relays signals, reaps, sweeps leftovers, reports."""

    def __init__(self, spec: dict[str, Any], buffered: bytes, status_fd: int) -> None:
        self.spec, self.buffered = spec, buffered
        self.status = os.fdopen(status_fd, "w", buffering=1)
        self.child = 0
        self.control_open = True

    def report(self, **event: object) -> None:
        try:
            self.status.write(json.dumps(event) + "\n")
        except OSError:  # the agent is gone; we still clean up
            pass

    def run(self) -> int:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.spec["agent_pid"]:
            return 1  # the agent died before we could watch it
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        os.setsid()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_agent_gone)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.child = os.fork()
        if self.child == 0:
            _child(self.spec, os.getppid(), err_w)
        os.close(err_w)
        failure = _read_all(err_r)
        if failure:
            self.report(event="setup_error", **json.loads(failure))
        else:
            self.report(event="started", pid=self.child)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # only the job holds its output pipes, so EOF means it is gone
        os.dup2(devnull, 2)
        status, usage = self.supervise(wake_r)
        self.report(event="exited", status=status, rusage=_usage(usage))
        killed = sweep(os.getpid())
        totals = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.report(event="done", swept=killed, rusage=_usage(totals))
        return 0

    def supervise(self, wake_r: int) -> tuple[int, resource.struct_rusage]:
        """Relay commands until the job's main process exits; reap orphans meanwhile."""
        self.run_commands()  # any that came with the spec
        while True:
            reaped = _reap_until(self.child)
            if reaped is not None:
                return reaped
            if _agent_gone:
                self.signal_job(signal.SIGKILL)
            watch = [wake_r] + ([0] if self.control_open else [])
            ready, _, _ = select.select(watch, [], [])
            if wake_r in ready:
                _drain(wake_r)
            if 0 in ready:
                self.read_commands()

    def read_commands(self) -> None:
        data = os.read(0, 4096)
        if not data:  # EOF: the agent closed the pipe or died
            self.control_open = False
            self.signal_job(signal.SIGKILL)
            return
        self.buffered += data
        self.run_commands()

    def run_commands(self) -> None:
        *lines, self.buffered = self.buffered.split(b"\n")
        for line in lines:
            word, _, arg = line.decode().partition(" ")
            if word == "signal":
                self.signal_job(int(arg))

    def signal_job(self, sig: int) -> None:
        try:
            os.killpg(self.child, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _on_agent_gone(_sig: int, _frame: object) -> None:
    global _agent_gone
    _agent_gone = True


def _reap_until(main: int) -> tuple[int, resource.struct_rusage] | None:
    """Reap every exited child without blocking; the main one's status when it is among them."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        if pid == main:
            return status, usage


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _usage(usage: resource.struct_rusage) -> dict[str, float]:
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def sweep(root: int) -> int:
    """SIGKILL and reap everything below ``root`` until nothing is left; returns the count."""
    killed: set[int] = set()
    while True:
        victims = descendants(root)
        if not victims:
            _reap_until(0)
            return len(killed)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)  # blocks until at least one of them is gone
        except ChildProcessError:
            pass


def read_spec() -> tuple[dict[str, Any], bytes]:
    data = b""
    while b"\n" not in data:
        chunk = os.read(0, 65536)
        if not chunk:
            raise SystemExit(1)  # the agent went away before sending the spec
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def probe() -> dict[str, object]:
    """Try, in throw-away children, the isolation a job would get."""
    target = tempfile.mkdtemp(prefix="aitbc-probe-")
    try:
        def private_tmpfs() -> dict[str, object]:
            enter_namespaces(False, True)
            mount_secrets(target, {"probe": "eA=="})
            return {}

        net = _in_child(lambda: {"netns_how": enter_namespaces(True, False)})
        mnt = _in_child(private_tmpfs)
    finally:
        os.rmdir(target)
    return {"netns": "error" not in net, "netns_how": net.get("netns_how", "none"),
            "netns_error": net.get("error"), "private_tmpfs": "error" not in mnt,
            "private_tmpfs_error": mnt.get("error")}


def _in_child(attempt: Callable[[], dict[str, object]]) -> dict[str, object]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            found = attempt()
        except BaseException as exc:  # noqa: BLE001
            found = {"error": _describe(exc)}
        os.write(write_fd, json.dumps(found).encode())
        os._exit(0)
    os.close(write_fd)
    result = json.loads(_read_all(read_fd) or b'{"error": "probe died"}')
    os.waitpid(pid, 0)
    return dict(result)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--probe"]:
        sys.stdout.write(json.dumps(probe()) + "\n")
        return 0
    spec, rest = read_spec()
    return Launcher(spec, rest, int(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
