"""What the job sandbox costs per job start, before (launcher only) and after (bubblewrap).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/sandbox_bench.py             # 200 starts per mode
    PYTHONPATH=. .venv/bin/python bench/sandbox_bench.py --runs 40   # quicker

Each run starts ``/usr/bin/true`` through ``Sandbox.run`` with a ``network: none`` policy,
exactly as a ``cli`` job would, and measures:

- **start**: from ``Sandbox.run`` to the launcher's report that the job's own process
  runs (``on_started``);
- **total**: the whole run, including the end of the job, the sweep of its processes, and
  (bubblewrap) copying its workspace back.

Modes: ``none`` is the launcher as it was before the sandbox became a boundary (network
namespace, rlimits, cgroup, and for a root agent the drop to the job user); ``bwrap`` adds
the private mounts, the sized workspace tmpfs and bubblewrap's namespaces. The last line
is one JSON object with every figure. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aitbc_miner.sandbox import Isolation, JobSpec, Limits, NetworkPolicy, Sandbox
from aitbc_miner.sandbox.workdir import WorkDir

TRUE = "/usr/bin/true"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one(sandbox: Sandbox, root: Path, n: int) -> tuple[float, float]:
    workspace = root / f"job-{n}"
    workspace.mkdir(mode=0o700)
    folders = WorkDir.prepare(workspace)
    started: list[float] = []
    fd = os.open(TRUE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        spec = JobSpec(job_id=f"bench-{n}", argv=[TRUE], env=folders.base_env(f"bench-{n}", None),
                       cwd=folders.work, workspace=workspace, limits=Limits(),
                       network=NetworkPolicy.NONE, executable_fd=fd)
        t0 = time.perf_counter()
        finished = await sandbox.run(spec, on_started=lambda _pid: started.append(
            time.perf_counter()))
        t1 = time.perf_counter()
    finally:
        os.close(fd)
    if finished.failure() is not None or not started:
        raise SystemExit(f"run {n} failed: {finished.failure()}")
    return (started[0] - t0) * 1000, (t1 - t0) * 1000


async def _mode(isolation: Isolation, runs: int) -> dict[str, float]:
    sandbox = Sandbox(isolation=isolation)
    await sandbox.prepare()
    if problem := sandbox.unavailable():
        raise SystemExit(f"{isolation.value}: {problem}")
    starts, totals = [], []
    with tempfile.TemporaryDirectory(prefix="aitbc-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        for n in range(5):  # warm-up: page cache, first probes
            await _one(sandbox, root, -1 - n)
        for n in range(runs):
            start, total = await _one(sandbox, root, n)
            starts.append(start)
            totals.append(total)
    return {"start_p50_ms": statistics.median(starts), "start_p95_ms": _pct(starts, 0.95),
            "total_p50_ms": statistics.median(totals), "total_p95_ms": _pct(totals, 0.95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    figures = {mode.value: asyncio.run(_mode(mode, args.runs))
               for mode in (Isolation.NONE, Isolation.BWRAP)}
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"agent uid {os.geteuid()}, {args.runs} runs per mode")
    print(f"{'mode':<6} {'start p50':>10} {'start p95':>10} {'total p50':>10} {'total p95':>10}")
    for mode, f in figures.items():
        print(f"{mode:<6} {f['start_p50_ms']:>8.1f}ms {f['start_p95_ms']:>8.1f}ms "
              f"{f['total_p50_ms']:>8.1f}ms {f['total_p95_ms']:>8.1f}ms")
    extra = {k: figures["bwrap"][k] - figures["none"][k] for k in figures["none"]}
    print(f"bubblewrap adds: start p50 {extra['start_p50_ms']:+.1f} ms, "
          f"p95 {extra['start_p95_ms']:+.1f} ms; total p50 {extra['total_p50_ms']:+.1f} ms")
    print(json.dumps({"runs": args.runs, "uid": os.geteuid(), **{
        f"{m}_{k}": round(v, 2) for m, f in figures.items() for k, v in f.items()}}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
