"""Who is on each GPU: the processes NVML lists, named (psutil) and sorted by owner.

NVML lists a device's compute and graphics processes with their VRAM (``nvml``); this
module says who each one is, as nvitop does: its user and command name, read with psutil
in the sampler's worker thread (``ProcessDirectory``, cached per process start), and its
**role** for this miner (:func:`role_of`, on the event loop, where the sampler knows the
jobs' PIDs):

- ``job``: a job's own process, or a child of one (a sandboxed job's PID is bubblewrap's;
  its CUDA process is a descendant);
- ``backend``: the inference server the miner's jobs go through (Ollama's runner, a
  llama.cpp or vLLM server): not a job's, and it holds the model's VRAM between jobs;
- ``miner``: this agent's own process (the demo's in-process backend, for one);
- ``foreign``: anything else: "someone else is on GPU 1".

PIDs are the host's: a miner inside a container without the host's PID namespace sees
NVML's PIDs as strangers (``user``/``command`` unknown) and calls them foreign.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import psutil

#: Command names of inference servers (matched on the start of the process name).
BACKEND_COMMANDS: Final = ("ollama", "llama-server", "llama_server", "vllm",
                           "text-generation", "tgi-")
MAX_ANCESTORS: Final = 8  # how far up the parent chain a job's child is looked for
RECHECK_S: Final = 30.0  # how long a named PID is trusted before its start time is read again


class ProcessRole(StrEnum):
    JOB = "job"
    BACKEND = "backend"
    MINER = "miner"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What the OS says about one PID (``None``: gone, or not ours to read)."""

    pid: int
    user: str | None = None
    command: str | None = None
    ancestors: tuple[int, ...] = ()  # parent, grandparent, ... (bounded)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process on one device, as the console's process table shows it.

    ``vram_mib``: its VRAM in MiB (``None``: NVML cannot say, e.g. under WDDM).
    ``kind``: ``"C"`` compute, ``"G"`` graphics, ``"C+G"`` both (nvitop's letters).
    ``job_id``: the job it belongs to (role ``job``). ``sm_pct``: its share of the
    device's SMs in % over the last seconds (``None``: the device cannot say).
    """

    pid: int
    role: ProcessRole
    vram_mib: int | None = None
    kind: str = "C"
    user: str | None = None
    command: str | None = None
    job_id: str | None = None
    sm_pct: int | None = None

    @property
    def foreign(self) -> bool:
        return self.role is ProcessRole.FOREIGN

    def describe(self) -> str:
        """``pid 4242 (bob, python3)``: for warnings and logs."""
        who = ", ".join(x for x in (self.user, self.command) if x)
        return f"pid {self.pid}" + (f" ({who})" if who else "")


class ProcessDirectory:
    """PID -> :class:`ProcessInfo`, cached per process start. Blocking (it reads
    ``/proc``): the sampler calls it in its worker thread. A cached PID is trusted for
    ``recheck_s`` seconds, then its start time is read again (a PID reused by another
    process is named anew); one that left every GPU is dropped, so the cache stays small."""

    def __init__(self, recheck_s: float = RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recheck_s = recheck_s
        self.clock = clock
        self._cache: dict[int, tuple[float, ProcessInfo, float]] = {}  # started, info, checked
        self.lookups = 0  # processes named with psutil (the bench and tests count them)

    def resolve(self, pids: Iterable[int]) -> dict[int, ProcessInfo]:
        wanted = set(pids)
        for gone in self._cache.keys() - wanted:
            del self._cache[gone]
        now = self.clock()
        return {pid: self._info(pid, now) for pid in wanted}

    def _info(self, pid: int, now: float) -> ProcessInfo:
        cached = self._cache.get(pid)
        if cached is not None and now - cached[2] < self.recheck_s:
            return cached[1]
        try:
            proc = psutil.Process(pid)
            started = proc.create_time()
        except (psutil.Error, OSError, ValueError):
            self._cache.pop(pid, None)
            return ProcessInfo(pid)
        if cached is not None and cached[0] == started:
            self._cache[pid] = (started, cached[1], now)
            return cached[1]
        self.lookups += 1
        info = ProcessInfo(pid, _ask(proc.username), _ask(proc.name), _ancestors(proc))
        self._cache[pid] = (started, info, now)
        return info


def _ask(method: object) -> str | None:
    try:
        value = method()  # type: ignore[operator]
    except (psutil.Error, OSError):
        return None
    return value if isinstance(value, str) and value else None


def _ancestors(proc: psutil.Process) -> tuple[int, ...]:
    chain: list[int] = []
    try:
        ppid = proc.ppid()
        while ppid > 0 and len(chain) < MAX_ANCESTORS:
            chain.append(ppid)
            ppid = psutil.Process(ppid).ppid()
    except (psutil.Error, OSError):
        pass
    return tuple(chain)


def is_backend_command(command: str | None) -> bool:
    return bool(command) and command.lower().startswith(BACKEND_COMMANDS)  # type: ignore[union-attr]


def role_of(info: ProcessInfo, job_pids: Mapping[int, str],
            backend_pids: Collection[int] = (), own_pid: int | None = None,
            ) -> tuple[ProcessRole, str | None]:
    """The process's role for this miner, and its job when it is a job's."""
    for pid in (info.pid, *info.ancestors):
        job = job_pids.get(pid)
        if job is not None:
            return ProcessRole.JOB, job
    if info.pid in backend_pids or is_backend_command(info.command):
        return ProcessRole.BACKEND, None
    me = os.getpid() if own_pid is None else own_pid
    if info.pid == me or me in info.ancestors:
        return ProcessRole.MINER, None
    return ProcessRole.FOREIGN, None
