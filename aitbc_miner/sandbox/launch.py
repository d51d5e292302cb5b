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

Two isolation modes. ``bwrap`` (the default): we first move into a private mount
namespace (through a user namespace when unprivileged) and mount the job's workspace
there as a size-capped tmpfs, plus its secrets; the job then runs under bubblewrap with
fresh user, PID, mount, IPC, UTS, cgroup and (unless its policy allows the network)
network namespaces, seeing only read-only system folders, its workspace, its secrets and
the paths the agent opened for it (bound by descriptor, so what was checked is what
runs). When it is over we copy the workspace back to the host folder (regular files and
folders only) and report whether it was full. ``none`` (an operator's explicit opt-out):
the job runs beside the agent with only a network namespace and rlimits. In both, an
agent running as root hands the job a dedicated unprivileged uid before anything of the
job's runs. Where no cgroup bounds the job's memory, we sample the private memory of all
its processes together and kill the job when the sum goes over the cap.

``--probe`` reports what isolation this host allows (namespaces, bubblewrap).
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
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MNT_DETACH = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}  # syscall numbers
IOPRIO_CLASS_SHIFT = 13
SETUP_FAILED = 127  # the job's exit code when it never reached exec
MEMORY_TICK_S = 0.05  # without a cgroup: how often the job's memory is summed
DISK_FULL_MARGIN = 64 << 10  # a workspace with less free than this was filled
WORKSPACE_INODES = 100_000  # files and folders a job may make (each costs kernel memory)
PAGE = os.sysconf("SC_PAGE_SIZE")
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


def mount_secrets(directory: str, secrets: dict[str, str], user: list[int] | None = None) -> None:
    """A private tmpfs (0700) holding one 0400 file per secret, seen only by this job
    (owned by the job's uid when we hand it one)."""
    _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           "mode=0700,size=4m" + (f",uid={user[0]},gid={user[1]}" if user else ""))
    for name, encoded in secrets.items():
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(encoded))
        if user:
            os.chown(os.path.join(directory, name), user[0], user[1])


def drop_to(uid: int, gid: int) -> None:
    """Become the job's own unprivileged user for good: groups, gid, then uid."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise OSError("still root after dropping privileges")


def mount_workspace(work: str, size: int, user: list[int] | None, dirs: list[str]) -> None:
    """The job's workspace as a size-capped tmpfs over ``work`` (in our own mount namespace)."""
    owner = f",uid={user[0]},gid={user[1]}" if user else ""
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
           f"mode=0700,size={size},nr_inodes={WORKSPACE_INODES}{owner}")
    for name in dirs:
        path = os.path.join(work, name)
        os.mkdir(path, 0o700)
        if user:
            os.chown(path, user[0], user[1])


def copy_out(src: str, dst_fd: int, skip: frozenset[str] = frozenset(),
             budget: int = WORKSPACE_INODES) -> int:
    """Copy the tree at ``src`` into the folder ``dst_fd`` refers to: regular files and
    folders only, never following a link (the job wrote ``src``). Returns entries left."""
    with os.scandir(src) as entries:
        for entry in entries:
            if budget <= 0 or entry.name in skip:
                continue
            budget -= 1
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.mkdir(entry.name, 0o700, dir_fd=dst_fd)
                except FileExistsError:
                    pass
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                              dir_fd=dst_fd)
                try:
                    budget = copy_out(entry.path, sub, frozenset(), budget)
                finally:
                    os.close(sub)
            elif entry.is_file(follow_symlinks=False):
                _copy_file(entry.path, entry.name, dst_fd)
    return budget


def _copy_file(path: str, name: str, dst_fd: int) -> None:
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                      dir_fd=dst_fd)
        try:
            while os.sendfile(dst, src, None, 1 << 20):
                pass
        finally:
            os.close(dst)
    finally:
        os.close(src)


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


def _child(spec: dict[str, Any], launcher: int, err_w: int, keep: tuple[int, ...]) -> None:
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
        if not spec.get("bwrap"):  # bubblewrap makes its own namespaces
            stage = "network" if spec["network"] == "none" else "secrets"
            mount_mode = bool(spec.get("secrets")) and spec.get("secrets_mode") == "mount"
            enter_namespaces(spec["network"] == "none", mount_mode)
            stage = "secrets"
            if mount_mode:
                mount_secrets(spec["secrets_dir"], spec["secrets"], spec.get("user"))
        stage = "workspace"
        os.chdir(spec["cwd"])
        os.dup2(os.open(spec.get("stdin") or os.devnull, os.O_RDONLY), 0)
        _close_fds_except(0, 1, 2, err_w, *keep)  # before RLIMIT_NOFILE hides the high ones
        stage = "limits"
        for name, value in spec.get("rlimits", {}).items():
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(RLIMITS[name], (soft, hard))
        if spec.get("nice"):
            os.nice(spec["nice"])
        if spec.get("ioprio"):
            set_ioprio(*spec["ioprio"])
        stage = "user"
        if spec.get("user"):
            drop_to(*spec["user"])
        stage = "exec"
        _reset_signals()
        executable = spec.get("executable_fd", spec["executable"])
        os.execve(executable, spec["argv"], spec["env"])
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
        self.inner = 0  # bubblewrap's init (pid 1 of the job's PID namespace), seen from here
        self.control_open = True
        self.host_dir: int | None = None  # the host's workspace folder: files are copied here
        self.stage: str | None = None  # where the job's tmpfs mounts are, in our namespace
        self.memory_cap = int(spec.get("memory_watch") or 0)
        self.oom_watch: str | None = spec.get("oom_watch")
        self.memory_peak = 0
        self.memory_over = 0

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
        keep: tuple[int, ...] = ()
        if "executable_fd" in self.spec:
            keep = (int(self.spec["executable_fd"]),)
        info_r = None
        if self.spec.get("bwrap"):
            try:
                keep, info_r = self.prepare_bwrap()
            except Exception as exc:  # noqa: BLE001 - the agent reports it as the job's error
                self.report(event="setup_error", stage="sandbox", error=_describe(exc))
                self.save_workspace()  # unmounts and removes what was made
                return 0
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.child = os.fork()
        if self.child == 0:
            _child(self.spec, os.getppid(), err_w, keep)
        os.close(err_w)
        for fd in keep:
            os.close(fd)
        failure = _read_all(err_r)
        if failure:
            self.report(event="setup_error", **json.loads(failure))
        else:
            if info_r is not None:
                self.inner = _read_info(info_r)
            self.report(event="started", pid=_first_child(self.inner) or self.child)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # only the job holds its output pipes, so EOF means it is gone
        os.dup2(devnull, 2)
        status, usage = self.supervise(wake_r)
        if self.spec.get("bwrap"):
            status = _signal_status(status)
        self.report(event="exited", status=status, rusage=_usage(usage))
        killed = sweep(os.getpid())
        totals = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.report(event="done", swept=killed, rusage=_usage(totals), **self.memory_report(),
                    **self.save_workspace())
        return 0

    def prepare_bwrap(self) -> tuple[tuple[int, ...], int]:
        """Open what the job may see, mount its workspace and secrets in our own mount
        namespace, and turn the spec into a bubblewrap command line. Returns the
        descriptors the child must keep, and the read end of bubblewrap's info pipe.

        The mounts live in a fresh folder under /tmp (0711), so bubblewrap, running as the
        job's user, can reach them even where the agent's own folders are private."""
        spec, user = self.spec, self.spec.get("user")
        work = spec["workspace_fs"]
        self.host_dir = os.open(work["path"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        named: dict[str, int] = {}
        if "executable_fd" in spec:
            named["exe"] = int(spec.pop("executable_fd"))
        for index, path in enumerate(spec.get("open", [])):  # before any mount of ours
            named[f"open{index}"] = _open_path(path)
        self.stage = tempfile.mkdtemp(prefix="aitbc-job-", dir="/tmp")
        os.chmod(self.stage, 0o711)
        enter_namespaces(False, True)
        for name in ("work", "secrets"):
            os.mkdir(os.path.join(self.stage, name), 0o700)
        stage_work = os.path.join(self.stage, "work")
        mount_workspace(stage_work, int(work["size"]), user, list(work["dirs"]))
        named["work"] = _open_path(stage_work)
        named["tmp"] = _open_path(os.path.join(stage_work, "tmp"))
        if spec.get("secrets"):
            mount_secrets(os.path.join(self.stage, "secrets"), spec["secrets"], user)
            named["secrets"] = _open_path(os.path.join(self.stage, "secrets"))
        args = [str(named[a[4:-1]]) if a.startswith("{fd:") else a for a in spec["bwrap"]]
        info_r, info_w = os.pipe()
        os.set_inheritable(info_w, True)
        spec["argv"] = [spec["bwrap_path"], *args, "--info-fd", str(info_w), "--", *spec["argv"]]
        spec["executable"] = spec["bwrap_path"]
        return (*named.values(), info_w), info_r

    def save_workspace(self) -> dict[str, object]:
        """How full the job's tmpfs got; its files copied back to the host folder."""
        if self.host_dir is None or self.stage is None:
            return {}
        work = os.path.join(self.stage, "work")
        found: dict[str, object] = {}
        try:
            st = os.statvfs(work)
            found["disk_used"] = (st.f_blocks - st.f_bfree) * st.f_frsize
            found["disk_full"] = st.f_bavail * st.f_frsize < DISK_FULL_MARGIN or not st.f_favail
            copy_out(work, self.host_dir, frozenset(self.spec["workspace_fs"].get("skip", ())))
        except OSError as exc:
            found["copy_error"] = _describe(exc)
        for name in ("work", "secrets"):  # the mounts are ours alone; the folders are the host's
            path = os.path.join(self.stage, name)
            _libc.umount2(path.encode(), MNT_DETACH)
            _rmdir(path)
        _rmdir(self.stage)
        return found

    def memory_report(self) -> dict[str, object]:
        if not self.memory_cap:
            return {}
        return {"memory_sampled_peak": self.memory_peak, "memory_over": self.memory_over}

    def check_memory(self) -> None:
        """Without a cgroup: the private memory of every job process together, against the cap."""
        total = sum(_private_bytes(pid) for pid in _tree(self.child))
        self.memory_peak = max(self.memory_peak, total)
        if total > self.memory_cap and not self.memory_over:
            self.memory_over = total
            self.signal_job(signal.SIGKILL)

    def supervise(self, wake_r: int) -> tuple[int, resource.struct_rusage]:
        """Relay commands until the job's main process exits; reap orphans meanwhile."""
        self.run_commands()  # any that came with the spec
        tick = MEMORY_TICK_S if self.memory_cap or self.oom_watch else None
        while True:
            reaped = _reap_until(self.child)
            if reaped is not None:
                return reaped
            if _agent_gone:
                self.signal_job(signal.SIGKILL)
            watch = [wake_r] + ([0] if self.control_open else [])
            ready, _, _ = select.select(watch, [], [], tick)
            if wake_r in ready:
                _drain(wake_r)
            if 0 in ready:
                self.read_commands()
            if self.memory_cap:
                self.check_memory()
            if self.oom_watch and _oom_kills(self.oom_watch):
                self.oom_watch = None  # once: the job goes as a whole, like oom.group
                self.signal_job(signal.SIGKILL)

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
        """Signal the job. Under bubblewrap its processes are below bubblewrap's init:
        they get the signal themselves, and SIGKILL goes to the init, which takes the
        whole PID namespace with it."""
        targets = [self.inner] if sig == signal.SIGKILL else _tree(self.inner)
        for pid in targets if self.inner else ():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if self.inner and sig != signal.SIGKILL:
            return
        try:
            os.killpg(self.child, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _open_path(path: str) -> int:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    os.set_inheritable(fd, True)
    return fd


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_info(fd: int) -> int:
    """bubblewrap's init pid from its ``--info-fd`` JSON (0 if it failed before writing it)."""
    try:
        return int(json.loads(_read_all(fd) or b"{}").get("child-pid", 0))
    except (ValueError, AttributeError):
        return 0


def _first_child(pid: int, tries: int = 400) -> int:
    """The job's own process: the first child bubblewrap's init starts (at once, normally).
    0 if the init is gone or never starts one within ~0.2 s (the job already ended)."""
    for _ in range(tries if pid else 0):
        try:
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as fh:
                kids = fh.read().split()
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            return 0
        if kids:
            return int(kids[0])
        if state in (b"Z", b"X"):  # the job came and went already
            return 0
        time.sleep(0.0005)
    return 0


def _signal_status(status: int) -> int:
    """bubblewrap exits 128+N when the job died of signal N: give back a signal status."""
    if os.WIFEXITED(status) and 128 < os.WEXITSTATUS(status) < 128 + signal.NSIG:
        return os.WEXITSTATUS(status) - 128
    return status


def _tree(root: int) -> list[int]:
    """``root``'s descendants, through the kernel's per-task children lists."""
    found: list[int] = []
    todo = [root] if root else []
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children", "rb") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _oom_kills(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            for line in fh:
                key, _, value = line.partition(b" ")
                if key == b"oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _private_bytes(pid: int) -> int:
    """Resident memory not shared with other processes (statm: resident - shared)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            fields = fh.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


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


ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def system_args(root: str = "/") -> list[str]:
    """/usr read-only, and the top-level program and library folders as the host has them
    (a symlink into /usr on merged-/usr systems, else a read-only bind)."""
    args = ["--ro-bind", os.path.join(root, "usr"), "/usr"]
    for name in ROOT_DIRS:
        path = os.path.join(root, name)
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), "/" + name]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, "/" + name]
    return args


BWRAP_PROBE = ["--unshare-all", "--die-with-parent", "--new-session", "--proc", "/proc",
               "--dev", "/dev", "--", "/usr/bin/true"]


def probe_bwrap(bwrap: str, user: list[int] | None) -> dict[str, object]:
    """Start an empty bubblewrap sandbox as the user jobs will run as."""
    import subprocess  # only the probe needs it

    if user:
        drop_to(*user)
    done = subprocess.run([bwrap, *system_args(), *BWRAP_PROBE], capture_output=True,
                          timeout=15, check=False, env={"PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip()[-300:]
        raise OSError(f"bubblewrap exited {done.returncode}: {text or 'no message'}")
    return {}


def probe(options: dict[str, Any] | None = None) -> dict[str, object]:
    """Try, in throw-away children, the isolation a job would get."""
    options = options or {}
    found: dict[str, object] = {"bwrap": False, "bwrap_error": "no bubblewrap executable"}
    if options.get("bwrap"):
        sandbox = _in_child(lambda: probe_bwrap(options["bwrap"], options.get("user")))
        found = {"bwrap": "error" not in sandbox, "bwrap_error": sandbox.get("error")}
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
            "private_tmpfs_error": mnt.get("error"), **found}


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
    if argv[1:2] == ["--probe"]:
        sys.stdout.write(json.dumps(probe(json.loads(argv[2]) if argv[2:] else None)) + "\n")
        return 0
    spec, rest = read_spec()
    return Launcher(spec, rest, int(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
