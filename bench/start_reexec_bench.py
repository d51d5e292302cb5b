"""What taking the secrets out of the environment costs at start: the extra exec.

``aitbc-miner --version`` runs the whole entry path (``host.start``, then the CLI's
imports, then argparse) and exits. Run with no ``AITBC_MINER_*`` variable it execs once;
with one (``AITBC_MINER_MINER__KEY``) it execs, writes the memfd, and execs itself again.
The runs alternate, so a busy machine slows both alike. Prints the machine, a table of
p50/p90 wall times, and as the last line one JSON object with every figure.

    PYTHONPATH=. .venv/bin/python bench/start_reexec_bench.py [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).parent / "aitbc-miner"


def _once(extra: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    env.update(extra)
    started = time.perf_counter()
    subprocess.run([str(EXE), "--version"], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    cases = {"plain": {}, "with a settings variable": {"AITBC_MINER_MINER__KEY": "bench-key"}}
    times: dict[str, list[float]] = {name: [] for name in cases}
    _once({})  # warm the file cache
    for _ in range(args.runs):
        for name, extra in cases.items():
            times[name].append(_once(extra))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    figures: dict[str, float] = {}
    print(f"{'case':<26} {'p50 ms':>8} {'p90 ms':>8}")
    for name, values in times.items():
        p50 = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        figures[f"{name} p50_ms"], figures[f"{name} p90_ms"] = round(p50, 1), round(p90, 1)
        print(f"{name:<26} {p50:8.1f} {p90:8.1f}")
    extra = statistics.median(times["with a settings variable"]) - statistics.median(
        times["plain"])
    figures["re-exec p50_ms"] = round(extra, 1)
    print(f"{'the re-exec (difference)':<26} {extra:8.1f}")
    print(json.dumps({"runs": args.runs, **figures}))


if __name__ == "__main__":
    main()
