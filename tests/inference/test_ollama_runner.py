"""The Ollama runner against the fake Ollama, without an engine: requests, results, errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed
from aitbc_miner.runners.inference import ollama_model_key, parse_request
from aitbc_miner.runners.ollama import OllamaRunner
from tests.fakes.fake_ollama import FakeOllama, count_prompt_tokens, token_text

from .conftest import OLLAMA_MODELS


async def test_models_become_the_capability_after_a_refresh(ollama: OllamaRunner) -> None:
    # Before any probe the runner takes work but claims no models
    assert ollama.available() and ollama.capabilities() == {}
    assert await ollama.refresh()
    assert ollama.capabilities() == {"models": sorted(OLLAMA_MODELS)}


async def test_inference_result_carries_true_counts_and_timings(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.default.tokens = 12
    fake_ollama.default.first_token_delay_s = 0.05
    progress: list = []
    out = await ollama.run({"type": "inference", "prompt": "why is the sky blue"},
                           make_ctx(progress=progress))
    record = fake_ollama.records[-1]
    r = out.result
    # the upstream keys
    assert r["status"] == "completed" and r["backend"] == "ollama"
    assert r["model"] == "llama3.2:latest" and record.model == "llama3.2:latest"
    assert r["output"] == record.output == "".join(token_text(record.prompt_text, i)
                                                    for i in range(12))
    assert r["tokens_processed"] == r["completion_tokens"] == record.completion_tokens == 12
    assert r["prompt_tokens"] == record.prompt_tokens == count_prompt_tokens("why is the sky blue")
    assert r["token_counts"] == "backend" and r["finish_reason"] == "stop"
    assert isinstance(r["execution_time"], float) and r["execution_time"] >= 0.05
    assert 0.05 <= r["time_to_first_token_s"] <= r["execution_time"]
    assert r["tokens_per_s"] > 0 and r["gpu_used"] is True  # /api/ps: size_vram > 0
    # GPU metrics from the sampler, and progress for the console ending with the total
    assert {"gpu_utilization", "gpu_utilization_peak", "memory_peak"} <= set(out.metrics)
    assert out.metrics["gpu_utilization_peak"] >= out.metrics["gpu_utilization"]
    assert progress and progress[-1]["tokens"] == 12 and "tokens_per_s" in progress[-1]
    # the request was a stream, for exactly the requested model, with no options
    assert record.body["stream"] is True and "options" not in record.body


async def test_generate_forwards_system_temperature_and_max_tokens(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.default.tokens = 10
    out = await ollama.run({"type": "generate", "prompt": "write a haiku", "model": "qwen2.5:0.5b",
                            "system_prompt": "you are terse", "temperature": 0.3,
                            "max_tokens": 4, "top_p": 0.9, "seed": 7, "stop": ["\n"]}, make_ctx())
    record = fake_ollama.records[-1]
    assert record.path == "/api/generate"
    assert record.body["system"] == "you are terse" and record.body["prompt"] == "write a haiku"
    assert record.options == {"temperature": 0.3, "num_predict": 4, "top_p": 0.9, "seed": 7,
                              "stop": ["\n"]}
    assert out.result["model"] == "qwen2.5:0.5b"
    assert out.result["completion_tokens"] == 4 and out.result["finish_reason"] == "length"
    assert out.result["prompt_tokens"] == count_prompt_tokens("you are terse\nwrite a haiku")


async def test_chat_forwards_messages_and_system_prompt(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    messages = [{"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "tell me a joke"}]
    out = await ollama.run({"type": "chat", "messages": messages, "system_prompt": "be kind",
                            "temperature": 0.0, "max_tokens": 64}, make_ctx())
    record = fake_ollama.records[-1]
    assert record.path == "/api/chat"
    assert record.body["messages"] == [{"role": "system", "content": "be kind"}, *messages]
    assert record.options == {"temperature": 0.0, "num_predict": 64}
    assert out.result["output"] == record.output and out.result["completion_tokens"] == 8


@pytest.mark.parametrize(("payload", "field"), [
    ({"type": "inference"}, "'prompt'"),
    ({"type": "inference", "prompt": 5}, "'prompt'"),
    ({"type": "inference", "prompt": "x", "model": ""}, "'model'"),
    ({"type": "generate", "prompt": "x", "temperature": "hot"}, "'temperature'"),
    ({"type": "generate", "prompt": "x", "temperature": 9}, "'temperature'"),
    ({"type": "generate", "prompt": "x", "max_tokens": 0}, "'max_tokens'"),
    ({"type": "generate", "prompt": "x", "max_tokens": True}, "'max_tokens'"),
    ({"type": "generate", "prompt": "x", "system_prompt": ["a"]}, "'system_prompt'"),
    ({"type": "chat"}, "'messages'"),
    ({"type": "chat", "messages": [{"role": "robot", "content": "x"}]}, "'messages[0].role'"),
    ({"type": "chat", "messages": [{"role": "user"}]}, "'messages[0].content'"),
    ({"type": "chat", "messages": ["hi"]}, "'messages[0]'"),
])
async def test_a_malformed_payload_is_a_badjob_naming_the_field(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx, payload, field) -> None:
    with pytest.raises(JobFailed) as failed:
        await ollama.run(payload, make_ctx())
    assert failed.value.code is ErrorCode.E_BADJOB and field in failed.value.message
    assert fake_ollama.generation_calls() == 0


def test_operator_token_cap_applies_and_is_never_silently_exceeded() -> None:
    capped = parse_request({"type": "inference", "prompt": "x"}, max_tokens_limit=256)
    assert capped.max_tokens == 256
    with pytest.raises(JobFailed, match="at most 256"):
        parse_request({"type": "inference", "prompt": "x", "max_tokens": 257}, max_tokens_limit=256)


def test_model_names_resolve_like_ollama() -> None:
    assert ollama_model_key("llama3.2") == ollama_model_key("llama3.2:latest")
    assert ollama_model_key("Llama3.2:Latest") == "llama3.2:latest"
    assert ollama_model_key("llama3.2") != ollama_model_key("llama3.2:1b")
    assert ollama_model_key("myhost:5000/team/model") == "myhost:5000/team/model:latest"


async def test_missing_model_is_not_substituted_nor_sent(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    for model in ("mistral:7b", "llama3.2:1b", "qwen2.5"):  # qwen2.5 means qwen2.5:latest
        with pytest.raises(JobFailed) as failed:
            await ollama.run({"type": "inference", "prompt": "x", "model": model}, make_ctx())
        assert failed.value.code is ErrorCode.E_MODEL_NOT_FOUND
        assert repr(model) in failed.value.message
    assert fake_ollama.generation_calls() == 0 and fake_ollama.calls["POST /api/pull"] == 0
    # ...while the untagged name of an installed model is that model (":latest" implied)
    out = await ollama.run({"type": "inference", "prompt": "x", "model": "llama3.2"}, make_ctx())
    assert out.result["model"] == "llama3.2:latest"


async def test_a_model_installed_since_the_last_refresh_is_found(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    await ollama.refresh()
    fake_ollama.models.append("phi3:mini")
    out = await ollama.run({"type": "inference", "prompt": "x", "model": "phi3:mini"}, make_ctx())
    assert out.result["model"] == "phi3:mini" and "phi3:mini" in ollama.capabilities()["models"]


async def test_a_model_removed_since_the_last_refresh_is_model_not_found(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    await ollama.refresh()
    fake_ollama.models.remove("qwen2.5:0.5b")  # Ollama answers 404 {"error": "model ... not found"}
    with pytest.raises(JobFailed) as failed:
        await ollama.run({"type": "inference", "prompt": "x", "model": "qwen2.5:0.5b"}, make_ctx())
    assert failed.value.code is ErrorCode.E_MODEL_NOT_FOUND
    assert "not found" in failed.value.message


async def test_pull_only_when_enabled(fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.pullable = {"gemma3:1b"}
    runner = OllamaRunner(fake_ollama.url, allow_pull=True)
    try:
        logs: list[str] = []
        out = await runner.run({"type": "inference", "prompt": "x", "model": "gemma3:1b"},
                               make_ctx(logs=logs))
        assert out.result["model"] == "gemma3:1b" and fake_ollama.calls["POST /api/pull"] == 1
        assert any("success" in line for line in logs)
        # a model the registry does not have: the pull fails, the job is E_MODEL_NOT_FOUND
        with pytest.raises(JobFailed) as failed:
            await runner.run({"type": "inference", "prompt": "x", "model": "nope:1b"}, make_ctx())
        assert failed.value.code is ErrorCode.E_MODEL_NOT_FOUND
        assert "file does not exist" in failed.value.message
        assert fake_ollama.generation_calls() == 1
    finally:
        await runner.aclose()


async def test_an_error_mid_stream_fails_the_job(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.when(prompt_contains="boom", error_after=3)
    fake_ollama.when(prompt_contains="hog", error_after=1,
                     error_message="model requires more system memory (9.1 GiB) than is available")
    with pytest.raises(JobFailed) as failed:
        await ollama.run({"type": "inference", "prompt": "boom"}, make_ctx())
    assert failed.value.code is ErrorCode.E_BACKEND_UNAVAILABLE
    assert "error was encountered" in failed.value.message
    with pytest.raises(JobFailed) as failed:
        await ollama.run({"type": "inference", "prompt": "hog"}, make_ctx())
    assert failed.value.code is ErrorCode.E_OOM


async def test_an_error_status_and_a_dropped_connection_fail_the_job(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.when(prompt_contains="500", status=500)
    fake_ollama.when(prompt_contains="drop", drop_after=2)
    for prompt in ("500", "drop"):
        with pytest.raises(JobFailed) as failed:
            await ollama.run({"type": "inference", "prompt": prompt}, make_ctx())
        assert failed.value.code is ErrorCode.E_BACKEND_UNAVAILABLE, prompt
    assert ollama.available()  # it answered: it is up, only this job failed


async def test_backend_down_is_unavailable_and_withdrawn_until_back(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    changes: list[tuple[bool, dict]] = []
    ollama.on_change = lambda: changes.append((ollama.available(), dict(ollama.capabilities())))
    assert await ollama.refresh()
    await fake_ollama.stop()
    # a job finds it gone before any refresh does
    with pytest.raises(JobFailed) as failed:
        await ollama.run({"type": "inference", "prompt": "x"}, make_ctx())
    assert failed.value.code is ErrorCode.E_BACKEND_UNAVAILABLE
    assert not ollama.available() and ollama.capabilities() == {}
    assert not await ollama.refresh()  # still down: no new change
    await fake_ollama.start()  # same port
    assert await ollama.refresh()
    assert ollama.available() and ollama.capabilities() == {"models": sorted(OLLAMA_MODELS)}
    assert changes == [(True, {"models": sorted(OLLAMA_MODELS)}), (False, {}),
                       (True, {"models": sorted(OLLAMA_MODELS)})]
    out = await ollama.run({"type": "inference", "prompt": "x"}, make_ctx())
    assert out.result["status"] == "completed"


async def test_model_list_changes_are_announced(ollama: OllamaRunner, fake_ollama: FakeOllama
                                                ) -> None:
    seen: list[list[str]] = []
    ollama.on_change = lambda: seen.append(list(ollama.capabilities().get("models", [])))
    await ollama.refresh()
    await ollama.refresh()  # nothing changed: nothing announced
    fake_ollama.models.append("phi3:mini")
    await ollama.refresh()
    assert seen == [sorted(OLLAMA_MODELS), sorted([*OLLAMA_MODELS, "phi3:mini"])]


async def test_watch_refreshes_and_is_woken_by_a_failure(fake_ollama: FakeOllama, make_ctx) -> None:
    runner = OllamaRunner(fake_ollama.url, refresh_interval_s=3600, down_refresh_s=0.05)
    ups: list[bool] = []
    changed = asyncio.Event()

    def on_change() -> None:
        ups.append(bool(runner.up))
        changed.set()

    runner.on_change = on_change
    watcher = asyncio.create_task(runner.watch())
    try:
        async with asyncio.timeout(5):
            await changed.wait()  # the first refresh: up
            changed.clear()
            await fake_ollama.stop()
            with pytest.raises(JobFailed):
                await runner.run({"type": "inference", "prompt": "x"}, make_ctx())
            await changed.wait()  # marked down by the job
            changed.clear()
            await fake_ollama.start()
            await changed.wait()  # ...and the watcher, probing a down backend often, finds it
        assert ups == [True, False, True]
    finally:
        watcher.cancel()
        await runner.aclose()


async def test_cancel_mid_stream_closes_the_backend_request_within_a_second(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.default.tokens, fake_ollama.default.token_delay_s = 10_000, 0.02
    job = asyncio.create_task(ollama.run({"type": "inference", "prompt": "long"}, make_ctx()))
    record = await fake_ollama.wait_for(
        lambda: next((r for r in fake_ollama.records if r.tokens_sent >= 3), None))
    canceled_at = time.monotonic()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await fake_ollama.wait_for(lambda: record.disconnected_at, timeout=1.0)
    assert record.disconnected_at - canceled_at < 1.0
    assert not record.completed and not record.server_stopped


async def test_hung_stream_is_ended_by_the_callers_timeout(
        ollama: OllamaRunner, fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.default.hang_after = 2
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await ollama.run({"type": "inference", "prompt": "hang"}, make_ctx())
    record = fake_ollama.records[-1]
    await fake_ollama.wait_for(lambda: record.disconnected_at, timeout=1.0)
    assert record.tokens_sent == 2 and not record.completed


async def test_gpu_used_false_when_ollama_runs_the_model_on_cpu(
        fake_ollama: FakeOllama, make_ctx) -> None:
    fake_ollama.vram = False
    runner = OllamaRunner(fake_ollama.url)
    try:
        out = await runner.run({"type": "inference", "prompt": "x"}, make_ctx())
    finally:
        await runner.aclose()
    assert out.result["gpu_used"] is False and out.metrics == {}  # no sampler: no GPU metrics
