"""One ``cli`` job through the real runner and sandbox, in whatever world this process was
started in (as another user, under an emulated systemd unit, ...).

Usage: ``python one_job.py <allowlist-dir> <jobs-dir> <command> [args...]``. Prints one
JSON line: ``{"result": ...}``, or ``{"code": ..., "message": ...}`` when the job fails.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

from aitbc_miner.runners.base import JobFailed, RunContext, SlotKind
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.settings import RunnerSettings


async def main(allowlist: Path, jobs: Path, command: str, args: list[str]) -> dict[str, object]:
    runner = CliRunner(RunnerSettings(allowlist_dirs=[allowlist]))
    await runner.refresh()
    job_id = f"t-{uuid.uuid4().hex[:12]}"
    workspace = jobs / job_id
    workspace.mkdir(parents=True, mode=0o700)
    ctx = RunContext(job_id=job_id, slot_id="cpu:0", slot_kind=SlotKind.CPU,
                     workspace=workspace, timeout_s=60.0)
    try:
        out = await runner.run({"type": "cli", "command": command, "args": args}, ctx)
    except JobFailed as exc:
        return {"code": exc.code.value, "message": exc.message}
    return {"result": out.result}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3],
                                      sys.argv[4:]))))
