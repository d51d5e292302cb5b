"""The runner interface the engine drives, and the registry that picks a runner per job.

A runner is handed a payload and a ``RunContext`` and either returns a ``RunOutput`` or
raises ``JobFailed`` with a stable ``ErrorCode``. Timeouts and cancellation arrive as
``asyncio.CancelledError`` in the runner's task: a runner that starts processes must
stop them before it lets the cancellation out. The engine, not the runner, decides
whether a cancellation means ``E_CANCELED`` or ``E_TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..codes import ErrorCode


class SlotKind(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class JobFailed(Exception):
    """A job ended without a result; ``code`` and ``message`` go to ``/fail`` as they are."""

    def __init__(self, code: ErrorCode, message: str, metrics: Mapping[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.metrics = dict(metrics or {})


@dataclass(frozen=True, slots=True)
class RunOutput:
    """A successful job's ``result`` and ``metrics`` (``duration_ms`` is added by the engine)."""

    result: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunContext:
    """What a runner may know about where and how it runs."""

    job_id: str
    slot_id: str
    slot_kind: SlotKind
    workspace: Path
    timeout_s: float
    constraints: Mapping[str, Any] = field(default_factory=dict)
    gpu_uuid: str | None = None
    gpu_index: str | None = None  # NVML's index ("0", or "0:1" for a MIG instance)
    # Progress for the console: e.g. {"tokens": 120, "tokens_per_s": 41.2} or {"pct": 40}.
    report_progress: Callable[[Mapping[str, Any]], None] = lambda _p: None
    # One line of the job's own output, for the live log tail.
    report_log: Callable[[str], None] = lambda _line: None
    # The job's main process once started (per-process VRAM accounting on its GPU).
    report_pid: Callable[[int], None] = lambda _pid: None


@runtime_checkable
class Runner(Protocol):
    """One kind of work. ``job_types`` are the payload ``type`` values it takes."""

    name: str
    job_types: frozenset[str]
    slot_kind: SlotKind

    def available(self) -> bool:
        """Whether it can take work now (a backend may be down)."""
        ...

    def capabilities(self) -> Mapping[str, Any]:
        """Keys merged into the registration capabilities (e.g. ``models``)."""
        ...

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput: ...


class RunnerRegistry:
    """Maps a payload ``type`` to the runner that takes it."""

    def __init__(self, runners: list[Runner] | None = None) -> None:
        self._by_type: dict[str, Runner] = {}
        self._runners: list[Runner] = []
        for runner in runners or []:
            self.add(runner)

    def add(self, runner: Runner) -> None:
        for job_type in runner.job_types:
            if job_type in self._by_type:
                raise RuntimeError(f"job type {job_type!r} has two runners")
            self._by_type[job_type] = runner
        self._runners.append(runner)

    @property
    def runners(self) -> tuple[Runner, ...]:
        return tuple(self._runners)

    def for_payload(self, payload: Mapping[str, Any]) -> Runner:
        """The runner for a payload, or ``JobFailed`` (E_BADJOB / E_UNSUPPORTED)."""
        job_type = payload.get("type")
        if not isinstance(job_type, str) or not job_type:
            raise JobFailed(ErrorCode.E_BADJOB, "payload has no string 'type'")
        runner = self._by_type.get(job_type)
        if runner is None:
            known = ", ".join(sorted(self._by_type)) or "none"
            raise JobFailed(
                ErrorCode.E_UNSUPPORTED,
                f"job type {job_type!r} is not supported by this miner (supported: {known})",
            )
        if not runner.available():
            refusal = getattr(runner, "refusal", None)  # a runner that can say why
            raise (refusal() if refusal is not None else None) or JobFailed(
                ErrorCode.E_BACKEND_UNAVAILABLE, f"runner {runner.name!r} is not available now"
            )
        return runner

    def warnings(self) -> tuple[str, ...]:
        """Each runner's standing warnings (e.g. jobs not sandboxed), once each."""
        found: dict[str, None] = {}
        for runner in self._runners:
            for text in getattr(runner, "warnings", list)():
                found[text] = None
        return tuple(found)

    def capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "runners": {r.name: r.available() for r in self._runners},
            "job_types": sorted(t for t, r in self._by_type.items() if r.available()),
        }
        for runner in self._runners:
            if runner.available():
                for key, value in runner.capabilities().items():
                    caps.setdefault(key, value)
        return caps
