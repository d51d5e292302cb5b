"""Helpers for the runner tests: real allowlists, real processes, a process-table scan."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from aitbc_miner.runners.base import RunContext, SlotKind
from aitbc_miner.sandbox import Sandbox, SandboxFeatures
from aitbc_miner.sandbox.cgroups import CgroupHost, CgroupMode

# Allowlist entries must name the real file, and one the job's user can run: a root
# agent's jobs run as an unprivileged user, who may not reach a Python under /root.
PY = os.path.realpath(sys.executable if os.geteuid() != 0 or not os.path.exists(
    "/usr/bin/python3") else "/usr/bin/python3")
BEHAVE = str(Path(__file__).resolve().parents[1] / "fixtures_runners" / "behave.py")
FAST_KILL = {"sigint_grace_s": 0.3, "sigterm_grace_s": 0.3}


def sandbox_or_skip() -> Sandbox:
    """A default ``Sandbox``; the test is skipped, saying why, where it cannot run jobs here
    (no bubblewrap, or a root agent without its job user: ``.ci/run`` provides both)."""
    sandbox = Sandbox()
    if problem := sandbox.unavailable():
        pytest.skip(f"no job sandbox on this host: {problem}")
    return sandbox


def host_features() -> SandboxFeatures:
    """What a default ``Sandbox`` finds here (bubblewrap, as the user jobs run as)."""
    return sandbox_or_skip().features


def without_cgroups() -> SandboxFeatures:
    """This host's isolation, minus cgroups: a host where memory is bounded per job by the
    launcher's sampling alone."""
    return replace(host_features(), cgroups=CgroupHost(CgroupMode.NONE, reason="test"))


def features_or_skip(*, netns: bool = False, cgroup: bool = False, tmpfs: bool = False) -> None:
    found = host_features()
    if netns and not found.netns:
        pytest.skip(f"needs network namespaces: {found.describe()}")
    if tmpfs and not found.private_tmpfs:
        pytest.skip(f"needs a private mount namespace: {found.describe()}")
    if cgroup and found.cgroups.mode is CgroupMode.NONE:
        pytest.skip(f"needs a writable cgroup hierarchy: {found.describe()}")


def default_network() -> str:
    """``none`` where the host can isolate it; elsewhere tests that are not about the
    network run with ``host`` (a ``none`` job would rightly be refused there)."""
    return "none" if host_features().netns else "host"


def behave(mode: str, *, args: dict[str, Any] | None = None, **entry: Any) -> dict[str, Any]:
    """An allowlist entry running ``behave.py <mode>``; by default job args are plain words."""
    rest = {"type": "string", "allow_dash": False}
    return {"executable": PY, "fixed_args": ["-I", BEHAVE, mode], "read_only": [BEHAVE],
            "args": args or {"max_count": 4, "rest": rest}, **entry}


def traversable(folder: Path) -> None:
    """Let every user pass through ``folder`` and its parents below /tmp (mode 0711)."""
    for path in [folder, *folder.parents]:
        if path in (Path("/"), Path("/tmp")) or path.stat().st_uid != os.geteuid():
            break
        path.chmod(path.stat().st_mode & 0o7777 | 0o111)


def write_allowlist(folder: Path, commands: dict[str, Any], name: str = "test.yaml") -> Path:
    """Write entries (each without a ``network`` gets ``default_network()``)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    entries = {k: {"network": default_network(), **v} if isinstance(v, dict) else v
               for k, v in commands.items()}
    (folder / name).write_text(yaml.safe_dump({"commands": entries}))
    return folder


class Lines:
    """The job's log lines as the runner reports them; ``wait_for`` awaits one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    async def wait_for(self, text: str, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.lines:
                self._changed.clear()
                await self._changed.wait()


def make_ctx(tmp_path: Path, *, timeout_s: float = 60.0, lines: Lines | None = None,
             slot_kind: SlotKind = SlotKind.CPU, gpu_uuid: str | None = None) -> RunContext:
    job_id = f"t-{uuid.uuid4().hex[:12]}"
    workspace = tmp_path / "jobs" / job_id
    workspace.mkdir(parents=True, mode=0o700)
    return RunContext(job_id=job_id, slot_id="cpu:0", slot_kind=slot_kind, workspace=workspace,
                      timeout_s=timeout_s, gpu_uuid=gpu_uuid,
                      report_log=lines if lines is not None else (lambda _line: None))


def processes_of(job_id: str) -> list[psutil.Process]:
    """Every live process whose environment carries this job's id (a scan of /proc)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("AITBC_JOB_ID") == job_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
