"""The ``python`` runner: a trusted function from the operator's config, in a child process.

Payload: ``{"type": "python", "function": "package.module:function", ...}``; the whole
payload is the function's input (JSON on its stdin). Only functions named in
``runners.python.functions`` run, imported from ``runners.python.paths``; anything else
is ``E_DENY``. The function never runs in the agent: a crash, a leak or a blocking call
cannot hurt the engine, and the sandbox limits apply as to any command. Its return value
must be JSON-serialisable (else ``E_BADRESULT``) and is sent as ``result.output``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..artifacts import Uploader
from ..codes import ErrorCode
from ..sandbox import Isolation, JobSpec, Sandbox
from ..sandbox.isolation import interpreter_paths
from ..sandbox.workdir import WorkDir
from .base import JobFailed, RunContext, RunOutput, SlotKind
from .cli import job_secrets, make_uploader
from .results import completed, raise_for_failure
from .sandboxed import SandboxedRunner, make_sandbox
from .settings import PythonFunction, RunnerSettings

PYCALL = Path(__file__).resolve().parent.parent / "sandbox" / "pycall.py"
PYCALL_IN_SANDBOX = "/opt/aitbc/pycall.py"  # bound read-only there; nothing else of the agent's
RESULT_FILE = ".aitbc-result.json"  # in the job's work folder, copied back with it


class PythonRunner(SandboxedRunner):
    name = "python"
    job_types = frozenset({"python"})
    slot_kind = SlotKind.CPU

    def __init__(self, settings: RunnerSettings, *, sandbox: Sandbox | None = None,
                 uploader: Uploader | None = None) -> None:
        self.sandbox = sandbox or make_sandbox(settings)
        self.reconfigure(settings, uploader if uploader is not None
                         else make_uploader(settings, None))

    def reconfigure(self, settings: RunnerSettings, uploader: Uploader | None) -> None:
        """New functions, limits, secrets and artifact rules for the jobs that start from
        now on (a config reload); the sandbox stays as built. Running jobs keep theirs."""
        self.settings = settings
        self.functions: dict[str, PythonFunction] = {f.target: f for f in settings.python.functions}
        self.uploader = uploader
        self.python = str(settings.python.executable or sys.executable)

    def capabilities(self) -> Mapping[str, Any]:
        return {"python_functions": sorted(self.functions)}

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        target = payload.get("function")
        if not isinstance(target, str) or not target:
            raise JobFailed(ErrorCode.E_BADJOB, "'function' must name a package.module:function")
        function = self.functions.get(target)
        if function is None:
            raise JobFailed(ErrorCode.E_DENY,
                            f"function.unknown: {target[:128]!r} is not a configured trusted "
                            "function")
        workdir = await asyncio.to_thread(WorkDir.prepare, ctx.workspace)
        stdin = ctx.workspace / "input.json"
        result_file = workdir.work / RESULT_FILE
        await asyncio.to_thread(stdin.write_text, json.dumps(dict(payload)))
        isolated = self.sandbox.isolation is Isolation.BWRAP
        python = os.path.realpath(self.python)
        argv = [python, "-I", PYCALL_IN_SANDBOX if isolated else str(PYCALL),
                "--result", str(result_file)]
        paths = tuple(self.settings.python.paths)
        for path in paths:
            argv += ["--path", str(path)]
        secrets = await job_secrets(self.settings, function.secrets)
        spec = JobSpec(
            job_id=ctx.job_id, argv=[*argv, target],
            env=workdir.base_env(ctx.job_id, None), cwd=workdir.work, workspace=ctx.workspace,
            limits=self.settings.limits.merged(function.limits), network=function.network,
            stdin=stdin, secrets=secrets,
            ro_paths=(*interpreter_paths(python), *paths),
            ro_files={PYCALL_IN_SANDBOX: PYCALL})
        finished = await self.sandbox.run(spec, on_line=ctx.report_log,
                                           on_started=ctx.report_pid)
        raise_for_failure(finished)
        answer = await asyncio.to_thread(_read_answer, result_file)
        if not answer.get("ok"):
            raise JobFailed(ErrorCode.E_BADRESULT,
                            f"{target} {answer.get('message', 'wrote no result')}",
                            finished.metrics)
        result = {"status": "completed", "function": target, "output": answer.get("output")}
        return await completed(finished, result, job_id=ctx.job_id, workdir=workdir,
                               settings=self.settings.artifacts, uploader=self.uploader)


def _read_answer(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ok": False, "message": "exited 0 without writing a result"}
    return data if isinstance(data, dict) else {"ok": False, "message": "wrote a malformed result"}
