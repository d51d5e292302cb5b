"""Prometheus metrics: scraped over loopback, read from the same snapshot the console shows."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine.snapshot import GpuStatus, GpuView
from aitbc_miner.host.runtime import Host


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_jobs_receipts_and_gpus(devnet: Devnet, make_engine) -> None:
    # Given a miner with metrics on a free loopback port that ran three jobs and has a GPU
    for i in range(3):
        await devnet.submit_job({"type": "sha256", "data": str(i)})
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    engine.core.gpu = GpuStatus("ok", gpus=(GpuView(
        index=0, uuid="GPU-1", name="NVIDIA L4", state="ok", memory_used_mb=1024.0,
        memory_total_mb=23034.0, util_gpu_pct=87.0, temperature_c=None),))
    host = Host(engine, drain_grace_s=5.0, metrics_address=("127.0.0.1", 0))
    run = asyncio.create_task(host.run(signals=False))
    try:
        await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=20)
        # When Prometheus scrapes it
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{host.metrics.port}/metrics")
    finally:
        engine.stop()
        async with asyncio.timeout(15):
            await run
    # Then the figures are the engine's
    m = _samples(answer.text)
    assert m[("aitbc_miner_jobs_finished_total", (("outcome", "completed"),))] == 3
    assert m[("aitbc_miner_receipts_total", (("state", "counted"),))] == 3
    assert m[("aitbc_miner_link", (("link", "registered"),))] == 1
    assert m[("aitbc_miner_slots", (("kind", "cpu"), ("state", "idle")))] == 2
    gpu = (("index", "0"), ("name", "NVIDIA L4"), ("uuid", "GPU-1"))
    assert m[("aitbc_miner_gpu_utilization_percent", gpu)] == 87.0
    assert m[("aitbc_miner_gpu_memory_used_bytes", gpu)] == 1024 * 1024 * 1024
    assert ("aitbc_miner_gpu_temperature_celsius", gpu) not in m  # N/A is no sample, not 0
    assert any(name == "aitbc_miner_build_info" for name, _ in m)
