"""Built-in job types for tests and the demo: ``noop``, ``sleep``, ``echo``, ``sha256``.

They need no sandbox: none runs operator or client code, and each validates its payload.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

from ..codes import ErrorCode
from .base import JobFailed, RunContext, RunOutput, SlotKind

MAX_SLEEP_S = 3600.0  # a demo job never holds a slot longer than an hour
MAX_PAYLOAD_CHARS = 1 << 20  # 1 MiB of text is plenty for echo / sha256


class BuiltinRunner:
    name = "builtin"
    job_types = frozenset({"noop", "sleep", "echo", "sha256"})
    slot_kind = SlotKind.CPU

    def available(self) -> bool:
        return True

    def capabilities(self) -> Mapping[str, Any]:
        return {}

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        job_type = payload["type"]
        if job_type == "noop":
            return RunOutput({"status": "completed"})
        if job_type == "sleep":
            seconds = _number(payload, "seconds", 0.0, MAX_SLEEP_S)
            steps = max(1, min(int(seconds * 4), 100))
            for step in range(steps):
                await asyncio.sleep(seconds / steps)
                ctx.report_progress({"pct": round(100 * (step + 1) / steps)})
            return RunOutput({"status": "completed", "slept_s": seconds})
        text = _text(payload, "data")
        if job_type == "echo":
            return RunOutput({"status": "completed", "output": text})
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return RunOutput({"status": "completed", "output": digest, "algorithm": "sha256"})


def _number(payload: Mapping[str, Any], key: str, low: float, high: float) -> float:
    value = payload.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise JobFailed(ErrorCode.E_BADJOB, f"{key!r} must be a number in [{low}, {high}]")
    return float(value)


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_PAYLOAD_CHARS:
        raise JobFailed(
            ErrorCode.E_BADJOB, f"{key!r} must be a string of at most {MAX_PAYLOAD_CHARS} chars"
        )
    return value
