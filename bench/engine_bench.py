"""Engine benchmarks: pickup latency, throughput and memory for the no-op job.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/engine_bench.py            # full run, ~3 min on 2 cores
    PYTHONPATH=. .venv/bin/python bench/engine_bench.py --quick    # smoke run, ~30 s

Everything talks real loopback HTTP to the reference coordinator (``aitbc_miner.devnet``,
rate limits off). Engine state (journal, job folders) goes to a temporary directory that
is removed at the end. The output is a human table and, as the last line, one JSON
object with every figure. See bench/README.md for what each figure means.

This prints figures; it asserts nothing about speed (the only failures are "the run did
not complete", e.g. a job never started).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import psutil

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.engine import Engine, Link, SlotPool, Tuning
from aitbc_miner.engine.snapshot import JobClaimed, JobFinished, JobStarted, OutcomeDelivered
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.builtin import BuiltinRunner

MINER_KEY = DEFAULT_MINER_KEYS[0]
NOOP = {"type": "noop"}
KINDS = {JobClaimed: "claimed", JobStarted: "started", JobFinished: "finished",
         OutcomeDelivered: "delivered"}
DEFAULTS = {f.name: f.default for f in fields(Tuning) if f.name.startswith("poll_")}


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the table and the JSON line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- small statistics ----------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p95_ms": round(pct(ms, 95), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(sum(ms) / len(ms), 2)}


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "cores_logical": os.cpu_count(),
            "cores_physical": psutil.cpu_count(logical=False),
            "mem_total_mb": psutil.virtual_memory().total >> 20,
            "python": platform.python_version(), "platform": platform.platform()}


def rss_mb(proc: psutil.Process) -> float:
    return round(proc.memory_info().rss / 2**20, 1)


def hwm_mb(pid: int) -> float | None:
    """Peak RSS (VmHWM) of a process, from /proc."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


# --- in-process harness ----------------------------------------------------------------


class PollTimes(Counter):  # type: ignore[type-arg]
    """The devnet's request counter, also keeping the perf_counter time of every poll."""

    def __init__(self) -> None:
        super().__init__()
        self.poll_at: list[float] = []

    def __setitem__(self, key: str, value: int) -> None:
        if key == "poll":
            self.poll_at.append(time.perf_counter())
        super().__setitem__(key, value)


def make_devnet(dialect: Dialect) -> Devnet:
    devnet = Devnet(dialect, rate_limits=False)
    devnet.requests = PollTimes()  # before start(): the app takes this object
    return devnet


class Tracker:
    """Records when each job was claimed/started/finished/delivered (engine clock)."""

    def __init__(self, engine: Engine) -> None:
        self.sub = engine.subscribe(maxlen=10_000_000)
        self.at: dict[str, dict[str, float]] = defaultdict(dict)
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {}
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.sub:
            kind = KINDS.get(type(event))
            if kind is None:
                continue
            self.at[event.job_id][kind] = event.at  # type: ignore[attr-defined]
            self.counts[kind] += 1
            self.last[kind] = event.at
            self._changed.set()

    async def wait(self, job_id: str, kind: str, timeout: float = 60.0) -> float:
        async with asyncio.timeout(timeout):
            while kind not in self.at.get(job_id, {}):
                self._changed.clear()
                await self._changed.wait()
        return self.at[job_id][kind]

    async def wait_count(self, kind: str, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.counts[kind] < n:
                self._changed.clear()
                await self._changed.wait()


class Miner:
    """An Engine (clock = perf_counter, so event times are perf_counter times) in a task."""

    def __init__(self, devnet: Devnet, root: Path, name: str, *, cpu: int, **tuning: Any) -> None:
        self.engine = Engine(
            Tuning(miner_id=f"bench-{name}", coordinator_url=devnet.url,
                   pinned_key=devnet.public_key_id, **tuning),
            miner_key=MINER_KEY,
            journal_path=root / name / "journal.sqlite3",
            workspace_root=root / name / "jobs",
            pool=SlotPool.from_counts(cpu=cpu, gpu=0),
            registry=RunnerRegistry([BuiltinRunner()]),
            seed=7,
            clock=time.perf_counter,
        )
        self.tracker = Tracker(self.engine)
        self.started_at = time.perf_counter()
        self.task = asyncio.get_running_loop().create_task(self.engine.run())

    async def registered(self, timeout: float = 20.0) -> None:
        await self.engine.wait_until(lambda s: s.connection.link is Link.REGISTERED, timeout)

    async def stop(self) -> None:
        self.engine.stop(cancel_running=True)
        async with asyncio.timeout(30):
            await self.task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.tracker.task


# --- 1a. hot pickup latency -------------------------------------------------------------


async def bench_hot(dialect: Dialect, root: Path, jobs: int, slots: int) -> dict[str, Any]:
    """Submit a job the moment the previous one finishes; time POST-return -> JobStarted."""
    async with make_devnet(dialect) as devnet:
        miner = Miner(devnet, root, f"hot-{dialect.value}-{slots}", cpu=slots)
        await miner.registered()
        latency, post, to_claim, claim_to_start = [], [], [], []
        for i in range(jobs + 5):  # the first 5 warm up connections and sqlite
            t0 = time.perf_counter()
            job_id = (await devnet.submit_job(NOOP))["job_id"]
            t1 = time.perf_counter()
            started = await miner.tracker.wait(job_id, "started")
            await miner.tracker.wait(job_id, "finished")
            if i >= 5:
                at = miner.tracker.at[job_id]
                latency.append(started - t1)
                post.append(t1 - t0)
                to_claim.append(at["claimed"] - t1)
                claim_to_start.append(started - at["claimed"])
        polls = devnet.requests["poll"]
        await miner.stop()
    return {"slots": slots, "latency": summary_ms(latency),
            "post_ms_p50": summary_ms(post)["p50_ms"],
            "to_claimed_p50_ms": summary_ms(to_claim)["p50_ms"],
            "claimed_to_started_p50_ms": summary_ms(claim_to_start)["p50_ms"],
            "polls_per_job": round(polls / (jobs + 5), 2)}


# --- 1b. idle pickup latency ------------------------------------------------------------


async def idle_miner(dialect: Dialect, root: Path, name: str, cap: float, samples: int,
                     rng: random.Random, window_s: float, barrier: asyncio.Barrier,
                     out: dict[str, list[float]]) -> None:
    async with make_devnet(dialect) as devnet:
        tuning = {"poll_max_s": cap} if cap != DEFAULTS["poll_max_s"] else {}
        miner = Miner(devnet, root, name, cpu=2, **tuning)
        await miner.registered()
        at_cap = lambda s: s.poll_interval_s >= 0.89 * cap and not s.jobs  # noqa: E731
        for _ in range(samples):
            # Idle until the backoff reaches its cap, then submit at a random phase.
            await miner.engine.wait_until(at_cap, timeout=cap * 4 + 10)
            await asyncio.sleep(rng.uniform(0, cap))
            job_id = (await devnet.submit_job(NOOP))["job_id"]
            t1 = time.perf_counter()
            started = await miner.tracker.wait(job_id, "started", timeout=cap * 3 + 10)
            out["latency"].append(started - t1)
            await miner.tracker.wait(job_id, "finished")
        # Idle load: every miner idles at its cap; count polls over a common window.
        await miner.engine.wait_until(at_cap, timeout=cap * 4 + 10)
        await barrier.wait()
        t0 = time.perf_counter()
        await asyncio.sleep(window_s)
        t1 = time.perf_counter()
        polls = [t for t in devnet.requests.poll_at if t0 <= t < t1]  # type: ignore[attr-defined]
        out["polls"].append(len(polls))
        out["window_s"].append(t1 - t0)
        await barrier.wait()
        await miner.stop()


async def bench_idle(dialect: Dialect, root: Path, cap: float, miners: int, samples: int,
                     seed: int) -> dict[str, Any]:
    """Many independent (devnet, miner) pairs at once, so idle samples overlap in time."""
    out: dict[str, list[float]] = defaultdict(list)
    barrier = asyncio.Barrier(miners)
    window_s = max(2 * cap, 10.0)
    async with asyncio.TaskGroup() as tg:
        for i in range(miners):
            rng = random.Random(seed * 1000 + i)
            tg.create_task(idle_miner(dialect, root, f"idle-{dialect.value}-{cap:g}-{i}", cap,
                                      samples, rng, window_s, barrier, out))
    minutes = sum(out["window_s"]) / 60
    return {"cap_s": cap, "poll_min_s": DEFAULTS["poll_min_s"],
            "default": cap == DEFAULTS["poll_max_s"], "latency": summary_ms(out["latency"]),
            "polls_per_min": round(sum(out["polls"]) / minutes, 1),
            "polls_per_min_expected": round(60 / cap, 1)}


# --- 2. throughput ---------------------------------------------------------------------


async def bench_throughput(dialect: Dialect, root: Path, jobs: int, slots: int,
                           max_s: float) -> dict[str, Any]:
    """``jobs`` no-op jobs queued first; time engine start -> last OutcomeDelivered.

    Time-boxed: if not all are delivered within ``max_s``, the rate is taken over those
    that were (``complete`` is then false).
    """
    async with make_devnet(dialect) as devnet:
        for _ in range(jobs):
            await devnet.submit_job(NOOP)
        polls_before = devnet.requests["poll"]
        miner = Miner(devnet, root, f"tp-{dialect.value}-{slots}", cpu=slots)
        started = miner.started_at
        with contextlib.suppress(TimeoutError):
            await miner.tracker.wait_count("delivered", jobs, timeout=max_s)
        delivered = miner.tracker.counts["delivered"]
        last = miner.tracker.last["delivered"]
        first_claim = min(a["claimed"] for a in miner.tracker.at.values())
        polls = devnet.requests["poll"] - polls_before
        dropped = miner.tracker.sub.dropped
        await miner.stop()
    elapsed = last - started
    return {"slots": slots, "jobs": jobs, "delivered": delivered, "complete": delivered == jobs,
            "seconds": round(elapsed, 3), "jobs_per_s": round(delivered / elapsed, 1),
            "jobs_per_s_from_first_claim": round(delivered / (last - first_claim), 1),
            "polls_per_job": round(polls / max(1, miner.tracker.counts["claimed"]), 2),
            "events_dropped": dropped}


# --- 3. memory of the real agent (subprocesses) ----------------------------------------


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path,
           pipe_stdout: bool = False) -> subprocess.Popen[str]:
    """Start a child; its output goes to ``log_path`` (stdout piped if asked: the ready line)."""
    with log_path.open("w") as log_file:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if pipe_stdout else log_file,
                                stderr=log_file, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen[str], timeout: float = 20.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


async def bench_agent_rss(dialect: Dialect, root: Path, jobs: int, slots: int) -> dict[str, Any]:
    """``aitbc-miner --headless`` against ``python -m aitbc_miner.devnet``; psutil on its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    devnet = _spawn([sys.executable, "-m", "aitbc_miner.devnet", "--port", "0",
                     "--no-rate-limits", "--dialect", dialect.value], env, root / "devnet.log",
                    pipe_stdout=True)
    miner: subprocess.Popen[str] | None = None
    try:
        assert devnet.stdout is not None
        ready = json.loads(await asyncio.to_thread(devnet.stdout.readline))
        url = ready["url"]
        miner_env = dict(env, AITBC_MINER_COORDINATOR__URL=url, AITBC_MINER_MINER__KEY=MINER_KEY,
                         AITBC_MINER_MINER__ID="bench-agent",
                         AITBC_MINER_COORDINATOR__PUBLIC_KEY=ready["public_key_id"],
                         AITBC_MINER_PATHS__STATE_DIR=str(root / "agent" / "state"),
                         AITBC_MINER_PATHS__DATA_DIR=str(root / "agent" / "data"),
                         AITBC_MINER_SLOTS__CPU=str(slots))
        miner = _spawn([sys.executable, "-m", "aitbc_miner", "--headless"], miner_env,
                       root / "agent.log")
        proc = psutil.Process(miner.pid)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            async def state() -> dict[str, Any]:
                return (await http.get("/_devnet/state")).json()  # type: ignore[no-any-return]

            async with asyncio.timeout(30):
                while not (await state())["miners"]:  # 2026-01 names the miner by its key
                    if miner.poll() is not None:
                        raise RuntimeError(f"agent exited {miner.returncode}; see agent.log")
                    await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)  # let it settle into idle polling
            idle = rss_mb(proc)
            headers = ready["client_headers"]
            body = {"payload": NOOP, "constraints": {}, "ttl_seconds": 900}
            for _ in range(jobs):
                (await http.post("/v1/jobs", json=body, headers=headers)).raise_for_status()
            async with asyncio.timeout(300):
                while (await state())["job_states"].get("COMPLETED", 0) < jobs:
                    await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)  # outbox and receipts settle
            after = rss_mb(proc)
            peak = hwm_mb(miner.pid)
            uss = round(proc.memory_full_info().uss / 2**20, 1)
            devnet_rss = rss_mb(psutil.Process(devnet.pid))
        code = _stop(miner)
        return {"slots": slots, "jobs": jobs, "agent_rss_idle_mb": idle,
                "agent_rss_after_jobs_mb": after, "agent_rss_peak_mb": peak,
                "agent_uss_after_jobs_mb": uss, "devnet_rss_mb": devnet_rss,
                "agent_exit_code": code}
    finally:
        if miner is not None:
            _stop(miner)
        _stop(devnet)


# --- driver --------------------------------------------------------------------------------


def table(rows: Iterable[tuple[str, ...]]) -> str:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
                     for r in rows)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"aitbc-miner engine bench  |  {m['cpu_model']}, {m['cores_logical']} logical cores, "
             f"Python {m['python']}  |  no-op jobs, in-process devnet over loopback HTTP"]
    for dialect, d in result["dialects"].items():
        lines.append(f"\n== dialect {dialect} (rate limits off) ==")
        rows = [("pickup latency", "n", "p50 ms", "p95 ms", "max ms", "note")]
        for h in d.get("hot", []):
            lat = h["latency"]
            rows.append((f"hot, {h['slots']} slot(s), default tuning", str(lat["n"]),
                         f"{lat['p50_ms']:.1f}", f"{lat['p95_ms']:.1f}", f"{lat['max_ms']:.1f}",
                         f"POST {h['post_ms_p50']:.1f} ms, claim->start "
                         f"{h['claimed_to_started_p50_ms']:.1f} ms, "
                         f"{h['polls_per_job']} polls/job"))
        for i in d.get("idle", []):
            lat = i["latency"]
            label = f"idle, cap {i['cap_s']:g} s" + (" (Tuning default)" if i["default"] else "")
            rows.append((label, str(lat["n"]), f"{lat['p50_ms']:.0f}", f"{lat['p95_ms']:.0f}",
                         f"{lat['max_ms']:.0f}",
                         f"idle load {i['polls_per_min']:.1f} polls/min "
                         f"(60/cap = {i['polls_per_min_expected']:g})"))
        lines.append(table(rows))
        if d.get("throughput"):
            rows = [("throughput", "delivered", "seconds", "jobs/s", "from 1st claim",
                     "polls/job")]
            for t in d["throughput"]:
                done = f"{t['delivered']}/{t['jobs']}" + ("" if t["complete"] else " (time box)")
                rows.append((f"{t['slots']} slot(s), default tuning", done, f"{t['seconds']:.2f}",
                             f"{t['jobs_per_s']:.1f}", f"{t['jobs_per_s_from_first_claim']:.1f}",
                             f"{t['polls_per_job']}"))
            lines.append("")
            lines.append(table(rows))
    mem = result["memory"]
    lines.append("\n== memory ==")
    lines.append(f"bench process RSS (miner engines + devnets + bench, in-process): "
                 f"{mem['inprocess_rss_start_mb']} MB at start, {mem['inprocess_rss_end_mb']} MB "
                 f"at end (peak {mem['inprocess_rss_peak_mb']} MB)")
    agent = mem.get("agent")
    if agent:
        lines.append(f"agent subprocess (aitbc-miner --headless, {agent['slots']} slots): "
                     f"RSS {agent['agent_rss_idle_mb']} MB idle, {agent['agent_rss_after_jobs_mb']}"
                     f" MB after {agent['jobs']} jobs (peak {agent['agent_rss_peak_mb']} MB, USS "
                     f"{agent['agent_uss_after_jobs_mb']} MB); devnet subprocess "
                     f"{agent['devnet_rss_mb']} MB")
    lines.append(f"\ntotal wall time {result['wall_s']:.0f} s")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    me = psutil.Process()
    start_rss = rss_mb(me)
    t_start = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "args": vars(args), "dialects": {}}
    with tempfile.TemporaryDirectory(prefix="aitbc-bench-") as tmp:
        root = Path(tmp)
        for name in args.dialects:
            dialect = Dialect(name)
            d: dict[str, Any] = {"hot": [], "idle": [], "throughput": []}
            result["dialects"][name] = d
            for slots in args.hot_slots:
                log(f"{name}: hot pickup, {args.hot_jobs} jobs, {slots} slot(s)")
                d["hot"].append(await bench_hot(dialect, root, args.hot_jobs, slots))
            for cap in args.idle_caps:
                log(f"{name}: idle pickup, cap {cap:g} s, {args.idle_miners} miners x "
                    f"{args.idle_samples} samples")
                d["idle"].append(await bench_idle(dialect, root, cap, args.idle_miners,
                                                  args.idle_samples, args.seed))
            for slots in args.tp_slots:
                log(f"{name}: throughput, {args.tp_jobs} jobs, {slots} slot(s)")
                d["throughput"].append(await bench_throughput(dialect, root, args.tp_jobs, slots,
                                                              args.tp_max_s))
        end_rss = rss_mb(me)
        result["memory"] = {"inprocess_rss_start_mb": start_rss, "inprocess_rss_end_mb": end_rss,
                            "inprocess_rss_peak_mb": hwm_mb(me.pid)}
        if args.agent_jobs > 0:
            log(f"agent subprocess RSS, {args.agent_jobs} jobs")
            result["memory"]["agent"] = await bench_agent_rss(
                Dialect(args.dialects[0]), root, args.agent_jobs, 2)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    floats = lambda s: [float(x) for x in s.split(",") if x]  # noqa: E731
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dialects", type=lambda s: s.split(","), default=["2026-01"],
                   help="comma list: 2026-01,2026-08 (default 2026-01)")
    p.add_argument("--hot-jobs", type=int, default=100,
                   help="hot pickup samples per slot count (100)")
    p.add_argument("--hot-slots", type=ints, default=[1, 2], help="slot counts for hot (1,2)")
    p.add_argument("--idle-caps", type=floats,
                   default=sorted({1.0, 5.0, DEFAULTS["poll_max_s"]}),
                   help="poll.max_interval_s values for idle, in s (1,5 and Tuning's default, "
                   f"now {DEFAULTS['poll_max_s']:g})")
    p.add_argument("--idle-miners", type=int, default=24, help="miners idling in parallel (24)")
    p.add_argument("--idle-samples", type=int, default=2, help="idle samples per miner (2)")
    p.add_argument("--tp-jobs", type=int, default=1000, help="throughput jobs (1000)")
    p.add_argument("--tp-max-s", type=float, default=20.0,
                   help="time box per throughput run in s (20); the rate is then over what was"
                   " delivered")
    p.add_argument("--tp-slots", type=ints, default=[1, 8], help="slot counts (1,8)")
    p.add_argument("--agent-jobs", type=int, default=100,
                   help="jobs through the agent subprocess for RSS (100; 0 skips it)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    if p.parse_known_args(argv)[0].quick:  # smaller defaults; explicit flags still win
        p.set_defaults(hot_jobs=20, idle_miners=4, idle_samples=1, tp_jobs=100, agent_jobs=50)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    print(report(result))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
