"""GPU telemetry benchmark: the cost of one sample per GPU, with 8 fake GPUs.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/gpu_sample_bench.py            # ~2 s on 2 cores
    PYTHONPATH=. .venv/bin/python bench/gpu_sample_bench.py --quick    # smoke run

NVML is the scriptable fake of the tests (``tests/fakes/fake_pynvml.py``), so this
measures our side of a sample (the choke point's error mapping, unit conversion, frozen
samples, history and snapshot building), not the driver: a real ``nvmlDeviceGet*`` call
adds its own cost per call (6 calls per GPU per sample; processes every 2nd sample).

Figures (microseconds, per GPU, i.e. one whole-machine sample divided by 8):
  read      ``Nvml.read_all`` in this thread (what the worker thread spends)
  read+proc the same, reading process lists too
  sample    ``Sampler.sample_once`` end to end on the loop (thread hop, fold, publish)
The last line is one JSON object with every figure. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aitbc_miner.gpu import Nvml, Sampler  # noqa: E402
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml  # noqa: E402

GPUS = 8


def fake_machine() -> FakeNvml:
    gpus = [FakeGpu(name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
                    memory_used_mib=1000 + 100 * i, util_gpu=10 * i, util_mem=5 * i,
                    processes={1000 + i: 2048, 2000 + i: 512}) for i in range(GPUS)]
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


async def bench_sampler(nvml: Nvml, rounds: int) -> dict[str, float]:
    sampler = Sampler(nvml, history=300)
    for job in range(GPUS):
        sampler.track_job(f"job-{job}", nvml.devices[job].uuid, pids=[1000 + job])
    await sampler.sample_once()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await sampler.sample_once()
        times.append((time.perf_counter() - started) / GPUS)
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args()
    rounds = 300 if args.quick else 3000
    sys.modules["pynvml"] = fake_machine()
    nvml = Nvml()
    nvml.init()
    assert len(nvml.devices) == GPUS
    for _ in range(50):  # warm up
        nvml.read_all(0.0)
    results = {
        "read": bench_read(nvml, rounds, processes=False),
        "read+proc": bench_read(nvml, rounds, processes=True),
        "sample": asyncio.run(bench_sampler(nvml, rounds)),
    }
    print(f"GPU sample cost per GPU, {GPUS} fake GPUs, {rounds} samples each "
          f"(Python {platform.python_version()}, {platform.machine()})")
    print(f"{'figure':<10} {'mean us':>9} {'p50 us':>9} {'p95 us':>9} {'max us':>9}")
    for name, r in results.items():
        print(f"{name:<10} {r['mean_us']:>9.1f} {r['p50_us']:>9.1f} {r['p95_us']:>9.1f} "
              f"{r['max_us']:>9.1f}")
    print(json.dumps({"gpus": GPUS, "rounds": rounds, **results}))


if __name__ == "__main__":
    main()
