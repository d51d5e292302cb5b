"""Prometheus metrics: scraped over loopback, read from the same snapshot the console shows,
plus the histories the engine's hooks feed (job durations, failures, coordinator calls)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Engine
from aitbc_miner.engine.snapshot import Earnings, GpuStatus, GpuView, Money
from aitbc_miner.host.metrics import MetricsServer
from aitbc_miner.host.runtime import Host

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[Callable[..., object]]:
    """The engine hosted with metrics on a free loopback port; yields ``get(path)``."""
    host = Host(engine, drain_grace_s=5.0, metrics_address=("127.0.0.1", 0))
    run = asyncio.create_task(host.run(signals=False))
    try:
        await engine.wait_until(lambda s: s.mode.value != "starting", timeout=20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.metrics.port}") as http:

            async def get(path: str = "/metrics", **headers: str) -> httpx.Response:
                return await http.get(path, headers=headers)

            yield get
    finally:
        engine.stop()
        async with asyncio.timeout(15):
            await run


async def test_metrics_count_jobs_receipts_and_gpus(devnet: Devnet, make_engine) -> None:
    # Given a miner with metrics on a free loopback port that ran three jobs and has a GPU
    for i in range(3):
        await devnet.submit_job({"type": "sha256", "data": str(i)})
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    engine.core.gpu = GpuStatus("ok", gpus=(GpuView(
        index=0, uuid="GPU-1", name="NVIDIA L4", state="ok", memory_used_mb=1024.0,
        memory_total_mb=23034.0, util_gpu_pct=87.0, temperature_c=None),))
    async with serving(engine) as get:
        await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=20)
        await engine.wait_until(lambda s: s.earnings.verified.jobs == 3, timeout=20)
        # When Prometheus scrapes it
        answer = await get()
    # Then the figures are the engine's
    m = _samples(answer.text)
    assert m[("aitbc_miner_jobs_finished_total", (("outcome", "completed"),))] == 3
    assert m[("aitbc_miner_receipts_total", (("state", "counted"),))] == 3
    assert m[("aitbc_miner_link", (("link", "registered"),))] == 1
    assert m[("aitbc_miner_slots", (("kind", "cpu"), ("state", "idle")))] == 2
    assert m[("aitbc_miner_ready", ())] == 1
    verified = float(engine.snapshot().earnings.verified.amount)  # exposition is float
    assert m[("aitbc_miner_earnings_aitbc_total", (("state", "verified"),))] == verified
    gpu = (("index", "0"), ("name", "NVIDIA L4"), ("uuid", "GPU-1"))
    assert m[("aitbc_miner_gpu_utilization_percent", gpu)] == 87.0
    assert m[("aitbc_miner_gpu_memory_used_bytes", gpu)] == 1024 * 1024 * 1024
    assert ("aitbc_miner_gpu_temperature_celsius", gpu) not in m  # N/A is no sample, not 0
    assert any(name == "aitbc_miner_build_info" for name, _ in m)
    # ...and the process and platform collectors are there too
    assert ("process_resident_memory_bytes", ()) in m
    assert any(name == "python_info" for name, _ in m)


async def test_hooks_feed_job_and_coordinator_histories(devnet: Devnet, make_engine) -> None:
    # Given a miner that ran a good job, one that timed out, a malformed one and one of a
    # type it lacks
    await devnet.submit_job({"type": "sha256", "data": "a"})
    await devnet.submit_job({"type": "sleep", "seconds": 30, "timeout_s": 0.2})  # E_TIMEOUT
    await devnet.submit_job({"type": "sleep", "seconds": "soon"})  # E_BADJOB
    await devnet.submit_job({"type": "teleport"})  # E_UNSUPPORTED, an unknown type
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    async with serving(engine) as get:
        await engine.wait_until(lambda s: s.counters.delivered == 4, timeout=20)
        m = _samples((await get()).text)
    # Then the jobs that ran have durations, by type and outcome
    done = (("outcome", "completed"), ("type", "sha256"))
    assert m[("aitbc_miner_job_duration_seconds_count", done)] == 1
    assert m[("aitbc_miner_job_duration_seconds_bucket",
              (("le", "+Inf"), ("outcome", "completed"), ("type", "sha256")))] == 1
    failed = (("outcome", "failed"), ("type", "sleep"))  # the timeout and the malformed one
    assert m[("aitbc_miner_job_duration_seconds_count", failed)] == 2
    assert m[("aitbc_miner_job_duration_seconds_sum", failed)] >= 0.2
    assert all(("type", "teleport") not in labels for _, labels in m)  # no label from a job
    # ...failures are counted by code, every code present from the start
    assert m[("aitbc_miner_job_failures_total", (("code", "E_TIMEOUT"),))] == 1
    assert m[("aitbc_miner_job_failures_total", (("code", "E_BADJOB"),))] == 1
    assert m[("aitbc_miner_job_failures_total", (("code", "E_UNSUPPORTED"),))] == 1
    assert m[("aitbc_miner_job_failures_total", (("code", "E_OOM"),))] == 0
    # ...and every coordinator call by endpoint and status class, and timed by status
    assert m[("aitbc_miner_coordinator_requests_total",
              (("endpoint", "result"), ("status_class", "2xx")))] == 1
    assert m[("aitbc_miner_coordinator_requests_total",
              (("endpoint", "fail"), ("status_class", "2xx")))] == 3
    timed = {dict(labels)["status"] for name, labels in m
             if name == "aitbc_miner_coordinator_request_duration_seconds_count"
             and dict(labels)["endpoint"] == "fail"}
    assert timed == {"200"}


async def test_a_coordinator_that_never_answers_shows_as_errors_and_heartbeat_age(
        make_engine, unused_tcp_port: int) -> None:
    # Given a miner whose coordinator address has nothing listening
    engine = make_engine(f"http://127.0.0.1:{unused_tcp_port}")
    errors = ("aitbc_miner_coordinator_requests_total",
              (("endpoint", "register"), ("status_class", "error")))
    async with serving(engine) as get:
        await engine.wait_until(lambda s: s.connection.link.value == "backing_off", timeout=20)
        m = _samples((await get()).text)
        # Then the failed calls are counted, it is not ready, and the heartbeat age is
        # there before any heartbeat was answered (counted from the start)
        assert m[errors] >= 1
        assert m[("aitbc_miner_ready", ())] == 0
        first = m[("aitbc_miner_heartbeat_age_seconds", ())]
        assert first >= 0
        assert m[("aitbc_miner_heartbeat_interval_seconds", ())] == 5.0
        later = _samples((await get()).text)[("aitbc_miner_heartbeat_age_seconds", ())]
        assert later >= first


@asynccontextmanager
async def listener(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """The metrics listener alone, over an engine that is not running (nothing else
    changes its figures meanwhile)."""
    server = MetricsServer(engine, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield http
    finally:
        await server.stop()


async def test_the_scraper_gets_openmetrics_when_it_asks(make_engine) -> None:
    async with listener(make_engine("http://127.0.0.1:9")) as http:
        # When Prometheus asks for OpenMetrics (as it does by default), gzipped
        om = await http.get("/metrics", headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            "Accept-Encoding": "gzip"})
        # ...or a plain client asks for nothing in particular
        plain = await http.get("/metrics", headers={"Accept-Encoding": "identity"})
    # Then each gets its format, from prometheus_client's own encoders
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.headers.get("Content-Encoding") == "gzip"
    assert om.text.rstrip().endswith("# EOF")
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text


async def test_earnings_counters_never_go_down(make_engine) -> None:
    # Given a miner whose ledger view once showed 5 AITBC verified
    engine = make_engine("http://127.0.0.1:9")
    key = ("aitbc_miner_earnings_aitbc_total", (("state", "verified"),))
    async with listener(engine) as http:
        engine.core.earnings = Earnings(verified=Money(Decimal("5.0"), 2))
        high = _samples((await http.get("/metrics")).text)[key]
        # When the view reads lower (a ledger read that came back short)
        engine.core.earnings = Earnings(verified=Money(Decimal("1.0"), 1))
        low = _samples((await http.get("/metrics")).text)[key]
        engine.core.earnings = Earnings(verified=Money(Decimal("6.5"), 3))
        higher = _samples((await http.get("/metrics")).text)[key]
    # Then the counter holds its high-water mark, and goes up again
    assert (high, low, higher) == (5.0, 5.0, 6.5)
