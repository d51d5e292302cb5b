"""cgroup layout and files, on fake v1 and v2 trees (the real kernel is used elsewhere)."""

from __future__ import annotations

from pathlib import Path

from aitbc_miner.sandbox.cgroups import CgroupMode, detect
from aitbc_miner.sandbox.limits import Limits

LIMITS = Limits(memory_mb=64, processes=32, cpu_weight=50)


def _tree(tmp_path: Path, mounts: list[str], own: str) -> tuple[Path, Path]:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("".join(f"{i} 1 0:{i} / {line}\n" for i, line in enumerate(mounts, 30)))
    self_cgroup = tmp_path / "cgroup"
    self_cgroup.write_text(own)
    return mountinfo, self_cgroup


def test_v2_with_delegated_controllers_gets_a_job_group_with_its_limits(tmp_path):
    # Given a cgroup2 mount where this process sits in /svc with memory, pids and cpu
    root = tmp_path / "cg"
    own = root / "svc"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    mountinfo, self_cgroup = _tree(tmp_path, [f"{root} rw - cgroup2 cgroup2 rw"], "0::/svc\n")
    # When the host is detected and a job group made
    host = detect(mountinfo=mountinfo, self_cgroup=self_cgroup)
    group = host.create("job/1", LIMITS)
    # Then controllers are enabled for children and the limits are written
    assert host.mode is CgroupMode.V2
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (directory,) = group.dirs.values()
    assert directory.parent == own and directory.name.startswith("job-job_1-")
    assert (directory / "memory.max").read_text() == str(64 << 20)
    assert (directory / "pids.max").read_text() == "32"
    assert group.procs_files == [str(directory / "cgroup.procs")]
    # And metrics and OOM kills are read from the v2 files
    (directory / "memory.peak").write_text("1234\n")
    (directory / "cpu.stat").write_text("usage_usec 5000\nuser_usec 1\n")
    (directory / "memory.events").write_text("low 0\noom 2\noom_kill 1\n")
    assert group.metrics() == {"memory_peak_bytes": 1234, "cpu_time_ms": 5}
    assert group.oom_kills() == 1


def test_v2_without_memory_falls_back_to_v1_controllers(tmp_path):
    # Given a hybrid host: cgroup2 without memory, v1 memory and pids mounted
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    memory, pids = tmp_path / "memory", tmp_path / "pids"
    (memory / "agent").mkdir(parents=True)
    pids.mkdir()
    mountinfo, self_cgroup = _tree(tmp_path, [
        f"{unified} rw - cgroup2 cgroup2 rw", f"{memory} rw - cgroup cgroup rw,memory",
        f"{pids} rw - cgroup cgroup rw,pids"], "0::/\n4:memory:/agent\n8:pids:/\n")
    # When detected
    host = detect(mountinfo=mountinfo, self_cgroup=self_cgroup)
    group = host.create("j", LIMITS)
    # Then v1 is used under each controller's own path, with v1 file names
    assert host.mode is CgroupMode.V1
    assert host.bases == {"memory": memory / "agent" / "aitbc-miner", "pids": pids / "aitbc-miner"}
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (group.dirs["pids"] / "pids.max").read_text() == "32"
    (group.dirs["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 3\n")
    assert group.oom_kills() == 3
    for directory in group.dirs.values():
        for child in directory.iterdir():
            child.unlink()
    assert group.remove() and not any(d.exists() for d in group.dirs.values())


def test_no_writable_hierarchy_means_rlimits_with_a_reason(tmp_path):
    mountinfo, self_cgroup = _tree(tmp_path, [], "0::/\n")
    host = detect(mountinfo=mountinfo, self_cgroup=self_cgroup)
    assert host.mode is CgroupMode.NONE
    assert host.reason == "no writable cgroup hierarchy with memory, pids"



def test_a_folder_another_user_made_is_not_taken_for_writable(tmp_path):
    """An unprivileged agent on a host where a root agent once ran: the root-owned
    ``aitbc-miner`` folder exists, but no job group can be made in it."""
    import json
    import subprocess

    from tests.unprivileged import as_user

    prefix, env, _ = as_user()
    # Given v1 memory and pids trees (traversable, root's) where root's agent left its folder
    memory, pids = tmp_path / "memory", tmp_path / "pids"
    for base in (memory, pids):
        (base / "aitbc-miner").mkdir(parents=True)
    mountinfo, self_cgroup = _tree(tmp_path, [
        f"{memory} rw - cgroup cgroup rw,memory", f"{pids} rw - cgroup cgroup rw,pids"],
        "4:memory:/\n8:pids:/\n")
    for path in [tmp_path, *tmp_path.parents]:
        if path == Path("/tmp"):
            break
        path.chmod(0o755)
    # When the unprivileged agent detects its cgroups
    code = ("import json; from pathlib import Path; from aitbc_miner.sandbox.cgroups import "
            f"detect; h = detect(mountinfo=Path({str(mountinfo)!r}), "
            f"self_cgroup=Path({str(self_cgroup)!r})); "
            "print(json.dumps([h.mode.value, h.reason]))")
    done = subprocess.run([*prefix, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    mode, reason = json.loads(done.stdout)
    # Then it finds no usable hierarchy, and says which folder refused it
    assert mode == "none"
    assert f"{memory / 'aitbc-miner'}: Permission denied" in reason
