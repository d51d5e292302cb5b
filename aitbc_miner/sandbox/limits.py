"""What a job process may use: the operator's limits and the job's network policy.

``Limits`` holds the defaults from the runner settings; an allowlist entry (or a trusted
Python function) may override any field it names, including setting one to ``null`` to
lift it. ``merged`` applies only the fields the override actually set, so an entry that
names ``memory_mb`` alone keeps every other default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1 << 20


class NetworkPolicy(StrEnum):
    """A job's network egress: ``none`` gives it a namespace with loopback only."""

    NONE = "none"
    HOST = "host"


class Limits(BaseModel):
    """Per-job limits, enforced by cgroups where the host allows and by rlimits always."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float | None = Field(
        None, gt=0, description="Wall-clock cap in seconds (the engine's own limit also applies)")
    memory_mb: int | None = Field(
        2048, ge=4, description="Memory cap (cgroup memory.max); without cgroups it becomes the "
        "address-space rlimit unless address_space_mb is set")
    address_space_mb: int | None = Field(
        None, ge=16, description="RLIMIT_AS in MiB; leave unset for GPU jobs (drivers map a lot)")
    cpu_seconds: int | None = Field(None, ge=1, description="RLIMIT_CPU: seconds before SIGXCPU")
    open_files: int = Field(1024, ge=16, description="RLIMIT_NOFILE")
    processes: int = Field(256, ge=1, description="pids.max of the job's cgroup (RLIMIT_NPROC "
                           "without cgroups; that one counts every process of the user)")
    file_size_mb: int | None = Field(1024, ge=1, description="RLIMIT_FSIZE: largest file written")
    disk_mb: int = Field(1024, ge=1, description="Size of the job's workspace (a tmpfs, which "
                         "is also its /tmp); filling it is E_DISK")
    output_bytes: int = Field(8 * MIB, ge=1024,
                              description="stdout + stderr bytes before E_OUTPUT_LIMIT")
    log_bytes: int = Field(1 * MIB, ge=0, description="Bytes of each stream kept as a log file")
    nice: int = Field(10, ge=0, le=19, description="Scheduling niceness of the job")
    ionice: Literal["none", "best-effort", "idle"] = Field(
        "best-effort", description="I/O scheduling class (ioprio); none leaves it as inherited")
    ionice_level: int = Field(7, ge=0, le=7, description="Level within best-effort (7 = lowest)")
    cpu_weight: int = Field(100, ge=1, le=10000, description="cgroup cpu.weight (v1: cpu.shares)")

    def merged(self, override: Limits | None) -> Limits:
        """These limits with every field ``override`` explicitly set replacing ours."""
        if override is None:
            return self
        return self.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})

    def rlimit_memory_mb(self, *, cgroup_memory: bool, gpu: bool) -> int | None:
        """The address-space rlimit: as set, or standing in for memory_mb without cgroups.

        A GPU job never gets the stand-in: CUDA maps far more address space than it uses.
        """
        if self.address_space_mb is not None or cgroup_memory or gpu:
            return self.address_space_mb
        return self.memory_mb
