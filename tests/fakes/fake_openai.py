"""A fake OpenAI-compatible server (what vLLM and llama.cpp's server speak) on loopback.

Routes: ``GET /v1/models`` (``{"object": "list", "data": [{"id", "object": "model",
"created", "owned_by"}]}``), ``POST /v1/chat/completions`` and ``POST /v1/completions``.
With ``"stream": true`` the answer is SSE (``text/event-stream``): ``data: {chunk}``
events (``chat.completion.chunk`` with ``choices[].delta``, or ``text_completion`` with
``choices[].text``), a chunk with ``finish_reason``, then, when the request set
``stream_options.include_usage``, a chunk with ``choices: []`` and the ``usage`` (the
other chunks then carry ``"usage": null``), then ``data: [DONE]``. Errors are
``{"error": {"message", "type", "param", "code"}}`` (404 ``model_not_found`` for an
unknown model, 401 ``invalid_api_key``); an error after the stream began is a
``data: {"error": {...}}`` event. Scripting and recording as in ``fake_ollama``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .fake_ollama import Behavior, FakeLLMServer, token_text


class FakeOpenAI(FakeLLMServer):
    generation_paths = frozenset({"/v1/chat/completions", "/v1/completions"})

    def __init__(self, models: list[str] | None = None, *, api_key: str | None = None,
                 send_usage: bool = True, default: Behavior | None = None,
                 owned_by: str = "vllm") -> None:
        super().__init__(default=default)
        self.models = list(models if models is not None else ["meta-llama/Llama-3.2-3B-Instruct"])
        self.api_key = api_key
        self.send_usage = send_usage  # False: a server that ignores include_usage
        self.owned_by = owned_by
        self._n = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)

    @staticmethod
    def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def error_response(self, status: int, message: str) -> web.Response:
        type_ = {400: "invalid_request_error", 401: "invalid_request_error",
                 404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
        return web.json_response(self.error_body(message, type_, None), status=status)

    def _authorized(self, request: web.Request) -> bool:
        sent = request.headers.get("Authorization")
        return self.api_key is None or sent == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        return web.json_response(self.error_body(
            "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"), status=401)

    async def list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1_735_000_000, "owned_by": self.owned_by}
            for m in self.models]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=False)

    async def _generation(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(self.error_body(
                "We could not parse the JSON body of your request.", "invalid_request_error",
                None), status=400)
        if not isinstance(body, dict):
            return self.error_response(400, "the body must be an object")
        model = body.get("model")
        if model not in self.models:
            return web.json_response(self.error_body(
                f"The model `{model}` does not exist.", "invalid_request_error",
                "model_not_found", "model"), status=404)
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return web.json_response(self.error_body(
                    "'messages' must be a non-empty array", "invalid_request_error", None,
                    "messages"), status=400)
            text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return web.json_response(self.error_body(
                    "'prompt' must be a string", "invalid_request_error", None, "prompt"),
                    status=400)
            text = prompt
        record = self.new_record(request.path, body, model, text)
        behavior = self.behavior_for(record)
        if behavior.status is not None:
            return self.error_response(behavior.status, behavior.status_message)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        limit = limit if isinstance(limit, int) and limit > 0 else None
        self._n += 1
        ident = ("chatcmpl-" if chat else "cmpl-") + f"{self._n:08d}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) \
            and self.send_usage

        def usage() -> dict[str, int]:
            return {"prompt_tokens": record.prompt_tokens,
                    "completion_tokens": record.completion_tokens,
                    "total_tokens": record.prompt_tokens + record.completion_tokens}

        def chunk(choice: dict[str, Any] | None) -> dict[str, Any]:
            out: dict[str, Any] = {"id": ident, "object": obj, "created": created, "model": model,
                                   "system_fingerprint": None,
                                   "choices": [] if choice is None else [choice]}
            if include_usage:
                out["usage"] = None
            return out

        def content(piece: str, finish: str | None = None) -> dict[str, Any]:
            if chat:
                delta = {"content": piece} if finish is None else {}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}

        def event(data: dict[str, Any] | str) -> bytes:
            text_ = data if isinstance(data, str) else json.dumps(data)
            return f"data: {text_}\n\n".encode()

        if not body.get("stream"):
            n = behavior.tokens if limit is None else min(behavior.tokens, limit)
            record.completion_tokens, record.tokens_sent, record.completed = n, n, True
            record.output = "".join(token_text(text, i) for i in range(n))
            finish = "length" if n < behavior.tokens else "stop"
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant",
                                                              "content": record.output},
                                       "logprobs": None, "finish_reason": finish} if chat else
                                      {"index": 0, "text": record.output, "logprobs": None,
                                       "finish_reason": finish})
            self.changed()
            return web.json_response({"id": ident, "object": obj.removesuffix(".chunk"),
                                      "created": created, "model": model, "choices": [choice],
                                      "usage": usage()})

        def finals(reason: str, _eval_s: float) -> list[bytes]:
            out = [event(chunk(content("", reason)))]
            if include_usage:
                last = chunk(None)
                last["usage"] = usage()
                out.append(event(last))
            out.append(event("[DONE]"))
            return out

        def first_then(piece: str) -> bytes:
            data = b""
            if chat and record.tokens_sent == 0:  # the role comes first, on its own
                data = event(chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}))
            return data + event(chunk(content(piece)))

        def error(message: str) -> bytes:
            return event(self.error_body(message, "server_error", None)) + event("[DONE]")

        return await self.stream_tokens(
            request, record, behavior, limit, "text/event-stream; charset=utf-8",
            token_chunk=first_then, final_chunks=finals, error_chunk=error)
