"""The OpenAI-compatible runner against the fake server: SSE chat and completions."""

from __future__ import annotations

import asyncio
import time

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.devnet import Devnet
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.base import JobFailed
from aitbc_miner.runners.openai_compat import OpenAICompatRunner
from tests.fakes.fake_ollama import count_prompt_tokens
from tests.fakes.fake_openai import FakeOpenAI

from .conftest import OPENAI_MODELS, reregister_on_change

MODEL = OPENAI_MODELS[0]


async def test_models_from_v1_models(openai: OpenAICompatRunner) -> None:
    assert await openai.refresh()
    assert openai.capabilities() == {"models": sorted(OPENAI_MODELS)}


async def test_chat_streams_sse_with_true_usage(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    fake_openai.default.tokens, fake_openai.default.first_token_delay_s = 9, 0.03
    messages = [{"role": "user", "content": "what is a GPU"}]
    progress: list = []
    out = await openai.run({"type": "chat", "messages": messages, "system_prompt": "be brief",
                            "temperature": 0.2, "max_tokens": 50}, make_ctx(progress=progress))
    record = fake_openai.records[-1]
    assert record.path == "/v1/chat/completions"
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.body["messages"] == [{"role": "system", "content": "be brief"}, *messages]
    assert record.body["temperature"] == 0.2 and record.body["max_tokens"] == 50
    r = out.result
    assert r["backend"] == "openai" and r["model"] == MODEL and r["output"] == record.output
    assert r["completion_tokens"] == r["tokens_processed"] == record.completion_tokens == 9
    assert r["prompt_tokens"] == record.prompt_tokens
    assert record.prompt_tokens == count_prompt_tokens("be brief\nwhat is a GPU")
    assert r["token_counts"] == "backend" and r["finish_reason"] == "stop"
    assert r["time_to_first_token_s"] >= 0.03 and r["tokens_per_s"] > 0 and r["gpu_used"] is True
    assert "gpu_utilization" in out.metrics and progress[-1]["tokens"] == 9


async def test_generate_on_the_chat_endpoint_by_default(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    out = await openai.run({"type": "generate", "prompt": "a poem", "system_prompt": "rhyme",
                            "max_tokens": 3}, make_ctx())
    record = fake_openai.records[-1]
    assert record.path == "/v1/chat/completions"
    assert record.body["messages"] == [{"role": "system", "content": "rhyme"},
                                       {"role": "user", "content": "a poem"}]
    assert out.result["completion_tokens"] == 3 and out.result["finish_reason"] == "length"


async def test_completions_endpoint_streams_text(fake_openai: FakeOpenAI, make_ctx) -> None:
    runner = OpenAICompatRunner(fake_openai.url + "/v1", prompt_endpoint="completions",
                                default_model=OPENAI_MODELS[1])
    try:
        out = await runner.run({"type": "generate", "prompt": "once upon a time",
                                "system_prompt": "story", "temperature": 1.0, "max_tokens": 5},
                               make_ctx())
    finally:
        await runner.aclose()
    record = fake_openai.records[-1]
    assert record.path == "/v1/completions" and record.body["prompt"] == "story\n\nonce upon a time"
    assert record.body["max_tokens"] == 5 and record.body["temperature"] == 1.0
    assert out.result["model"] == OPENAI_MODELS[1] and out.result["output"] == record.output
    assert out.result["completion_tokens"] == 5 and out.result["token_counts"] == "backend"


async def test_a_server_without_usage_gets_estimated_counts(make_ctx) -> None:
    async with FakeOpenAI([MODEL], send_usage=False) as fake:
        runner = OpenAICompatRunner(fake.url, default_model=MODEL)
        try:
            out = await runner.run({"type": "inference", "prompt": "hello"}, make_ctx())
        finally:
            await runner.aclose()
    assert out.result["token_counts"] == "estimated"
    assert out.result["completion_tokens"] == 8 and out.result["prompt_tokens"] is None


async def test_unknown_model_is_model_not_found_and_never_sent(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    for model in ("llama3.2:latest", "meta-llama/Llama-3.2-3B"):  # exact ids only
        with pytest.raises(JobFailed) as failed:
            await openai.run({"type": "inference", "prompt": "x", "model": model}, make_ctx())
        assert failed.value.code is ErrorCode.E_MODEL_NOT_FOUND
        assert repr(model) in failed.value.message
    assert fake_openai.generation_calls() == 0


async def test_model_removed_since_refresh_is_a_404_model_not_found(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    await openai.refresh()
    fake_openai.models.remove(MODEL)
    with pytest.raises(JobFailed) as failed:
        await openai.run({"type": "inference", "prompt": "x"}, make_ctx())
    assert failed.value.code is ErrorCode.E_MODEL_NOT_FOUND
    assert "does not exist" in failed.value.message


async def test_api_key_is_sent_and_a_refusal_is_backend_unavailable(make_ctx) -> None:
    async with FakeOpenAI([MODEL], api_key="sk-local") as fake:
        good = OpenAICompatRunner(fake.url, api_key="sk-local", default_model=MODEL)
        bad = OpenAICompatRunner(fake.url, api_key="wrong", default_model=MODEL)
        try:
            assert (await good.run({"type": "inference", "prompt": "x"}, make_ctx())).result
            assert not await bad.refresh() and "401" in (bad.last_error or "")
            assert "wrong" not in repr(bad)
        finally:
            await good.aclose()
            await bad.aclose()


async def test_an_error_event_mid_stream_fails_the_job(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    fake_openai.when(prompt_contains="boom", error_after=2)
    fake_openai.when(prompt_contains="vram", error_after=1, error_message="CUDA out of memory")
    with pytest.raises(JobFailed) as failed:
        await openai.run({"type": "inference", "prompt": "boom"}, make_ctx())
    assert failed.value.code is ErrorCode.E_BACKEND_UNAVAILABLE
    with pytest.raises(JobFailed) as failed:
        await openai.run({"type": "inference", "prompt": "vram"}, make_ctx())
    assert failed.value.code is ErrorCode.E_OOM


async def test_down_then_back(openai: OpenAICompatRunner, fake_openai: FakeOpenAI,
                              make_ctx) -> None:
    assert await openai.refresh()
    await fake_openai.stop()
    with pytest.raises(JobFailed) as failed:
        await openai.run({"type": "inference", "prompt": "x"}, make_ctx())
    assert failed.value.code is ErrorCode.E_BACKEND_UNAVAILABLE
    assert not openai.available() and openai.capabilities() == {}
    await fake_openai.start()
    assert await openai.refresh() and openai.capabilities()["models"] == sorted(OPENAI_MODELS)


async def test_cancel_closes_the_sse_stream_within_a_second(
        openai: OpenAICompatRunner, fake_openai: FakeOpenAI, make_ctx) -> None:
    fake_openai.default.tokens, fake_openai.default.token_delay_s = 100_000, 0.01
    job = asyncio.create_task(openai.run({"type": "chat", "messages": [
        {"role": "user", "content": "go on forever"}]}, make_ctx()))
    record = await fake_openai.wait_for(
        lambda: next((r for r in fake_openai.records if r.tokens_sent >= 3), None))
    canceled_at = time.monotonic()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await fake_openai.wait_for(lambda: record.disconnected_at, timeout=1.0)
    assert record.disconnected_at - canceled_at < 1.0 and not record.completed


async def test_chat_and_completions_end_to_end_through_the_engine(
        devnet: Devnet, fake_openai: FakeOpenAI, openai: OpenAICompatRunner, make_engine,
        run_engine) -> None:
    chat = (await devnet.submit_job({"type": "chat", "model": OPENAI_MODELS[1], "messages": [
        {"role": "user", "content": "hello over sse"}]}))["job_id"]
    gen = (await devnet.submit_job({"type": "inference", "prompt": "plain prompt"}))["job_id"]
    absent = (await devnet.submit_job({"type": "inference", "prompt": "x", "model": "gpt-4o"}
                                      ))["job_id"]
    await openai.refresh()
    engine = make_engine(devnet.url, cpu=0, gpu=2, pinned_key=devnet.public_key_id,
                         registry=RunnerRegistry([openai]))
    reregister_on_change(openai, engine)
    run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered >= 3, timeout=20)
    jobs = devnet.jobs
    for job_id, text in ((chat, "hello over sse"), (gen, "plain prompt")):
        result, record = jobs[job_id]["result"], fake_openai.record_for(text)
        assert jobs[job_id]["state"] == "COMPLETED" and record is not None
        assert result["output"] == record.output
        assert result["completion_tokens"] == record.completion_tokens
        assert result["prompt_tokens"] == record.prompt_tokens
    assert jobs[absent]["state"] == "FAILED" and "'gpt-4o'" in jobs[absent]["error"]
    assert len(fake_openai.records) == 2
    assert next(iter(devnet.miners.values()))["capabilities"]["models"] == sorted(OPENAI_MODELS)
