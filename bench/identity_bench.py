"""What signing a result costs the rig: a file key against a SoftHSM2 token key.

Run from the repository root (SoftHSM2: ``apt-get install softhsm2``)::

    PYTHONPATH=. .venv/bin/python bench/identity_bench.py               # 2000 results per key
    PYTHONPATH=. .venv/bin/python bench/identity_bench.py --results 300 # quicker

For each key it measures ``ResultSigner.sign_blocking``: what the engine does per result
(SHA-256 of the result's canonical JSON, the signed block's canonical JSON, the Ed25519
signature), with a result shaped like an inference answer (about 1 KB of output text).
The token key is generated inside a token this script initialises in a temporary
SOFTHSM2_CONF folder, over one session kept open, as the engine uses it; the engine
adds a hop to a worker thread (``asyncio.to_thread``) for a token key, measured
separately as ``token+thread``. Figures are p50, p95 and mean in microseconds. The last
line is one JSON object with every figure. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aitbc_miner.config.model import TokenSettings
from aitbc_miner.identity.rigkey import FileRigKey, RigKey, TokenRigKey
from aitbc_miner.identity.signed_result import ResultSigner

MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"),
           Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
PIN = "bench-pin-2718"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    return {"cpu_model": model, "cores_logical": os.cpu_count(),
            "python": platform.python_version()}


def _result(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    result = {"status": "completed", "output": f"answer {i}: " + "lorem ipsum " * 85,
              "model": "llama3.2:latest", "tokens_processed": 240 + i % 7,
              "execution_time": 1.234, "gpu_used": True, "backend": "ollama"}
    metrics = {"gpu_utilization": 87.5, "memory_used": 5120, "memory_peak": 6144,
               "duration_ms": 1234 + i}
    return result, metrics


def _time(call: Callable[[int], object], runs: int) -> list[float]:
    for i in range(min(50, runs)):  # warm up
        call(i)
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def _figures(samples: list[float]) -> dict[str, float]:
    return {"p50_us": round(_pct(samples, 0.50), 1), "p95_us": round(_pct(samples, 0.95), 1),
            "mean_us": round(statistics.fmean(samples), 1), "n": len(samples)}


def _token(folder: Path) -> TokenSettings:
    module = next((m for m in MODULES if m.is_file()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        sys.exit("SoftHSM2 is not installed: apt-get install softhsm2")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n", encoding="utf-8")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                    "--pin", PIN, "--so-pin", PIN], check=True, capture_output=True)
    pin_file = folder / "pin"
    pin_file.write_text(PIN, encoding="utf-8")
    pin_file.chmod(0o600)
    return TokenSettings(module=module, token_label="bench", pin_file=pin_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=2000, help="results signed per key")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keys: dict[str, RigKey] = {"file": FileRigKey.create(folder / "identity.key"),
                                   "token": TokenRigKey.create(_token(folder))}
        inputs = [_result(i) for i in range(args.results)]
        try:
            for name, key in keys.items():
                signer = ResultSigner(key, "bench-rig")
                print(f"signing {args.results} results with the {name} key ...",
                      file=sys.stderr)
                figures[name] = _figures(_time(
                    lambda i, s=signer: s.sign_blocking(f"job{i}", *inputs[i]), args.results))
            token_signer = ResultSigner(keys["token"], "bench-rig")

            async def threaded() -> list[float]:
                samples = []
                for i in range(args.results):
                    t0 = time.perf_counter()
                    await token_signer.sign(f"job{i}", *inputs[i])
                    samples.append((time.perf_counter() - t0) * 1e6)
                return samples

            figures["token+thread"] = _figures(asyncio.run(threaded()))
        finally:
            for key in keys.values():
                key.close()
    machine = _machine()
    print(f"aitbc-miner identity bench  |  {machine['cpu_model']}, {machine['cores_logical']} "
          f"logical cores, Python {machine['python']}")
    print(f"{'key':<14}{'p50 µs':>10}{'p95 µs':>10}{'mean µs':>10}{'n':>8}")
    for name, f in figures.items():
        print(f"{name:<14}{f['p50_us']:>10}{f['p95_us']:>10}{f['mean_us']:>10}{f['n']:>8}")
    print(json.dumps({"machine": machine, "results": args.results, "figures": figures}))


if __name__ == "__main__":
    main()
