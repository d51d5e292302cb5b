"""A reference Ollama (for tests and the demo) over real loopback HTTP, faithful to its API.

Routes: ``GET /`` ("Ollama is running"), ``GET /api/version``, ``GET /api/tags``,
``POST /api/show``, ``GET /api/ps``, ``POST /api/pull``, ``POST /api/generate``,
``POST /api/chat``. Streams are NDJSON (``application/x-ndjson``), one object a line; the
final one has ``done: true``, ``done_reason`` and the counts and durations (nanoseconds:
``total_duration``, ``load_duration``, ``prompt_eval_count``, ``prompt_eval_duration``,
``eval_count``, ``eval_duration``). Errors are ``{"error": "..."}`` with 400/404/500; an
error after the stream began is one more line ``{"error": "..."}`` (status stays 200).
Names resolve like Ollama's: no tag means ``:latest``, compared case-insensitively.

Scripting: ``default`` (a ``Behavior``) and ``when(...)`` rules pick, per request, how
many tokens are sent, how fast, and whether the stream hangs, errors or drops. Every
generation is recorded (``records``) with the counts it reported and whether the client
disconnected mid-stream and when; ``wait_for`` waits for a condition on the records.
The shared machinery (``FakeLLMServer``, ``Behavior``, ``StreamRecord``) is also what the
fake OpenAI-compatible server is built on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs",
         "far", "away", "into", "green", "hills", "while", "birds", "sing", "softly", "today")


@dataclass
class Behavior:
    """How the fake answers one generation request."""

    tokens: int = 8  # tokens in a full reply (fewer when the request caps them)
    token_delay_s: float = 0.0  # between tokens
    first_token_delay_s: float = 0.0  # before the first token (model load, prompt eval)
    hang_after: int | None = None  # send this many tokens, then nothing until the client leaves
    error_after: int | None = None  # send this many tokens, then an error object (status 200)
    error_message: str = "an error was encountered while running the model"
    drop_after: int | None = None  # send this many tokens, then cut the connection
    status: int | None = None  # answer with this HTTP status and an error body, no stream
    status_message: str = "the model failed to generate a response"


@dataclass
class StreamRecord:
    """One generation request as the fake saw it."""

    id: int
    path: str
    body: dict[str, Any]
    model: str
    prompt_text: str
    started_at: float
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens the fake reported (or would have) for the reply
    tokens_sent: int = 0
    output: str = ""
    completed: bool = False  # the final chunk was written
    disconnected_at: float | None = None  # the client went away mid-stream (monotonic)
    server_stopped: bool = False

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.body.get("options") or {})


def token_text(seed: str, i: int) -> str:
    """The i-th token of the reply to ``seed``: deterministic, a word and a space."""
    h = int.from_bytes(hashlib.sha256(f"{seed}|{i}".encode()).digest()[:4], "big")
    return WORDS[h % len(WORDS)] + " "


def count_prompt_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word, plus BOS."""
    return len(text.split()) + 1


def ollama_key(name: str) -> str:
    last = name.strip().rsplit("/", 1)[-1]
    return (name.strip() + ("" if ":" in last else ":latest")).lower()


class FakeLLMServer:
    """An aiohttp app on 127.0.0.1 with scriptable generation and disconnect recording."""

    def __init__(self, *, default: Behavior | None = None,
                 keep_records: int | None = None) -> None:
        """``keep_records``: how many of the newest generations ``records`` keeps (None:
        all of them, as tests want; a long-running demo keeps a few)."""
        self.default = default or Behavior()
        self.rules: list[tuple[Callable[[StreamRecord], bool], Behavior]] = []
        self.records: deque[StreamRecord] = deque(maxlen=keep_records)
        self.generations = 0
        self.calls: Counter[str] = Counter()  # "METHOD /path" -> count
        self.fail_all: int | None = None  # answer every request with this status (error mode)
        self.port = 0
        self.host = "127.0.0.1"
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._stopping = False
        self._active: set[asyncio.Task[Any]] = set()
        self.max_active = 0  # most generations streaming at once

    # --- lifecycle -----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:  # pragma: no cover - per subclass
        raise NotImplementedError

    async def start(self, port: int | None = None) -> FakeLLMServer:
        """Listen (again); ``port`` defaults to the previous one (0 the first time)."""
        app = web.Application(middlewares=[self._middleware])
        self.routes(app)
        # handler_cancellation: a client that goes away cancels its handler at once,
        # which is how a disconnect mid-stream is noticed even while nothing is written.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port if port is None else port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = int(sockets[0].getsockname()[1])
        self._stopping = False
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (the backend goes down)."""
        if self._runner is None:
            return
        self._stopping = True
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- scripting -----------------------------------------------------------------------

    def when(self, *, prompt_contains: str | None = None, model: str | None = None,
             **behavior: Any) -> Behavior:
        """A rule: requests whose prompt text contains ``prompt_contains`` (and/or for
        ``model``) get ``Behavior(**behavior)``. Later rules win."""
        chosen = Behavior(**behavior)

        def match(record: StreamRecord) -> bool:
            if prompt_contains is not None and prompt_contains not in record.prompt_text:
                return False
            return model is None or record.model == model

        self.rules.insert(0, (match, chosen))
        return chosen

    def behavior_for(self, record: StreamRecord) -> Behavior:
        return next((b for match, b in self.rules if match(record)), self.default)

    # --- observing -----------------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); its value."""
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await self._changed.wait()
        return value

    def record_for(self, text: str) -> StreamRecord | None:
        """The last generation whose prompt text contains ``text``."""
        return next((r for r in reversed(self.records) if text in r.prompt_text), None)

    def generation_calls(self) -> int:
        return sum(n for k, n in self.calls.items() if k.split()[1] in self.generation_paths)

    generation_paths: frozenset[str] = frozenset()

    # --- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls[f"{request.method} {request.path}"] += 1
        self.changed()
        if self.fail_all is not None:
            return self.error_response(self.fail_all, "service unavailable")
        response: web.StreamResponse = await handler(request)
        return response

    def error_response(self, status: int, message: str) -> web.Response:  # pragma: no cover
        raise NotImplementedError

    def new_record(self, path: str, body: dict[str, Any], model: str, text: str) -> StreamRecord:
        self.generations += 1
        record = StreamRecord(id=self.generations, path=path, body=body, model=model,
                              prompt_text=text, started_at=time.monotonic(),
                              prompt_tokens=count_prompt_tokens(text))
        self.records.append(record)
        self.changed()
        return record

    async def stream_tokens(self, request: web.Request, record: StreamRecord, behavior: Behavior,
                            limit: int | None, content_type: str,
                            token_chunk: Callable[[str], bytes],
                            final_chunks: Callable[[str, float], list[bytes]],
                            error_chunk: Callable[[str], bytes]) -> web.StreamResponse:
        """Write the reply token by token; record what was sent and any disconnect."""
        n = behavior.tokens if limit is None else min(behavior.tokens, limit)
        finish = "length" if limit is not None and limit < behavior.tokens else "stop"
        record.completion_tokens = n
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        self.max_active = max(self.max_active, len(self._active))
        try:
            await response.prepare(request)
            if behavior.first_token_delay_s:
                await asyncio.sleep(behavior.first_token_delay_s)
            first = time.monotonic()
            for i in range(n):
                if behavior.hang_after is not None and i >= behavior.hang_after:
                    await asyncio.Event().wait()  # hung: only the client leaving ends this
                if behavior.error_after is not None and i >= behavior.error_after:
                    await response.write(error_chunk(behavior.error_message))
                    await response.write_eof()
                    return response
                if behavior.drop_after is not None and i >= behavior.drop_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if i and behavior.token_delay_s:
                    await asyncio.sleep(behavior.token_delay_s)
                piece = token_text(record.prompt_text, i)
                await response.write(token_chunk(piece))
                record.tokens_sent += 1
                record.output += piece
                self.changed()
            for chunk in final_chunks(finish, time.monotonic() - first):
                await response.write(chunk)
            await response.write_eof()
            record.completed = True
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected_at = time.monotonic()
            record.server_stopped = self._stopping
            raise
        finally:
            self._active.discard(task)
            self.changed()


class FakeOllama(FakeLLMServer):
    """Ollama's API; ``models`` are installed, ``pullable`` can be pulled."""

    generation_paths = frozenset({"/api/generate", "/api/chat"})

    def __init__(self, models: list[str] | None = None, *, pullable: list[str] | None = None,
                 default: Behavior | None = None, vram: bool = True,
                 version: str = "0.9.6", keep_records: int | None = None) -> None:
        super().__init__(default=default, keep_records=keep_records)
        self.models: list[str] = list(models if models is not None else ["llama3.2:latest"])
        self.pullable = set(pullable or [])
        self.vram = vram
        self.version = version
        self.loaded: dict[str, float] = {}  # model -> when it was last used

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/api/version", self.api_version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/api/pull", self.pull)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.chat)

    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def find(self, name: str) -> str | None:
        key = ollama_key(name)
        return next((m for m in self.models if ollama_key(m) == key), None)

    @staticmethod
    def _entry(name: str) -> dict[str, Any]:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {"name": name, "model": name, "modified_at": "2025-05-01T10:00:00.000000+00:00",
                "size": 2019393189, "digest": digest,
                "details": {"parent_model": "", "format": "gguf", "family": "llama",
                            "families": ["llama"], "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M"}}

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def api_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._entry(m) for m in self.models]})

    async def ps(self, request: web.Request) -> web.Response:
        models = []
        for name in self.loaded:
            entry = self._entry(name)
            entry.update(expires_at="2099-01-01T00:00:00Z",
                         size_vram=entry["size"] if self.vram else 0)
            models.append(entry)
        return web.json_response({"models": models})

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        if not raw:
            return self.error_response(400, "missing request body")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return self.error_response(400, f"invalid character: {exc}")
        if not isinstance(body, dict):
            return self.error_response(400, "json: cannot unmarshal into Go value")
        return body

    async def show(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        requested = str(body.get("model") or body.get("name") or "")
        name = self.find(requested)
        if name is None:
            return self.error_response(404, f"model '{requested}' not found")
        entry = self._entry(name)
        return web.json_response({"modelfile": f"FROM {name}\n", "parameters": "",
                                  "template": "{{ .Prompt }}", "details": entry["details"],
                                  "model_info": {"general.architecture": "llama"},
                                  "capabilities": ["completion"],
                                  "modified_at": entry["modified_at"]})

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        requested = str(body.get("model") or body.get("name") or "")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def line(obj: dict[str, Any]) -> None:
            await response.write(json.dumps(obj).encode() + b"\n")

        await line({"status": "pulling manifest"})
        known = next((p for p in self.pullable if ollama_key(p) == ollama_key(requested)), None)
        if known is None:
            await line({"error": "pull model manifest: file does not exist"})
        else:
            digest = "sha256:" + hashlib.sha256(known.encode()).hexdigest()
            for done in (0, 1 << 20, 2 << 20):
                await line({"status": f"pulling {digest[7:19]}", "digest": digest,
                            "total": 2 << 20, "completed": done})
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                await line({"status": status})
            name = ollama_key(known)
            if self.find(name) is None:
                self.models.append(name)
        await response.write_eof()
        self.changed()
        return response

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=True)

    async def _generation(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        requested = body.get("model")
        if not isinstance(requested, str) or not requested:
            return self.error_response(400, "model is required")
        name = self.find(requested)
        if name is None:
            return self.error_response(404, f"model '{requested}' not found")
        if chat:
            messages = body.get("messages") or []
            if not isinstance(messages, list):
                return self.error_response(400, "invalid messages")
            text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        else:
            text = "\n".join(t for t in (body.get("system"), body.get("prompt"))
                             if isinstance(t, str) and t)
        created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if not text and not (chat and body.get("messages")):  # empty prompt: load the model only
            self.loaded[name] = time.monotonic()
            done: dict[str, Any] = {"model": requested, "created_at": created, "done": True,
                                    "done_reason": "load"}
            done["message" if chat else "response"] = ({"role": "assistant", "content": ""}
                                                       if chat else "")
            return web.json_response(done)
        record = self.new_record(request.path, body, name, text)
        behavior = self.behavior_for(record)
        if behavior.status is not None:
            return self.error_response(behavior.status, behavior.status_message)
        self.loaded[name] = time.monotonic()
        given = body.get("options")
        options: dict[str, Any] = given if isinstance(given, dict) else {}
        limit = options.get("num_predict")
        limit = limit if isinstance(limit, int) and limit >= 0 else None

        def piece(content: str) -> dict[str, Any]:
            if chat:
                return {"model": requested, "created_at": created,
                        "message": {"role": "assistant", "content": content}, "done": False}
            return {"model": requested, "created_at": created, "response": content, "done": False}

        def final(reason: str, eval_s: float) -> dict[str, Any]:
            chunk = piece("")
            eval_ns = max(int(eval_s * 1e9), 1)
            load_ns = int(behavior.first_token_delay_s * 1e9) + 1_000_000
            chunk.update(done=True, done_reason=reason,
                         total_duration=load_ns + eval_ns + 2_000_000, load_duration=load_ns,
                         prompt_eval_count=record.prompt_tokens,
                         prompt_eval_duration=2_000_000, eval_count=record.completion_tokens,
                         eval_duration=eval_ns)
            if not chat:
                chunk["context"] = list(range(record.prompt_tokens + record.completion_tokens))
            return chunk

        if body.get("stream", True) is False:
            n = behavior.tokens if limit is None else min(behavior.tokens, limit)
            record.completion_tokens = n
            record.output = "".join(token_text(text, i) for i in range(n))
            record.tokens_sent, record.completed = n, True
            whole = final("length" if n < behavior.tokens else "stop", 0.001 * n)
            if chat:
                whole["message"]["content"] = record.output
            else:
                whole["response"] = record.output
            self.changed()
            return web.json_response(whole)

        def line(obj: dict[str, Any]) -> bytes:
            return json.dumps(obj).encode() + b"\n"

        return await self.stream_tokens(
            request, record, behavior, limit, "application/x-ndjson",
            token_chunk=lambda text_: line(piece(text_)),
            final_chunks=lambda reason, eval_s: [line(final(reason, eval_s))],
            error_chunk=lambda message: line({"error": message}))
