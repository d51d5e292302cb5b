"""The end of a process job, shared by the runners: failure, or result plus artifacts."""

from __future__ import annotations

from typing import Any

from ..artifacts import Uploader, deliver
from ..sandbox.outcome import Finished
from ..sandbox.workdir import WorkDir
from .base import JobFailed, RunOutput
from .settings import ArtifactSettings


def raise_for_failure(finished: Finished) -> None:
    """Raise the job's ``JobFailed`` (code, message naming the limit, metrics), if any."""
    failure = finished.failure()
    if failure is not None:
        raise JobFailed(*failure, finished.metrics)


async def completed(finished: Finished, result: dict[str, Any], *, job_id: str,
                    workdir: WorkDir, settings: ArtifactSettings,
                    uploader: Uploader | None) -> RunOutput:
    """The job's ``RunOutput`` once its artifacts are inline or uploaded.

    Raises:
        JobFailed: the artifacts could not be delivered (see ``aitbc_miner.artifacts``).
    """
    try:
        manifest = await deliver(job_id, workdir.out, settings, uploader)
    except JobFailed as exc:
        raise JobFailed(exc.code, exc.message, {**finished.metrics, **exc.metrics}) from exc
    if manifest:
        result["artifacts"] = manifest
    metrics = {**finished.metrics, "artifacts": len(manifest),
               "artifact_bytes": sum(int(row.get("size", 0)) for row in manifest)}
    return RunOutput(result, metrics)
