"""The cost of keeping earnings current: a full recompute of the ledger against the
engine's incremental update (one new receipt), at growing journal sizes.

    PYTHONPATH=. .venv/bin/python bench/earnings_bench.py [--sizes 1000,10000,100000]

The journal is a real one (the journal's schema, WAL), filled with SQL for speed: each
job claimed, run on a GPU or CPU slot, staged and delivered, with its receipt. Prints a
table, then one JSON line. No assertion on timing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from aitbc_miner import ledger
from aitbc_miner.journal import SCHEMA

NOW = time.time()


def fill(path: Path, n: int, start: int = 0) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        for i in range(start, start + n):
            at = NOW - (n - i) * 2.0
            job = f"job{i:08d}"
            slot = ("gpu:0/0", "gpu:1/0", "cpu:0")[i % 3]
            payload = json.dumps({"type": "inference", "model": ("llama3.2", "mistral")[i % 2]})
            failed = i % 17 == 0
            conn.execute(
                "INSERT INTO jobs(job_id, state, job_type, payload, constraints, slot, outcome,"
                " error_code, claimed_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (job, "delivered", "inference", payload, "{}", slot,
                 "failed" if failed else "completed", "E_TIMEOUT" if failed else None, at, at))
            for state, detail in (("claimed", ""), ("running", slot),
                                  ("staged", "failed E_TIMEOUT" if failed else "completed"),
                                  ("delivered", "")):
                conn.execute("INSERT INTO transitions(job_id, at, state, detail) VALUES (?,?,?,?)",
                             (job, at, state, detail))
            if not failed:
                conn.execute(
                    "INSERT INTO receipts(receipt_id, job_id, received_at, units, price, verdict,"
                    " counted, duplicate, body) VALUES (?,?,?,?,?,?,?,?,?)",
                    (f"r{i}", job, at + 1, 1.0, 0.0123, "valid_pinned", 1, 0, "{}"))


def update(book: ledger.Book, path: Path) -> float:
    """Milliseconds the engine's update takes: read the new rows, build the view."""
    t = time.perf_counter()
    with ledger.open_readonly(path) as conn:
        book.read_new(conn)
    book.earnings(NOW)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'jobs':>8}  {'full recompute ms':>18}  {'incremental ms':>15}")
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"j{n}.sqlite3"
            fill(path, n)
            fulls = []
            for _ in range(3):
                t = time.perf_counter()
                with ledger.open_readonly(path) as conn:
                    ledger.summarize(conn, NOW)
                fulls.append((time.perf_counter() - t) * 1000)
            book = ledger.Book()
            update(book, path)
            steps = []
            for k in range(5):
                fill(path, 1, start=n + k)  # one more job and its receipt
                steps.append(update(book, path))
            full, incremental = statistics.median(fulls), statistics.median(steps)
            print(f"{n:>8,}  {full:>18.1f}  {incremental:>15.2f}")
            figures.append({"jobs": n, "full_ms": round(full, 2),
                            "incremental_ms": round(incremental, 3)})
    print(json.dumps({"earnings_update": figures}))


if __name__ == "__main__":
    main()
