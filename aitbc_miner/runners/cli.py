"""The ``cli`` runner: an operator-allowlisted command, run as an argv in the sandbox.

Payload: ``{"type": "cli", "command": "<entry>", "args": [...], "env": {...},
"stdin": "..."}``. The allowlist turns it into an exact argv (no shell, no search path)
or refuses it with ``E_DENY`` and the rule. The result carries the exit code, stdout
(with secrets redacted; parsed when the entry says ``output: json``) and the artifact
manifest of ``out/``; the metrics carry CPU time and memory peak.

GPU: an entry with ``gpu: true`` runs only through a runner built with
``slot_kind=SlotKind.GPU`` (job type ``cli-gpu``), so it holds a GPU slot and sees only
that GPU; a ``cli`` job (CPU slot) sees none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import logs
from ..artifacts import Uploader
from ..codes import ErrorCode
from ..sandbox import JobSpec, Sandbox
from ..sandbox.workdir import WorkDir
from ..secretsource import SecretError
from .allowlist import Allowlist, Invocation, open_executable
from .base import JobFailed, RunContext, RunOutput, SlotKind
from .results import completed, raise_for_failure
from .sandboxed import SandboxedRunner, make_sandbox
from .settings import RunnerSettings

log = logging.getLogger(__name__)


def make_uploader(settings: RunnerSettings, headers: Mapping[str, str] | None) -> Uploader | None:
    """The artifact uploader the settings ask for (None without an upload URL)."""
    art = settings.artifacts
    if art.upload_url is None:
        return None
    return Uploader(art.upload_url, attempts=art.upload_attempts, timeout_s=art.upload_timeout_s,
                    headers=headers)


class CliRunner(SandboxedRunner):
    """Runs allowlisted commands; one instance per slot kind (``cli`` or ``cli-gpu``)."""

    def __init__(self, settings: RunnerSettings, *, allowlist: Allowlist | None = None,
                 sandbox: Sandbox | None = None, uploader: Uploader | None = None,
                 slot_kind: SlotKind = SlotKind.CPU) -> None:
        self.settings = settings
        self.allowlist = allowlist if allowlist is not None else Allowlist.load(
            settings.allowlist_dirs, secrets=settings.secrets.keys())
        self.sandbox = sandbox or make_sandbox(settings)
        self.uploader = uploader if uploader is not None else make_uploader(settings, None)
        self.slot_kind = slot_kind
        self.name = "cli" if slot_kind is SlotKind.CPU else "cli-gpu"
        self.job_types = frozenset({self.name})

    def reconfigure(self, settings: RunnerSettings, allowlist: Allowlist,
                    uploader: Uploader | None) -> None:
        """New allowlist, limits, secrets and artifact rules for the jobs that start from
        now on (a config reload); the sandbox stays as built. Running jobs keep theirs."""
        self.settings, self.allowlist, self.uploader = settings, allowlist, uploader

    def capabilities(self) -> Mapping[str, Any]:
        gpu = self.slot_kind is SlotKind.GPU
        names = sorted(n for n, e in self.allowlist.entries.items() if e.gpu == gpu)
        return {f"{self.name.replace('-', '_')}_commands": names}

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        call = self.allowlist.resolve(payload)
        self._check_slot(call)
        entry = call.entry
        limits = self.settings.limits.merged(entry.limits)
        workdir = await asyncio.to_thread(WorkDir.prepare, ctx.workspace)
        stdin = None
        if call.stdin is not None:
            stdin = ctx.workspace / "stdin"
            await asyncio.to_thread(_write_private, stdin, call.stdin)
        secrets = await job_secrets(self.settings, entry.secrets)
        executable = await asyncio.to_thread(open_executable, entry.executable)
        try:
            spec = JobSpec(
                job_id=ctx.job_id, argv=call.argv,
                env={**workdir.base_env(ctx.job_id, ctx.gpu_uuid if entry.gpu else None),
                     **call.env},
                cwd=workdir.work, workspace=ctx.workspace, limits=limits, network=entry.network,
                stdin=stdin, secrets=secrets, gpu=entry.gpu,
                gpu_index=ctx.gpu_index if entry.gpu else None, executable_fd=executable,
                ro_paths=tuple(entry.read_only))
            finished = await self.sandbox.run(spec, on_line=ctx.report_log,
                                               on_started=ctx.report_pid)
        finally:
            os.close(executable)
        raise_for_failure(finished)
        stdout = logs.redact(finished.stdout.decode("utf-8", "replace"))  # a courtesy only
        result: dict[str, Any] = {"status": "completed", "command": call.name, "exit_code": 0,
                                  "stdout": stdout}
        if entry.output == "json":
            try:
                result["output"] = json.loads(stdout)
            except ValueError as exc:
                raise JobFailed(ErrorCode.E_BADRESULT,
                                f"output: entry {call.name!r} promises JSON on stdout, got "
                                f"invalid JSON ({exc})", finished.metrics) from exc
            del result["stdout"]
        return await completed(finished, result, job_id=ctx.job_id, workdir=workdir,
                               settings=self.settings.artifacts, uploader=self.uploader)

    def _check_slot(self, call: Invocation) -> None:
        if call.entry.gpu and self.slot_kind is SlotKind.CPU:
            raise JobFailed(ErrorCode.E_UNSUPPORTED,
                            f"gpu: entry {call.name!r} uses a GPU; send it as type 'cli-gpu'")
        if not call.entry.gpu and self.slot_kind is SlotKind.GPU:
            raise JobFailed(ErrorCode.E_DENY,
                            f"gpu: entry {call.name!r} may not use a GPU; send it as type 'cli'")


async def job_secrets(settings: RunnerSettings, names: list[str]) -> dict[str, bytes]:
    """The job's secrets, read off the loop (a file, a credential, a token session)."""
    if not names:
        return {}
    try:
        return await asyncio.to_thread(settings.secret_values, names)
    except SecretError as exc:  # the operator's log says which and why; the client, the code
        log.warning("a job's secret cannot be read: %s", exc,
                    extra={"event_name": "secret_unreadable", "code": exc.code.value})
        raise JobFailed(ErrorCode.E_INTERNAL,
                        f"secrets: cannot read a secret this job needs ({exc.code.value})"
                        ) from None
    except KeyError as exc:
        raise JobFailed(ErrorCode.E_INTERNAL,
                        f"secrets: cannot read a secret this job needs ({type(exc).__name__})"
                        ) from None


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)
