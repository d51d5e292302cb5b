"""Per-job folders: what a job leaves behind, how long it stays, and where it may live."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from aitbc_miner import workspace
from aitbc_miner.devnet import Devnet


def _folder(root: Path, job_id: str, age_days: float) -> Path:
    path = workspace.prepare(root, job_id, {"job_id": job_id})
    then = time.time() - age_days * 86400
    os.utime(path, (then, then))
    return path


def test_retention_keeps_the_newest_and_recent_folders_and_never_an_active_one(
        tmp_path: Path) -> None:
    # Given five finished jobs of different ages and one active, old job
    for i, age in enumerate([0.1, 0.2, 0.3, 3.0, 9.0]):
        _folder(tmp_path, f"done-{i}", age)
    _folder(tmp_path, "active", 30.0)
    # When keeping at most 3 folders, none older than 7 days
    removed = workspace.prune(tmp_path, keep_jobs=3, keep_days=7.0, active={"active"})
    # Then the two oldest finished ones go; the active one stays whatever its age
    assert sorted(removed) == ["done-3", "done-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["active", "done-0", "done-1", "done-2"]


def test_a_job_id_cannot_point_outside_the_workspace(tmp_path: Path) -> None:
    for job_id in ("..", "../../etc", "/abs/path", "a/b", ""):
        folder = workspace.job_dir(tmp_path, job_id)
        assert folder.parent == tmp_path and folder.name not in (".", "..")


async def test_a_finished_job_leaves_its_payload_and_outcome(devnet: Devnet, make_engine,
                                                             run_engine, tmp_path: Path) -> None:
    # Given a miner that ran one job
    job = await devnet.submit_job({"type": "echo", "data": "kept"})
    engine = make_engine(devnet.url)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
    await running.stop()
    # Then its folder holds the job as claimed and the outcome as delivered
    folder = workspace.job_dir(tmp_path / "miner" / "jobs", job["job_id"])
    assert json.loads((folder / "job.json").read_text())["payload"]["data"] == "kept"
    outcome = json.loads((folder / "result.json").read_text())
    assert outcome["endpoint"] == "result" and outcome["body"]["result"]["output"] == "kept"
