"""Fixtures for the inference runners: fake backends on loopback, a run context, a GPU
sampler that needs no GPU, and the hook that re-registers on a capability change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.engine import Engine
from aitbc_miner.runners.base import RunContext, SlotKind
from aitbc_miner.runners.gpu_watch import GpuReading
from aitbc_miner.runners.ollama import OllamaRunner
from aitbc_miner.runners.openai_compat import OpenAICompatRunner
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI

OLLAMA_MODELS = ["llama3.2:latest", "qwen2.5:0.5b"]
OPENAI_MODELS = ["meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"]


class FakeGpuSampler:
    """A GPU per slot with made-up but deterministic utilization and VRAM."""

    def __init__(self) -> None:
        self.slots: set[str] = set()
        self.readings = 0

    def sample(self, ctx: RunContext) -> GpuReading:
        self.slots.add(ctx.slot_id)
        self.readings += 1
        return GpuReading(utilization_pct=40.0 + 10 * (self.readings % 5),
                          memory_used_mib=4096.0 + 16 * (self.readings % 7))


@pytest.fixture
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(list(OLLAMA_MODELS)) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(list(OPENAI_MODELS)) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def gpu_sampler() -> FakeGpuSampler:
    return FakeGpuSampler()


@pytest.fixture
async def ollama(fake_ollama: FakeOllama, gpu_sampler: FakeGpuSampler
                 ) -> AsyncIterator[OllamaRunner]:
    runner = OllamaRunner(fake_ollama.url, gpu_sampler=gpu_sampler, connect_timeout_s=1.0)
    yield runner
    await runner.aclose()


@pytest.fixture
async def openai(fake_openai: FakeOpenAI, gpu_sampler: FakeGpuSampler
                 ) -> AsyncIterator[OpenAICompatRunner]:
    runner = OpenAICompatRunner(fake_openai.url, default_model=OPENAI_MODELS[0],
                                gpu_sampler=gpu_sampler, connect_timeout_s=1.0)
    yield runner
    await runner.aclose()


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., RunContext]:
    """A RunContext on ``gpu:0``; ``progress`` collects what the runner reports."""

    def make(job_id: str = "job-1", progress: list[Any] | None = None,
             logs: list[str] | None = None, **kw: Any) -> RunContext:
        kw.setdefault("slot_id", "gpu:0")
        kw.setdefault("slot_kind", SlotKind.GPU)
        kw.setdefault("timeout_s", 30.0)
        return RunContext(job_id=job_id, workspace=tmp_path,
                          report_progress=(progress.append if progress is not None
                                           else lambda _p: None),
                          report_log=(logs.append if logs is not None else lambda _l: None),
                          **kw)

    return make


def reregister_on_change(runner: Any, engine: Engine) -> None:
    """What the proposed integration does: a capability change makes the session
    register again (with the runner's new ``capabilities()``) at once."""

    def changed() -> None:
        engine.core.need_register = True
        engine.core.wake_session.set()

    runner.on_change = changed
