"""GPU telemetry benchmark: the cost of one sample per GPU, with 8 fake GPUs.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/gpu_sample_bench.py            # ~2 s on 2 cores
    PYTHONPATH=. .venv/bin/python bench/gpu_sample_bench.py --quick    # smoke run

NVML is the scriptable fake of the tests (``tests/fakes/fake_pynvml.py``), so this
measures our side of a sample (the choke point's error mapping, unit conversion, frozen
samples, history and snapshot building), not the driver: a real ``nvmlDeviceGet*`` call
adds its own cost per call (5 calls per GPU per sample, plus 2 process lists, compute and
graphics, every 2nd sample). Each GPU holds two real processes (``sleep``, started
here), so naming them with psutil reads a real ``/proc``.

Figures (microseconds, per GPU, i.e. one whole-machine sample divided by 8):
  read        ``Nvml.read_all`` in this thread (what the worker thread spends)
  read+proc   the same, reading both process lists too
  sample      ``Sampler.sample_once`` end to end (thread hop, fold, publish), the
              processes read every 2nd sample (the default)
  sample+proc the same with process lists, psutil naming and roles on every sample
  on-loop     of ``sample+proc``, the part that runs on the event loop (folding into
              the history rings, process roles, the frozen snapshot)
  name-cold   psutil naming of a GPU's two processes never seen before (a new PID costs
              this once; the cache makes later samples free)
The last line is one JSON object with every figure. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aitbc_miner.gpu import Nvml, Sampler  # noqa: E402
from aitbc_miner.gpu.processes import ProcessDirectory  # noqa: E402
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml  # noqa: E402

GPUS = 8


def fake_machine(pids: list[int]) -> FakeNvml:
    """8 GPUs, each with a compute process (its job's) and a graphics one (a stranger's)."""
    gpus = [FakeGpu(name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
                    memory_used_mib=1000 + 100 * i, util_gpu=10 * i, util_mem=5 * i,
                    processes={pids[2 * i]: 2048}, graphics={pids[2 * i + 1]: 512})
            for i in range(GPUS)]
    return FakeNvml(gpus)


def summary(per_gpu_s: list[float]) -> dict[str, float]:
    us = sorted(v * 1e6 for v in per_gpu_s)
    return {"mean_us": round(statistics.fmean(us), 2),
            "p50_us": round(us[len(us) // 2], 2),
            "p95_us": round(us[min(len(us) - 1, int(len(us) * 0.95))], 2),
            "max_us": round(us[-1], 2), "n": len(us)}


def bench_read(nvml: Nvml, rounds: int, processes: bool) -> dict[str, float]:
    previous = {s.index: s for s in nvml.read_all(0.0)}
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        nvml.read_all(float(i), processes=processes, previous=previous)
        times.append((time.perf_counter() - started) / GPUS)
    return summary(times)


async def bench_sampler(nvml: Nvml, rounds: int, pids: list[int], process_every: int,
                        on_loop: list[float] | None = None) -> dict[str, float]:
    clock = iter(range(10**9))  # one sample per second of simulated time: rings fill up
    sampler = Sampler(nvml, process_every=process_every, clock=lambda: float(next(clock)))
    for job in range(GPUS):
        sampler.track_job(f"job-{job}", nvml.devices[job].uuid, pids=[pids[2 * job]])
    if on_loop is not None:
        publish = sampler._publish

        def timed(*args: object) -> object:
            started = time.perf_counter()
            try:
                return publish(*args)  # type: ignore[arg-type]
            finally:
                on_loop.append((time.perf_counter() - started) / GPUS)

        sampler._publish = timed  # type: ignore[method-assign]
    await sampler.sample_once()
    if on_loop is not None:
        on_loop.clear()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await sampler.sample_once()
        times.append((time.perf_counter() - started) / GPUS)
    return summary(times)


def bench_naming(pids: list[int], rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        directory = ProcessDirectory()  # nothing cached: every PID is read from /proc
        started = time.perf_counter()
        directory.resolve(pids)
        times.append((time.perf_counter() - started) / GPUS)
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args()
    rounds = 300 if args.quick else 3000
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(2 * GPUS)]
    pids = [p.pid for p in sleepers]
    try:
        sys.modules["pynvml"] = fake_machine(pids)
        nvml = Nvml()
        nvml.init()
        assert len(nvml.devices) == GPUS
        for _ in range(50):  # warm up
            nvml.read_all(0.0)
        on_loop: list[float] = []
        results = {
            "read": bench_read(nvml, rounds, processes=False),
            "read+proc": bench_read(nvml, rounds, processes=True),
            "sample": asyncio.run(bench_sampler(nvml, rounds, pids, 2)),
            "sample+proc": asyncio.run(bench_sampler(nvml, rounds, pids, 1, on_loop)),
        }
        results["on-loop"] = summary(on_loop)
        results["name-cold"] = bench_naming(pids, max(30, rounds // 10))
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    print(f"GPU sample cost per GPU, {GPUS} fake GPUs, {rounds} samples each "
          f"(Python {platform.python_version()}, {platform.machine()})")
    print(f"{'figure':<12} {'mean us':>9} {'p50 us':>9} {'p95 us':>9} {'max us':>9}")
    for name, r in results.items():
        print(f"{name:<12} {r['mean_us']:>9.1f} {r['p50_us']:>9.1f} {r['p95_us']:>9.1f} "
              f"{r['max_us']:>9.1f}")
    print(json.dumps({"gpus": GPUS, "rounds": rounds, **results}))


if __name__ == "__main__":
    main()
