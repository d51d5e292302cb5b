"""One cgroup per job, on cgroup v2 or (where only v1 is mounted) v1, or none at all.

Why cgroups and not only rlimits: rlimits count per process (a job of 100 processes gets
100 times the memory) and ``RLIMIT_NPROC`` counts every process of the user (and root
ignores it), so only a cgroup bounds a whole job, gives its memory peak and CPU time,
and names every process to kill. Where neither hierarchy is writable the sandbox falls
back to rlimits and says so once.

Layout. v2: the agent's own cgroup gets the memory, pids and cpu controllers for its
children; if it holds processes (the "no internal processes" rule) the agent first moves
itself into ``<own>/agent`` (what systemd's ``Delegate=yes`` expects). Jobs live in
``<own>/job-<id>-<n>``. v1: ``<mount>/<own path>/aitbc-miner/job-<id>-<n>`` in each of the
memory, pids, cpu and cpuacct hierarchies that is mounted and writable.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .limits import MIB, Limits

log = logging.getLogger(__name__)

V1_REQUIRED = ("memory", "pids")  # without both, v1 bounds neither memory nor fork bombs
V1_OPTIONAL = ("cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")
PREFIX = "aitbc-miner"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_AGENT_PID = re.compile(r"-(\d+)-\d+$")  # job-<id>-<agent pid>-<serial>
_serial = itertools.count(1)
KILL_ROUNDS = 50  # rounds of "kill every member, wait a little" before giving up on a group
KILL_PAUSE_S = 0.02  # pause per round while the kernel finishes killed tasks


class CgroupMode(StrEnum):
    V2 = "v2"
    V1 = "v1"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CgroupHost:
    """Where job cgroups are made; ``mode`` NONE means rlimits only (``reason`` says why)."""

    mode: CgroupMode
    bases: dict[str, Path] = field(default_factory=dict)  # controller (v2: "unified") -> dir
    reason: str = ""

    def create(self, job_id: str, limits: Limits) -> JobCgroup:
        """Make the job's cgroup with its limits written; ``OSError`` if the host refuses."""
        if self.mode is CgroupMode.NONE:
            raise RuntimeError("no cgroup hierarchy is usable here")
        name = f"job-{_SAFE.sub('_', job_id)[:64]}-{os.getpid()}-{next(_serial)}"
        dirs = {ctrl: base / name for ctrl, base in self.bases.items()}
        group = JobCgroup(self.mode, dirs)
        for directory in set(dirs.values()):  # cpu and cpuacct may share one mount
            directory.mkdir(mode=0o755)
        try:
            group.write_limits(limits)
        except OSError:
            group.remove()
            raise
        return group

    def prune_stale(self) -> int:
        """Empty and remove job groups left by an agent that is gone; returns how many.

        A group's name carries its agent's pid; groups of a live agent (this one, or
        another miner sharing the hierarchy) are left alone.
        """
        names = {d.name for base in set(self.bases.values()) for d in base.glob("job-*-*-*")}
        pruned = 0
        for name in names:
            found = _AGENT_PID.search(name)
            if found is None or _alive(int(found.group(1))):
                continue
            group = JobCgroup(self.mode, {c: b / name for c, b in self.bases.items()
                                          if (b / name).is_dir()})
            killed = group.kill_members()
            if killed:
                log.warning("killed %d process(es) left in %s by an agent that died", killed, name)
            pruned += group.remove()
        return pruned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(slots=True)
class JobCgroup:
    """A job's cgroup(s): limits in, metrics out, and every member killable."""

    mode: CgroupMode
    dirs: dict[str, Path]

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def _file(self, controller: str, name: str) -> Path | None:
        directory = self.dirs.get("unified" if self.mode is CgroupMode.V2 else controller)
        return None if directory is None else directory / name

    def _write(self, controller: str, name: str, value: str, *, optional: bool = False) -> None:
        path = self._file(controller, name)
        if path is None or (optional and not path.exists()):
            return
        try:
            path.write_text(value)
        except OSError:
            if not optional:
                raise

    def write_limits(self, limits: Limits) -> None:
        memory = str(limits.memory_mb * MIB) if limits.memory_mb is not None else None
        if self.mode is CgroupMode.V2:
            if memory is not None:
                self._write("memory", "memory.max", memory)
                self._write("memory", "memory.swap.max", "0", optional=True)
            self._write("memory", "memory.oom.group", "1", optional=True)
            self._write("pids", "pids.max", str(limits.processes))
            self._write("cpu", "cpu.weight", str(limits.cpu_weight), optional=True)
            return
        if memory is not None:
            self._write("memory", "memory.limit_in_bytes", memory)
            self._write("memory", "memory.memsw.limit_in_bytes", memory, optional=True)
        self._write("pids", "pids.max", str(limits.processes))
        shares = max(2, limits.cpu_weight * 1024 // 100)  # v2 weight 100 == v1 shares 1024
        self._write("cpu", "cpu.shares", str(shares), optional=True)

    def _read_int(self, controller: str, name: str) -> int | None:
        path = self._file(controller, name)
        try:
            return int(path.read_text().split()[0]) if path is not None else None
        except (OSError, ValueError, IndexError):
            return None

    def _read_key(self, controller: str, name: str, key: str) -> int | None:
        path = self._file(controller, name)
        try:
            text = path.read_text() if path is not None else ""
        except OSError:
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
        return None

    def oom_file(self) -> str | None:
        """The file whose ``oom_kill`` line counts the job's OOM kills."""
        name = "memory.events" if self.mode is CgroupMode.V2 else "memory.oom_control"
        path = self._file("memory", name)
        return None if path is None else str(path)

    def oom_kills(self) -> int:
        """How many of the job's processes the kernel OOM-killed inside its limit."""
        if self.mode is CgroupMode.V2:
            return self._read_key("memory", "memory.events", "oom_kill") or 0
        return self._read_key("memory", "memory.oom_control", "oom_kill") or 0

    def metrics(self) -> dict[str, int]:
        """Memory peak, CPU time and process peak, as far as this kernel reports them."""
        out: dict[str, int | None] = {}
        if self.mode is CgroupMode.V2:
            out["memory_peak_bytes"] = self._read_int("memory", "memory.peak")
            usec = self._read_key("cpu", "cpu.stat", "usage_usec")
            out["cpu_time_ms"] = None if usec is None else usec // 1000
        else:
            out["memory_peak_bytes"] = self._read_int("memory", "memory.max_usage_in_bytes")
            nsec = self._read_int("cpuacct", "cpuacct.usage")
            out["cpu_time_ms"] = None if nsec is None else nsec // 1_000_000
        out["pids_peak"] = self._read_int("pids", "pids.peak")
        return {k: v for k, v in out.items() if v is not None}

    def members(self) -> set[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            try:
                pids.update(int(p) for p in Path(procs).read_text().split())
            except (OSError, ValueError):
                pass
        return pids

    def kill_members(self) -> int:
        """SIGKILL every process in the group once; returns how many were signalled."""
        kill_file = self._file("unified", "cgroup.kill")
        if self.mode is CgroupMode.V2 and kill_file is not None and kill_file.exists():
            members = self.members()
            kill_file.write_text("1")
            return len(members)
        count = 0
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
                count += 1
            except ProcessLookupError:
                pass
        return count

    def remove(self) -> bool:
        """rmdir every directory; False while a member is still alive (EBUSY)."""
        done = True
        for directory in self.dirs.values():
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                done = False
        return done

    async def destroy(self) -> int:
        """Kill whatever is left in the group and remove it; returns how many were killed.

        The launcher has normally reaped everything already; this catches a process that
        escaped it (for example when the launcher itself was killed).
        """
        killed = 0
        for _ in range(KILL_ROUNDS):
            if not self.members() and self.remove():
                return killed
            killed += self.kill_members()
            await asyncio.sleep(KILL_PAUSE_S)
        log.warning("cgroup %s still busy after %d kill rounds; leaving it",
                    next(iter(self.dirs.values())), KILL_ROUNDS)
        return killed


# --- detection ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mount:
    point: Path
    root: str
    fstype: str
    options: frozenset[str]


def _mounts(mountinfo: Path) -> list[_Mount]:
    mounts = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            mounts.append(_Mount(Path(fields[4].replace("\\040", " ")), fields[3], tail[0],
                                 frozenset(tail[2].split(","))))
    return mounts


def _own_paths(self_cgroup: Path) -> dict[str, str]:
    """Controller (v2: "") -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in self_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _under(mount: _Mount, path: str) -> Path:
    relative = path
    if mount.root != "/" and path.startswith(mount.root):
        relative = path[len(mount.root):]
    return mount.point / relative.lstrip("/")


def detect(*, mountinfo: Path = Path("/proc/self/mountinfo"),
           self_cgroup: Path = Path("/proc/self/cgroup")) -> CgroupHost:
    """Find a writable hierarchy: v2 with memory+pids, else v1 with memory+pids, else none.

    v2 setup may move this process into ``<own>/agent``; that is why it runs once, at the
    first job, and not at import.
    """
    try:
        mounts, own = _mounts(mountinfo), _own_paths(self_cgroup)
    except OSError as exc:
        return CgroupHost(CgroupMode.NONE, reason=f"cannot read the cgroup layout: {exc}")
    reasons = []
    for mount in (m for m in mounts if m.fstype == "cgroup2"):
        try:
            return _pruned(_prepare_v2(_under(mount, own.get("", "/"))))
        except (OSError, ValueError) as exc:
            reasons.append(f"v2 at {mount.point}: {exc}")
    bases: dict[str, Path] = {}
    for mount in (m for m in mounts if m.fstype == "cgroup"):
        for ctrl in set(V1_REQUIRED + V1_OPTIONAL) & mount.options:
            base = _under(mount, own.get(ctrl, "/")) / PREFIX
            try:
                base.mkdir(exist_ok=True)
                _try_subtree(base)  # the folder may be another agent's (e.g. root's)
                bases[ctrl] = base
            except OSError as exc:
                reasons.append(f"v1 {ctrl}: {base}: {exc.strerror or exc}")
    missing = [c for c in V1_REQUIRED if c not in bases]
    if not missing:
        return _pruned(CgroupHost(CgroupMode.V1, bases))
    if not reasons:
        reasons.append(f"no writable cgroup hierarchy with {', '.join(missing)}")
    return CgroupHost(CgroupMode.NONE, reason="; ".join(reasons))


def _try_subtree(base: Path) -> None:
    """Make and remove a group where jobs' groups will go: proof we may, not a guess from
    the folder's existence or mode (``OSError`` if we may not)."""
    probe = base / f"probe-{os.getpid()}"
    probe.mkdir()
    probe.rmdir()


def _pruned(host: CgroupHost) -> CgroupHost:
    try:
        if count := host.prune_stale():
            log.info("removed %d job cgroup(s) left by an earlier agent", count)
    except OSError as exc:
        log.warning("could not prune old job cgroups: %s", exc)
    return host


def _prepare_v2(own: Path) -> CgroupHost:
    available = set((own / "cgroup.controllers").read_text().split())
    missing = [c for c in ("memory", "pids") if c not in available]
    if missing:
        raise ValueError(f"controllers {', '.join(missing)} are not delegated to {own}")
    wanted = " ".join(f"+{c}" for c in V2_CONTROLLERS if c in available)
    try:
        (own / "cgroup.subtree_control").write_text(wanted)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        agent = own / "agent"  # "no internal processes": step aside into a leaf
        agent.mkdir(exist_ok=True)
        (agent / "cgroup.procs").write_text(str(os.getpid()))
        (own / "cgroup.subtree_control").write_text(wanted)
        log.info("moved the agent into %s so job cgroups can have controllers", agent)
    _try_subtree(own)
    return CgroupHost(CgroupMode.V2, {"unified": own})
