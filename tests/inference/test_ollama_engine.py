"""The Ollama runner end to end: reference coordinator -> engine (2 GPU slots) -> fake Ollama."""

from __future__ import annotations

import time
from collections.abc import Callable

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import Engine
from aitbc_miner.engine.snapshot import Registered
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.ollama import OllamaRunner
from tests.fakes.fake_ollama import FakeOllama

from .conftest import OLLAMA_MODELS, FakeGpuSampler, reregister_on_change

JOBS = 200


def engine_for(make_engine: Callable[..., Engine], devnet: Devnet, runner: OllamaRunner,
               **kw) -> Engine:
    engine = make_engine(devnet.url, cpu=0, gpu=2, pinned_key=devnet.public_key_id,
                         registry=RunnerRegistry([runner]), **kw)
    reregister_on_change(runner, engine)
    return engine


def failure_text(devnet: Devnet, code: str, message: str) -> str:
    """What a client reads: "<code>: <message>" on 2026-01, the message on 2026-08."""
    return f"{code}: {message}" if devnet.dialect is Dialect.V2026_01 else message


async def test_two_hundred_jobs_across_two_gpus_carry_true_counts_and_timings(
        devnet: Devnet, fake_ollama: FakeOllama, ollama: OllamaRunner,
        gpu_sampler: FakeGpuSampler, make_engine, run_engine) -> None:
    # Given 200 inference jobs (a few tokens each, streamed with a small delay) and a miner
    # with two GPU slots in front of the fake Ollama
    fake_ollama.default.tokens, fake_ollama.default.token_delay_s = 6, 0.002
    fake_ollama.when(prompt_contains="long", tokens=15, token_delay_s=0.002)
    jobs = {}
    for i in range(JOBS):
        prompt = f"job {i}: say something" + (" long" if i % 3 == 0 else "")
        payload = {"type": "inference", "prompt": prompt}
        if i % 2:
            payload["model"] = "qwen2.5:0.5b"
        jobs[(await devnet.submit_job(payload))["job_id"]] = payload
    await ollama.refresh()
    engine = engine_for(make_engine, devnet, ollama)
    started = time.perf_counter()
    run_engine(engine)

    # When every outcome is delivered
    snap = await engine.wait_until(lambda s: s.counters.delivered >= JOBS, timeout=90)
    elapsed = time.perf_counter() - started

    # Then all completed, each result holding the counts the backend reported for it
    assert snap.counters.completed == JOBS and snap.counters.failed == 0, snap.counters
    rows = devnet.jobs
    for job_id, payload in jobs.items():
        row = rows[job_id]
        assert row["state"] == "COMPLETED" and row["result_calls"] == 1, row
        result = row["result"]
        record = fake_ollama.record_for(payload["prompt"])
        assert record is not None and record.completed
        assert result["model"] == payload.get("model", "llama3.2:latest") == record.model
        assert result["output"] == record.output
        assert result["tokens_processed"] == result["completion_tokens"] == record.completion_tokens
        assert result["prompt_tokens"] == record.prompt_tokens
        assert record.completion_tokens == (15 if "long" in payload["prompt"] else 6)
        assert result["backend"] == "ollama" and result["gpu_used"] is True
        assert result["time_to_first_token_s"] > 0 and result["tokens_per_s"] > 0
        assert result["execution_time"] > 0
    # ...one generation per job, never more than two at once, on both GPU slots
    assert len(fake_ollama.records) == JOBS and fake_ollama.max_active <= 2
    assert gpu_sampler.slots == {"gpu:0", "gpu:1"}
    # ...and metrics (in the signed receipts) with the miner's duration and the GPU figures
    receipts = {r["job_id"]: r for r in devnet.receipts}
    assert set(receipts) == set(jobs)
    for receipt in receipts.values():
        metrics = receipt["metadata"]["metrics"]
        assert isinstance(metrics["duration_ms"], int)
        assert metrics["gpu_utilization_peak"] >= metrics["gpu_utilization"] > 0
        assert metrics["memory_peak"] >= 4096
    # ...registered with the models as a capability
    miner = next(iter(devnet.miners.values()))
    assert miner["capabilities"]["models"] == sorted(OLLAMA_MODELS)
    assert miner["capabilities"]["job_types"] == ["chat", "generate", "inference"]
    print(f"{JOBS} inference jobs on {devnet.dialect.value}: {elapsed:.1f}s, "
          f"max {fake_ollama.max_active} streams at once")


async def test_absent_model_fails_with_model_not_found_and_nothing_else_runs(
        devnet: Devnet, fake_ollama: FakeOllama, ollama: OllamaRunner, make_engine,
        run_engine) -> None:
    # Given jobs for a model this miner does not have, and a tag it does not have
    absent = (await devnet.submit_job({"type": "inference", "prompt": "hi", "model": "mistral:7b"}
                                      ))["job_id"]
    other_tag = (await devnet.submit_job({"type": "chat", "model": "llama3.2:1b",
                                          "messages": [{"role": "user", "content": "hi"}]}
                                         ))["job_id"]
    engine = engine_for(make_engine, devnet, ollama)
    run_engine(engine)
    snap = await engine.wait_until(lambda s: s.counters.delivered >= 2, timeout=20)
    # Then both are FAILED with E_MODEL_NOT_FOUND at the coordinator, naming the model
    assert snap.counters.failed == 2 and snap.counters.completed == 0
    assert {o.error_code for o in snap.recent} == {"E_MODEL_NOT_FOUND"}
    for job_id, model in ((absent, "mistral:7b"), (other_tag, "llama3.2:1b")):
        row = devnet.jobs[job_id]
        assert row["state"] == "FAILED" and row["result_calls"] == 0
        expected = failure_text(devnet, "E_MODEL_NOT_FOUND",
                                f"model {model!r} is not installed on this miner's ollama")
        assert row["error"].startswith(expected), row["error"]
    # ...and no other model was asked to generate anything instead
    assert fake_ollama.generation_calls() == 0 and not fake_ollama.records


async def test_backend_down_withdraws_the_capability_until_it_is_back(
        devnet: Devnet, fake_ollama: FakeOllama, ollama: OllamaRunner, make_engine,
        run_engine, miner_at) -> None:
    await ollama.refresh()
    engine = engine_for(make_engine, devnet, ollama)
    events = engine.subscribe()
    run_engine(engine)

    async def next_registration() -> None:
        async for event in events:
            if isinstance(event, Registered):
                return

    await next_registration()
    assert miner_at(devnet)["capabilities"]["models"] == sorted(OLLAMA_MODELS)
    # When Ollama goes down and the refresh sees it, the miner registers again without models
    await fake_ollama.stop()
    assert not await ollama.refresh()
    await next_registration()
    caps = miner_at(devnet)["capabilities"]
    assert "models" not in caps and "inference" not in caps["job_types"]
    assert caps["runners"] == {"ollama": False}
    # ...a job that reaches it anyway fails with E_BACKEND_UNAVAILABLE
    down = (await devnet.submit_job({"type": "inference", "prompt": "while down"}))["job_id"]
    await engine.wait_until(lambda s: s.counters.delivered >= 1, timeout=20)
    row = devnet.jobs[down]
    assert row["state"] == "FAILED"
    assert row["error"].startswith(failure_text(devnet, "E_BACKEND_UNAVAILABLE", "runner 'ollama'"))
    # When it is back, the models are registered again and jobs run
    await fake_ollama.start()
    assert await ollama.refresh()
    await next_registration()
    assert miner_at(devnet)["capabilities"]["models"] == sorted(OLLAMA_MODELS)
    back = (await devnet.submit_job({"type": "inference", "prompt": "back again"},
                                    {"models": ["llama3.2:latest"]}))["job_id"]
    await engine.wait_until(lambda s: s.counters.delivered >= 2, timeout=20)
    assert devnet.jobs[back]["state"] == "COMPLETED"
    events.close()


async def test_cancel_mid_stream_stops_the_backend_request_within_a_second(
        devnet: Devnet, fake_ollama: FakeOllama, ollama: OllamaRunner, make_engine,
        run_engine) -> None:
    fake_ollama.when(prompt_contains="endless", tokens=100_000, token_delay_s=0.01)
    job_id = (await devnet.submit_job({"type": "generate", "prompt": "endless story"}))["job_id"]
    engine = engine_for(make_engine, devnet, ollama)
    run_engine(engine)
    # When the operator cancels while tokens are streaming
    record = await fake_ollama.wait_for(
        lambda: next((r for r in fake_ollama.records if r.tokens_sent >= 5), None), timeout=20)
    await engine.wait_until(lambda s: (s.job(job_id) is not None
                                       and dict(s.job(job_id).progress).get("tokens", 0) > 0),
                            timeout=5)
    canceled_at = time.monotonic()
    assert engine.cancel(job_id)
    # Then Ollama sees the client go away within a second, mid-stream
    await fake_ollama.wait_for(lambda: record.disconnected_at, timeout=1.0)
    assert record.disconnected_at - canceled_at < 1.0
    assert not record.completed and not record.server_stopped
    # ...and the coordinator is told E_CANCELED
    await engine.wait_until(lambda s: s.counters.delivered >= 1, timeout=10)
    assert devnet.jobs[job_id]["state"] == "FAILED"
    assert devnet.jobs[job_id]["error"].startswith(
        failure_text(devnet, "E_CANCELED", "canceled by operator"))


async def test_a_hung_stream_is_ended_by_the_job_timeout(
        devnet: Devnet, fake_ollama: FakeOllama, ollama: OllamaRunner, make_engine,
        run_engine) -> None:
    fake_ollama.when(prompt_contains="stuck", hang_after=2)
    job_id = (await devnet.submit_job({"type": "inference", "prompt": "stuck", "timeout_s": 1}
                                      ))["job_id"]
    engine = engine_for(make_engine, devnet, ollama)
    run_engine(engine)
    snap = await engine.wait_until(lambda s: s.counters.delivered >= 1, timeout=20)
    assert [o.error_code for o in snap.recent] == ["E_TIMEOUT"]
    assert devnet.jobs[job_id]["error"].startswith(
        failure_text(devnet, "E_TIMEOUT", "ran past its 1s limit"))
    record = fake_ollama.records[-1]
    await fake_ollama.wait_for(lambda: record.disconnected_at, timeout=1.0)
    assert record.tokens_sent == 2 and not record.completed
