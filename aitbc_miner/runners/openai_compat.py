"""Inference on an OpenAI-compatible server (vLLM, llama.cpp server, ...).

- Models: ``GET /v1/models`` (``{"object": "list", "data": [{"id": ...}]}``); the ids are
  the ``models`` capability while the server is up. Model names are matched exactly
  (these servers have no implied tag); a missing one is ``E_MODEL_NOT_FOUND``, never
  substituted, and never pulled.
- ``chat`` -> ``POST /v1/chat/completions``. ``inference`` / ``generate`` -> the chat
  endpoint too (a system message from ``system_prompt``, the prompt as the user message),
  or with ``prompt_endpoint="completions"`` -> ``POST /v1/completions`` (raw text; a
  system prompt is put before the prompt, separated by a blank line).
- Always streamed (SSE ``data: {...}`` events ending with ``data: [DONE]``) with
  ``stream_options.include_usage``, so the last chunk carries the true ``usage``
  counts; a server that sends none gets counts estimated from the stream
  (``token_counts: "estimated"``). llama.cpp's ``timings`` give the generation time.
- ``gpu_used`` is the operator's ``gpu_backend`` (these servers do not report it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import httpx

from ..codes import ErrorCode
from .base import JobFailed, RunContext, RunOutput, SlotKind
from .gpu_watch import GpuSampler, GpuWatch
from .inference import (
    INFERENCE_JOB_TYPES,
    UPSTREAM_DEFAULT_MODEL,
    InferenceRequest,
    Progress,
    StreamStats,
    build_output,
    parse_request,
)
from .llm_backend import (
    DOWN_REFRESH_S,
    BackendUnavailable,
    HttpBackend,
    error_text,
    looks_like_oom,
    stream_object,
)

DEFAULT_OPENAI_URL = "http://127.0.0.1:8000"


class OpenAICompatRunner(HttpBackend):
    backend = "openai"
    slot_kind = SlotKind.GPU

    def __init__(
        self,
        base_url: str = DEFAULT_OPENAI_URL,
        *,
        name: str = "openai",
        job_types: frozenset[str] = INFERENCE_JOB_TYPES,
        api_key: str | None = None,
        prompt_endpoint: Literal["chat", "completions"] = "chat",
        default_model: str = UPSTREAM_DEFAULT_MODEL,
        max_tokens_limit: int | None = None,
        gpu_backend: bool = True,
        gpu_sampler: GpuSampler | None = None,
        refresh_interval_s: float = 30.0,
        down_refresh_s: float = DOWN_REFRESH_S,
        connect_timeout_s: float = 3.0,
        request_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base_url = base_url.rstrip("/")
        if base_url.endswith("/v1"):
            base_url = base_url[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        super().__init__(base_url, refresh_interval_s=refresh_interval_s,
                         down_refresh_s=down_refresh_s,
                         connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s,
                         headers=headers, transport=transport)
        if not job_types <= INFERENCE_JOB_TYPES:
            raise ValueError(f"job types must be among {sorted(INFERENCE_JOB_TYPES)}")
        if prompt_endpoint not in ("chat", "completions"):
            raise ValueError("prompt_endpoint must be 'chat' or 'completions'")
        self.name = name
        self.job_types = frozenset(job_types)
        self.prompt_endpoint = prompt_endpoint
        self.default_model = default_model
        self.max_tokens_limit = max_tokens_limit
        self.gpu_backend = gpu_backend
        self.gpu_sampler = gpu_sampler

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAICompatRunner({self.base_url!r}, name={self.name!r})"

    # --- models ------------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        try:
            response = await self.client.get(
                "/v1/models", timeout=httpx.Timeout(self.request_timeout_s,
                                                    connect=self.connect_timeout_s))
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ValueError(f"/v1/models answered {response.status_code}: "
                             f"{error_text(response, response.content)}")
        data = response.json().get("data")
        if not isinstance(data, list):
            raise ValueError("/v1/models answer has no 'data' list")
        return [m["id"] for m in data
                if isinstance(m, Mapping) and isinstance(m.get("id"), str) and m["id"]]

    async def _resolve(self, requested: str) -> str:
        if requested not in self.models:
            if not await self.refresh():
                raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                                f"{self.name} at {self.base_url} is unavailable: {self.last_error}")
        if requested not in self.models:
            shown = ", ".join(self.models[:10]) + (", ..." if len(self.models) > 10 else "")
            raise JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                            f"model {requested!r} is not served by this miner's {self.name} "
                            f"backend (served: {shown or 'none'}); another model is never "
                            "substituted")
        return requested

    # --- a job -------------------------------------------------------------------------

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        req = parse_request(payload, default_model=self.default_model,
                            max_tokens_limit=self.max_tokens_limit)
        model = await self._resolve(req.model)
        chat = req.is_chat or self.prompt_endpoint == "chat"
        path = "/v1/chat/completions" if chat else "/v1/completions"
        stats = StreamStats()
        progress = Progress(ctx, stats)
        async with GpuWatch(self.gpu_sampler, ctx) as gpu:
            await self._stream(path, self.request_body(req, model, chat), chat, stats, progress)
        progress.tick(force=True)
        return build_output(stats, model=model, backend=self.backend, gpu_used=self.gpu_backend,
                            gpu=gpu)

    def request_body(self, req: InferenceRequest, model: str, chat: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "stream": True,
                                "stream_options": {"include_usage": True}}
        if chat:
            if req.is_chat:
                body["messages"] = [dict(m) for m in req.messages]
            else:
                messages = [{"role": "system", "content": req.system}] if req.system else []
                body["messages"] = [*messages, {"role": "user", "content": req.prompt}]
        else:
            body["prompt"] = f"{req.system}\n\n{req.prompt}" if req.system else req.prompt
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = list(req.stop)
        return body

    async def _stream(self, path: str, body: dict[str, Any], chat: bool, stats: StreamStats,
                      progress: Progress) -> None:
        model = body["model"]
        finished = False
        try:
            # Leaving this block (also by a cancel) closes the response and its connection,
            # which the server takes as an abort of the request.
            async with self.client.stream("POST", path, json=body,
                                          headers={"Accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    raise self._http_failure(response, await response.aread(), model)
                async for data in sse_events(response):
                    if data.strip() == "[DONE]":
                        finished = True
                        break
                    chunk = _json_event(data)
                    if "error" in chunk:
                        raise self._stream_failure(chunk)
                    self._take(chunk, chat, stats)
                    progress.tick()
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from exc
        if stats.ended is None:
            stats.ended = time.perf_counter()
        if not finished and stats.finish_reason is None:
            self._wake.set()
            raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                            f"{self.name} ended the stream before it finished (no [DONE])")

    def _take(self, chunk: Mapping[str, Any], chat: bool, stats: StreamStats) -> None:
        choices = chunk.get("choices") or []
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            if chat:
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, Mapping) else None
            else:
                piece = choice.get("text")
            if isinstance(piece, str) and piece:
                stats.add(piece)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                stats.finish_reason = reason
                stats.ended = time.perf_counter()
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            if isinstance(usage.get("prompt_tokens"), int):
                stats.prompt_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                stats.completion_tokens = usage["completion_tokens"]
        timings = chunk.get("timings")  # llama.cpp server
        if isinstance(timings, Mapping) and isinstance(timings.get("predicted_ms"), int | float):
            stats.eval_duration_s = timings["predicted_ms"] / 1000
        if isinstance(chunk.get("model"), str):
            stats.model = chunk["model"]

    def _http_failure(self, response: httpx.Response, raw: bytes, model: str) -> JobFailed:
        text = error_text(response, raw)
        status = response.status_code
        lowered = text.lower()
        if status == 404 or ("model" in lowered and "does not exist" in lowered):
            self._wake.set()
            return JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                             f"{self.name} has no model {model!r}: {text}; another model is "
                             "never substituted")
        if looks_like_oom(text):
            return JobFailed(ErrorCode.E_OOM, f"{self.name}: {text}")
        if status in (400, 422):
            return JobFailed(ErrorCode.E_BADJOB, f"{self.name} refused the request: {text}")
        if status in (401, 403):
            return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                             f"{self.name} refused this miner's API key ({status}): {text}")
        return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE, f"{self.name} answered {status}: {text}")

    def _stream_failure(self, chunk: Mapping[str, Any]) -> JobFailed:
        err = chunk.get("error")
        message = err.get("message") if isinstance(err, Mapping) else err
        message = str(message)
        if looks_like_oom(message):
            return JobFailed(ErrorCode.E_OOM, f"{self.name}: {message}")
        return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                         f"{self.name} failed mid-stream: {message}")

    def _transport_failure(self, exc: httpx.TransportError) -> JobFailed:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            self.mark_down(f"{type(exc).__name__}: {exc}")
            return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                             f"{self.name} at {self.base_url} could not be reached: {exc}")
        self._wake.set()
        return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                         f"the connection to {self.name} failed mid-answer: "
                         f"{type(exc).__name__} {exc}")


async def sse_events(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines);
    comments (``:``), ``event:``/``id:``/``retry:`` fields are skipped."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _json_event(data: str) -> dict[str, Any]:
    return stream_object(data, "the server sent an event")
