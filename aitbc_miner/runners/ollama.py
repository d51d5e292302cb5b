"""Inference on an Ollama server over its HTTP API (default ``http://127.0.0.1:11434``).

- Models: ``GET /api/tags``; their names are the ``models`` capability while Ollama is up.
- ``inference`` and ``generate`` -> ``POST /api/generate`` (``system``, ``options.temperature``,
  ``options.num_predict`` = ``max_tokens``); ``chat`` -> ``POST /api/chat`` (``messages``).
  Both are read as NDJSON streams: the first content chunk times the first token, the
  final ``done`` chunk carries the true counts (``prompt_eval_count``, ``eval_count``) and
  durations (nanoseconds), and a cancel closes the stream, which Ollama sees as a
  disconnect and stops generating.
- A model is matched the way Ollama resolves names (a missing tag is ``:latest``, see
  ``ollama_model_key``); a model that is not installed is ``E_MODEL_NOT_FOUND`` and is
  never substituted. With ``allow_pull`` it is pulled (``POST /api/pull``) first, within
  the job's time.
- Unreachable -> ``E_BACKEND_UNAVAILABLE`` and the runner reports itself unavailable (its
  capability withdrawn) until a refresh finds Ollama again.
- ``gpu_used`` comes from ``GET /api/ps`` (the model's ``size_vram`` > 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

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
    ollama_model_key,
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

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
PS_CACHE_S = 10.0  # how long an /api/ps answer about a model is reused


class OllamaRunner(HttpBackend):
    name = "ollama"
    backend = "ollama"
    job_types = INFERENCE_JOB_TYPES
    slot_kind = SlotKind.GPU

    def __init__(
        self,
        base_url: str = DEFAULT_OLLAMA_URL,
        *,
        allow_pull: bool = False,
        default_model: str = UPSTREAM_DEFAULT_MODEL,
        max_tokens_limit: int | None = None,
        keep_alive: str | int | None = None,
        gpu_sampler: GpuSampler | None = None,
        refresh_interval_s: float = 30.0,
        down_refresh_s: float = DOWN_REFRESH_S,
        connect_timeout_s: float = 3.0,
        request_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, refresh_interval_s=refresh_interval_s,
                         down_refresh_s=down_refresh_s,
                         connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s,
                         transport=transport)
        self.allow_pull = allow_pull
        self.default_model = default_model
        self.max_tokens_limit = max_tokens_limit
        self.keep_alive = keep_alive
        self.gpu_sampler = gpu_sampler
        self._ps_cache: dict[str, tuple[float, bool]] = {}

    # --- models ------------------------------------------------------------------------

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.request_timeout_s, connect=self.connect_timeout_s)

    async def list_models(self) -> list[str]:
        try:
            response = await self.client.get("/api/tags", timeout=self._timeout())
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc
        if response.status_code != 200:
            raise ValueError(f"/api/tags answered {response.status_code}")
        models = response.json().get("models")
        if not isinstance(models, list):
            raise ValueError("/api/tags answer has no 'models' list")
        names = []
        for entry in models:
            if isinstance(entry, Mapping):
                name = entry.get("name") or entry.get("model")
                if isinstance(name, str) and name:
                    names.append(name)
        return names

    def installed(self, requested: str) -> str | None:
        """The installed name ``requested`` resolves to, or None. Never a different model."""
        key = ollama_model_key(requested)
        return next((m for m in self.models if ollama_model_key(m) == key), None)

    async def _resolve(self, requested: str, ctx: RunContext) -> str:
        model = self.installed(requested)
        if model is None:  # perhaps installed since the last refresh
            if not await self.refresh():
                raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                                f"ollama at {self.base_url} is unavailable: {self.last_error}")
            model = self.installed(requested)
        if model is None and self.allow_pull:
            await self._pull(requested, ctx)
            await self.refresh()
            model = self.installed(requested)
        if model is None:
            shown = ", ".join(self.models[:10]) + (", ..." if len(self.models) > 10 else "")
            raise JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                            f"model {requested!r} is not installed on this miner's ollama "
                            f"(installed: {shown or 'none'}); another model is never substituted")
        return model

    async def _pull(self, model: str, ctx: RunContext) -> None:
        ctx.report_log(f"pulling model {model!r}")
        last_status = None
        try:
            async with self.client.stream("POST", "/api/pull",
                                          json={"model": model, "stream": True}) as response:
                if response.status_code != 200:
                    text = error_text(response, await response.aread())
                    raise JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                                    f"pulling model {model!r} failed: {text}")
                async for line in response.aiter_lines():
                    chunk = _json_line(line)
                    if chunk is None:
                        continue
                    if "error" in chunk:
                        raise JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                                        f"pulling model {model!r} failed: {chunk['error']}")
                    status = str(chunk.get("status", ""))
                    if status != last_status:
                        ctx.report_log(f"pull {model}: {status}")
                        last_status = status
                    total, done = chunk.get("total"), chunk.get("completed")
                    progress: dict[str, Any] = {"pull": status}
                    if isinstance(total, int) and isinstance(done, int) and total > 0:
                        progress["pct"] = round(100 * done / total)
                    ctx.report_progress(progress)
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from exc
        if last_status != "success":
            raise JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                            f"pulling model {model!r} ended without success ({last_status})")

    # --- a job -------------------------------------------------------------------------

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        req = parse_request(payload, default_model=self.default_model,
                            max_tokens_limit=self.max_tokens_limit)
        model = await self._resolve(req.model, ctx)
        path = "/api/chat" if req.is_chat else "/api/generate"
        stats = StreamStats()
        progress = Progress(ctx, stats)
        async with GpuWatch(self.gpu_sampler, ctx) as gpu:
            await self._stream(path, self.request_body(req, model), req, stats, progress)
        progress.tick(force=True)
        gpu_used = await self._gpu_used(model, ctx)
        return build_output(stats, model=model, backend=self.backend, gpu_used=gpu_used, gpu=gpu)

    def request_body(self, req: InferenceRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "stream": True}
        if req.is_chat:
            body["messages"] = [dict(m) for m in req.messages]
        else:
            body["prompt"] = req.prompt
            if req.system is not None:
                body["system"] = req.system
        options: dict[str, Any] = {}
        if req.temperature is not None:
            options["temperature"] = req.temperature
        if req.max_tokens is not None:
            options["num_predict"] = req.max_tokens
        if req.top_p is not None:
            options["top_p"] = req.top_p
        if req.seed is not None:
            options["seed"] = req.seed
        if req.stop:
            options["stop"] = list(req.stop)
        if options:
            body["options"] = options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    async def _stream(self, path: str, body: dict[str, Any], req: InferenceRequest,
                      stats: StreamStats, progress: Progress) -> None:
        model = body["model"]
        done = False
        try:
            # Leaving this block (normally, by an error or by a cancel) closes the response;
            # a response closed before its end closes the connection: Ollama stops the job.
            async with self.client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    raise self._http_failure(response, await response.aread(), model)
                async for line in response.aiter_lines():
                    chunk = _json_line(line)
                    if chunk is None or done:
                        continue  # read to the end so the connection can be reused
                    if "error" in chunk:  # an error after the stream began (status stays 200)
                        raise _stream_failure(str(chunk["error"]), model)
                    if req.is_chat:
                        message = chunk.get("message")
                        piece = message.get("content") if isinstance(message, Mapping) else None
                    else:
                        piece = chunk.get("response")
                    if isinstance(piece, str):
                        stats.add(piece)
                        progress.tick()
                    if chunk.get("done") is True:
                        done = True
                        stats.ended = time.perf_counter()
                        _final_counts(chunk, stats)
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from exc
        if not done:
            self._wake.set()
            raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                            "ollama ended the stream before its final ('done') chunk")

    def _http_failure(self, response: httpx.Response, raw: bytes, model: str) -> JobFailed:
        text = error_text(response, raw)
        status = response.status_code
        if status == 404:
            self._wake.set()  # our model list is stale: refresh soon
            return JobFailed(ErrorCode.E_MODEL_NOT_FOUND,
                             f"ollama has no model {model!r}: {text}; another model is never "
                             "substituted")
        if looks_like_oom(text):
            return JobFailed(ErrorCode.E_OOM, f"ollama: {text}")
        if status == 400:
            return JobFailed(ErrorCode.E_BADJOB, f"ollama refused the request: {text}")
        return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE, f"ollama answered {status}: {text}")

    def _transport_failure(self, exc: httpx.TransportError) -> JobFailed:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            self.mark_down(f"{type(exc).__name__}: {exc}")
            return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                             f"ollama at {self.base_url} could not be reached: {exc}")
        self._wake.set()  # it dropped us mid-answer: see whether it is still there
        return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                         f"the connection to ollama failed mid-answer: {type(exc).__name__} {exc}")

    async def _gpu_used(self, model: str, ctx: RunContext) -> bool:
        """Whether Ollama holds the model in VRAM (``/api/ps`` ``size_vram``); cached."""
        key = ollama_model_key(model)
        cached = self._ps_cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < PS_CACHE_S:
            return cached[1]
        try:
            response = await self.client.get("/api/ps", timeout=self._timeout())
            entries = response.json().get("models") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            entries = None
        if not isinstance(entries, list):
            return ctx.gpu_uuid is not None  # unknown: say what the slot is
        used = any(isinstance(e, Mapping) and ollama_model_key(str(e.get("name") or e.get("model")))
                   == key and isinstance(e.get("size_vram"), int) and e["size_vram"] > 0
                   for e in entries)
        self._ps_cache[key] = (now, used)
        return used


def _json_line(line: str) -> dict[str, Any] | None:
    return stream_object(line, "ollama sent a line") if line.strip() else None


def _stream_failure(message: str, model: str) -> JobFailed:
    if looks_like_oom(message):
        return JobFailed(ErrorCode.E_OOM, f"ollama: {message}")
    if "not found" in message and model.split(":")[0] in message:
        return JobFailed(ErrorCode.E_MODEL_NOT_FOUND, f"ollama: {message}")
    return JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE, f"ollama failed mid-stream: {message}")


def _unreachable(exc: httpx.TransportError) -> BackendUnavailable:
    return BackendUnavailable(f"{type(exc).__name__}: {exc}")


def _ns(value: Any) -> float | None:
    return value / 1e9 if isinstance(value, int | float) and value >= 0 else None


def _final_counts(chunk: Mapping[str, Any], stats: StreamStats) -> None:
    """The counts and durations of Ollama's final chunk (durations in nanoseconds)."""
    prompt, generated = chunk.get("prompt_eval_count"), chunk.get("eval_count")
    if isinstance(prompt, int):
        stats.prompt_tokens = prompt
    if isinstance(generated, int):
        stats.completion_tokens = generated
    stats.eval_duration_s = _ns(chunk.get("eval_duration"))
    stats.load_duration_s = _ns(chunk.get("load_duration"))
    reason = chunk.get("done_reason")
    stats.finish_reason = reason if isinstance(reason, str) else "stop"
    if isinstance(chunk.get("model"), str):
        stats.model = chunk["model"]
