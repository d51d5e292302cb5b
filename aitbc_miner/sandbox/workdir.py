"""A process job's folders inside its workspace, and the environment every job starts with.

``<workspace>/work`` is the job's current directory and ``$HOME``; ``work/out`` holds its
artifacts and ``work/tmp`` its ``$TMPDIR``. Nothing of the agent's own environment is
passed on: a job sees a fixed ``PATH``, these folders, and what its entry allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class WorkDir:
    root: Path  # the job's workspace (job.json, logs)
    work: Path
    out: Path
    tmp: Path

    @classmethod
    def prepare(cls, workspace: Path) -> WorkDir:
        work = workspace / "work"
        folders = cls(workspace, work, work / "out", work / "tmp")
        for folder in (folders.work, folders.out, folders.tmp):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folders

    def base_env(self, job_id: str, gpu_uuid: str | None) -> dict[str, str]:
        """What every job gets; a GPU job sees only its own GPU, a CPU job none."""
        return {
            "PATH": SAFE_PATH, "HOME": str(self.work), "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "AITBC_JOB_ID": job_id, "AITBC_OUT_DIR": str(self.out),
            "CUDA_VISIBLE_DEVICES": gpu_uuid or "", "NVIDIA_VISIBLE_DEVICES": gpu_uuid or "void",
        }
