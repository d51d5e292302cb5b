"""How a sandboxed process ended, and the one place that turns that into an error code.

The order of the checks in ``failure`` is the contract: what the agent did to the job
(stopped it for output or its own time limit) beats what the kernel did (OOM kill,
SIGXCPU, SIGXFSZ), which beats what the job said (its exit code). Every message names
the limit that was hit, so the client can tell "my job is broken" from "the miner's
limits are too small".
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..codes import ErrorCode
from .limits import Limits

# What a process that ran out of address space (RLIMIT_AS, no cgroup) tends to print.
OUT_OF_MEMORY = re.compile(r"MemoryError|std::bad_alloc|Cannot allocate memory|out of memory",
                           re.IGNORECASE)
# What a process that ignores SIGXFSZ (Python does) prints when RLIMIT_FSIZE stops a write.
FILE_TOO_LARGE = re.compile(r"File too large|EFBIG")


class StopReason(StrEnum):
    """Why the agent itself stopped a job (cancellation is not here: the engine owns it)."""

    OUTPUT_LIMIT = "output_limit"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Finished:
    """Everything the runner needs to report a finished (or stopped) job."""

    exit_code: int | None  # None when killed by a signal or never started
    signal: int | None
    limits: Limits
    stopped: StopReason | None = None
    setup_stage: str | None = None  # the launcher step that failed before exec
    setup_error: str | None = None
    oom_kills: int = 0
    memory_by_cgroup: bool = False
    memory_sampled_over: int = 0  # without a cgroup: the job's total when it was killed
    disk_full: bool = False  # the job filled its workspace tmpfs
    copy_error: str | None = None  # its files could not be copied back to the host
    executable_fd: int | None = None  # the checked executable's descriptor, if it had one
    stdout: bytes = b""
    stderr_tail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure() is None

    def failure(self) -> tuple[ErrorCode, str] | None:
        """The error code and message to report, or None for a clean exit 0."""
        return self._classify()

    def _classify(self) -> tuple[ErrorCode, str] | None:
        lim = self.limits
        if self.setup_stage is not None:
            return _setup_failure(self.setup_stage, self.setup_error or "failed")
        if self.stopped is StopReason.OUTPUT_LIMIT:
            return (ErrorCode.E_OUTPUT_LIMIT,
                    f"limits.output_bytes: wrote more than {lim.output_bytes} bytes to "
                    "stdout and stderr; stopped")
        if self.stopped is StopReason.TIMEOUT:
            return ErrorCode.E_TIMEOUT, f"limits.timeout_s: ran past {lim.timeout_s:g}s; stopped"
        if self.copy_error is not None:
            return (ErrorCode.E_DISK,
                    f"workspace: could not copy the job's files back: {self.copy_error}")
        bwrap_said = self.stderr_tail.lstrip() if self.exit_code == 1 else ""
        if self.executable_fd is not None and bwrap_said.startswith(
                f"bwrap: Can't find source path /proc/self/fd/{self.executable_fd}:"):
            return (ErrorCode.E_DENY, "executable.changed: the allowlisted file was replaced "
                    "or removed while the job started; not run")
        if bwrap_said.startswith("bwrap: execvp"):
            return (ErrorCode.E_INTERNAL,
                    f"sandbox: could not start the executable: {_tail(self.stderr_tail)}")
        if bwrap_said.startswith("bwrap:"):
            return (ErrorCode.E_SANDBOX_UNAVAILABLE,
                    f"sandbox: bubblewrap could not build the sandbox: {_tail(self.stderr_tail)}")
        return self._by_kernel() or self._by_disk() or self._by_exit()

    def _by_disk(self) -> tuple[ErrorCode, str] | None:
        if self.disk_full and self.exit_code != 0:
            return (ErrorCode.E_DISK,
                    f"limits.disk_mb: filled its {self.limits.disk_mb} MiB workspace: "
                    f"{_tail(self.stderr_tail, 200)}")
        return None

    def _by_kernel(self) -> tuple[ErrorCode, str] | None:
        """The kernel enforced a limit: an OOM kill in the cgroup, SIGXCPU or SIGXFSZ."""
        lim = self.limits
        if self.oom_kills:
            return (ErrorCode.E_OOM,
                    f"limits.memory_mb: hit its memory limit of {lim.memory_mb} MiB "
                    f"({self.oom_kills} process(es) killed by the kernel)")
        if self.memory_sampled_over:
            return (ErrorCode.E_OOM,
                    f"limits.memory_mb: its processes together used "
                    f"{self.memory_sampled_over >> 20} MiB, over its {lim.memory_mb} MiB limit; "
                    "stopped")
        if self.signal == signal.SIGXCPU:
            return (ErrorCode.E_TIMEOUT,
                    f"limits.cpu_seconds: used more than {lim.cpu_seconds} CPU seconds")
        if self.signal == signal.SIGXFSZ:
            return (ErrorCode.E_OUTPUT_LIMIT,
                    f"limits.file_size_mb: wrote a file larger than {lim.file_size_mb} MiB")
        return None

    def _by_exit(self) -> tuple[ErrorCode, str] | None:
        """The job ended by itself: fine, a limit it reported in words, or a failure."""
        lim, tail = self.limits, self.stderr_tail
        if self.exit_code == 0:
            return None
        if lim.file_size_mb is not None and FILE_TOO_LARGE.search(tail):
            return (ErrorCode.E_OUTPUT_LIMIT,
                    f"limits.file_size_mb: wrote a file larger than {lim.file_size_mb} MiB: "
                    f"{_tail(tail, 200)}")
        if not self.memory_by_cgroup and OUT_OF_MEMORY.search(tail):
            return (ErrorCode.E_OOM,
                    "limits.memory_mb: ran out of its address-space limit "
                    f"({lim.address_space_mb or lim.memory_mb} MiB): {_tail(tail)}")
        if self.signal is not None:
            return ErrorCode.E_EXIT, f"killed by {signal.Signals(self.signal).name}: {_tail(tail)}"
        return ErrorCode.E_EXIT, f"exited with code {self.exit_code}: {_tail(tail)}"


def _setup_failure(stage: str, error: str) -> tuple[ErrorCode, str]:
    if stage in ("sandbox", "user"):
        return ErrorCode.E_SANDBOX_UNAVAILABLE, f"sandbox: {error}; not run"
    if stage == "network":  # never run a `none` job with the host's network instead
        return (ErrorCode.E_DENY,
                f"network.none: could not isolate the job's network ({error}); not run")
    if stage == "exec":
        return ErrorCode.E_INTERNAL, f"sandbox: could not start the executable: {error}"
    return ErrorCode.E_INTERNAL, f"sandbox: {stage} setup failed: {error}"


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    if not text:
        return "(no stderr)"
    return text if len(text) <= limit else "..." + text[-limit:]
