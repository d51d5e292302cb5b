"""What the LLM runners share: payload validation, measuring a token stream, and the
result the coordinator gets (the backend client is ``llm_backend``, GPU figures ``gpu_watch``).

Job payloads (spec "Job payloads"); every key but ``type`` is optional unless noted:

- ``{"type": "inference", "prompt" (required), "model"}``: the AITBC CLI's shape; the
  model defaults to ``llama3.2:latest`` as upstream.
- ``{"type": "generate", "prompt" (required), "system_prompt", "temperature", "max_tokens"}``
- ``{"type": "chat", "messages" (required: [{"role", "content"}]), "system_prompt", ...}``

All three also take ``model``, ``temperature`` (0..2), ``max_tokens`` (>= 1), ``top_p``
(0..1), ``seed`` (int) and ``stop`` (str or [str]). A malformed field is ``E_BADJOB``
naming the field. The requested model is never swapped for another one: a model the
backend does not have is ``E_MODEL_NOT_FOUND``.

The result carries what the upstream host miner sends (``status``, ``output``, ``model``,
``tokens_processed`` = generated tokens, ``execution_time`` s, ``gpu_used``, ``backend``)
plus ``prompt_tokens``, ``completion_tokens``, ``time_to_first_token_s``,
``tokens_per_s``, ``finish_reason`` and ``token_counts`` (``"backend"`` when the backend
reported the counts, ``"estimated"`` when they were counted from the stream). Metrics
carry, when the GPU could be sampled, ``gpu_utilization`` (mean %),
``gpu_utilization_peak`` (%), ``memory_used`` (MiB, last sample) and ``memory_peak``
(VRAM peak, MiB); the engine adds ``duration_ms``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codes import ErrorCode
from .base import JobFailed, RunContext, RunOutput
from .gpu_watch import GpuWatch

log = logging.getLogger("aitbc_miner.runners.inference")

INFERENCE_JOB_TYPES = frozenset({"inference", "generate", "chat"})
UPSTREAM_DEFAULT_MODEL = "llama3.2:latest"
MAX_TEXT_CHARS = 1 << 20  # prompt + system + messages, in characters
MAX_MESSAGES = 1000
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})
PROGRESS_EVERY_S = 0.25  # console progress at most four times a second


# --- the job -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A validated inference payload, backend-neutral."""

    job_type: str  # inference | generate | chat
    model: str
    prompt: str | None = None  # inference / generate
    system: str | None = None
    messages: tuple[dict[str, str], ...] = ()  # chat: system prompt already folded in
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def is_chat(self) -> bool:
        return self.job_type == "chat"


def parse_request(payload: Mapping[str, Any], *, default_model: str = UPSTREAM_DEFAULT_MODEL,
                  max_tokens_limit: int | None = None) -> InferenceRequest:
    """Validate a payload; ``JobFailed(E_BADJOB)`` names the first bad field.

    ``max_tokens_limit`` (operator's cap): applied when the job asks for no limit, and a
    job asking for more is refused rather than silently cut short.
    """
    job_type = payload.get("type")
    if job_type not in INFERENCE_JOB_TYPES:
        raise JobFailed(ErrorCode.E_BADJOB, f"'type' must be one of {sorted(INFERENCE_JOB_TYPES)}")
    model = payload.get("model")
    if model is None:
        model = default_model
    elif not isinstance(model, str) or not model.strip() or len(model) > 300:
        raise JobFailed(ErrorCode.E_BADJOB, "'model' must be a non-empty string")
    system = _optional_text(payload, "system_prompt")
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    if job_type == "chat":
        messages = _messages(payload.get("messages"))
        if system is not None:
            messages = ({"role": "system", "content": system}, *messages)
            system = None
        size = sum(len(m["content"]) for m in messages)
    else:
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise JobFailed(ErrorCode.E_BADJOB, "'prompt' must be a non-empty string")
        size = len(prompt) + len(system or "")
    if size > MAX_TEXT_CHARS:
        raise JobFailed(ErrorCode.E_BADJOB,
                        f"the prompt is {size} characters; at most {MAX_TEXT_CHARS} are taken")
    max_tokens = _optional_int(payload, "max_tokens", 1, 1 << 20)
    if max_tokens_limit is not None:
        if max_tokens is None:
            max_tokens = max_tokens_limit
        elif max_tokens > max_tokens_limit:
            raise JobFailed(ErrorCode.E_BADJOB, f"'max_tokens' must be at most {max_tokens_limit} "
                            "on this miner")
    return InferenceRequest(
        job_type=str(job_type), model=model.strip(), prompt=prompt, system=system,
        messages=messages,
        temperature=_optional_number(payload, "temperature", 0.0, 2.0),
        max_tokens=max_tokens,
        top_p=_optional_number(payload, "top_p", 0.0, 1.0),
        seed=_optional_int(payload, "seed", -(1 << 63), (1 << 63) - 1),
        stop=_stop(payload.get("stop")),
    )


def _optional_text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobFailed(ErrorCode.E_BADJOB, f"'{key}' must be a string")
    return value or None


def _optional_number(payload: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not low <= value <= high):
        raise JobFailed(ErrorCode.E_BADJOB, f"'{key}' must be a number in [{low:g}, {high:g}]")
    return float(value)


def _optional_int(payload: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobFailed(ErrorCode.E_BADJOB, f"'{key}' must be an integer in [{low}, {high}]")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if (isinstance(value, list) and len(value) <= 16
            and all(isinstance(s, str) and s for s in value)):
        return tuple(value)
    raise JobFailed(ErrorCode.E_BADJOB, "'stop' must be a string or a list of at most 16 strings")


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise JobFailed(ErrorCode.E_BADJOB, "'messages' must be a non-empty list")
    if len(value) > MAX_MESSAGES:
        raise JobFailed(ErrorCode.E_BADJOB, f"'messages' has more than {MAX_MESSAGES} entries")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise JobFailed(ErrorCode.E_BADJOB, f"'messages[{i}]' must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES:
            raise JobFailed(ErrorCode.E_BADJOB,
                            f"'messages[{i}].role' must be one of {sorted(MESSAGE_ROLES)}")
        if not isinstance(content, str):
            raise JobFailed(ErrorCode.E_BADJOB, f"'messages[{i}].content' must be a string")
        if message.get("images"):
            raise JobFailed(ErrorCode.E_BADJOB, f"'messages[{i}].images' is not supported")
        out.append({"role": role, "content": content})
    return tuple(out)


# --- model names -----------------------------------------------------------------------


def ollama_model_key(name: str) -> str:
    """The name Ollama resolves: a name without a tag means ``:latest``.

    Ollama names are ``[host/][namespace/]model[:tag]`` and the tag defaults to
    ``latest``, so ``llama3.2`` and ``llama3.2:latest`` are the same model (and ``/api/tags``
    lists it as ``llama3.2:latest``). A ``:`` before the last ``/`` is a host's port,
    not a tag. Ollama compares names case-insensitively, so the key is lower-cased.
    Nothing else is equated: ``llama3.2`` never matches ``llama3.2:3b``.
    """
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name.lower()


# --- measuring a stream ------------------------------------------------------------------


@dataclass(slots=True)
class StreamStats:
    """What one generation produced and how fast; filled while the stream is read."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    ended: float | None = None
    pieces: list[str] = field(default_factory=list)
    chunks: int = 0  # content-bearing chunks seen (a token estimate when no counts come)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    eval_duration_s: float | None = None  # backend's own generation time, when it says
    load_duration_s: float | None = None
    finish_reason: str | None = None
    model: str | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.pieces.append(text)
        self.chunks += 1

    @property
    def output(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def live_rate(self) -> float | None:
        if self.first_token_at is None:
            return None
        elapsed = time.perf_counter() - self.first_token_at
        return round((self.chunks - 1) / elapsed, 2) if elapsed > 0 and self.chunks > 1 else None

    def tokens_per_s(self) -> float | None:
        """The backend's own rate when it timed generation, else measured from the stream."""
        tokens = self.completion_tokens if self.completion_tokens is not None else self.chunks
        if self.eval_duration_s and self.eval_duration_s > 0 and tokens:
            return round(tokens / self.eval_duration_s, 3)
        if self.first_token_at is None or self.ended is None or tokens < 2:
            return None
        span = self.ended - self.first_token_at
        # the first token arrives at first_token_at: the span covers the other tokens
        return round((tokens - 1) / span, 3) if span > 0 else None


class Progress:
    """Throttled ``report_progress`` for the console: tokens so far and the live rate."""

    def __init__(self, ctx: RunContext, stats: StreamStats) -> None:
        self.ctx = ctx
        self.stats = stats
        self._last = 0.0

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        progress: dict[str, Any] = {"tokens": self.stats.completion_tokens or self.stats.chunks}
        rate = self.stats.live_rate() if not force else self.stats.tokens_per_s()
        if rate is not None:
            progress["tokens_per_s"] = rate
        try:
            self.ctx.report_progress(progress)
        except Exception:  # the console must never break a job
            log.debug("report_progress failed", exc_info=True)


def build_output(stats: StreamStats, *, model: str, backend: str, gpu_used: bool,
                 gpu: GpuWatch) -> RunOutput:
    """The coordinator-facing result (upstream keys first) and metrics."""
    if stats.ended is None:
        stats.ended = time.perf_counter()
    counted = stats.completion_tokens is not None
    completion = stats.completion_tokens if counted else stats.chunks
    ttft = stats.ttft_s
    result: dict[str, Any] = {
        "status": "completed",
        "output": stats.output,
        "model": model,
        "tokens_processed": completion,
        "execution_time": round(stats.ended - stats.started, 6),
        "gpu_used": gpu_used,
        "backend": backend,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": completion,
        "time_to_first_token_s": None if ttft is None else round(ttft, 6),
        "tokens_per_s": stats.tokens_per_s(),
        "finish_reason": stats.finish_reason,
        "token_counts": "backend" if counted else "estimated",
    }
    if stats.load_duration_s is not None:
        result["load_duration_s"] = round(stats.load_duration_s, 6)
    return RunOutput(result=result, metrics=gpu.metrics())


