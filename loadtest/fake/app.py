"""The fake provider's ASGI app: the ``/v1`` routes, fault injection, and the ``/_fake/`` API.

A plain ASGI app (no framework) so that it costs as little as possible: it is the baseline the
gateway's overhead is measured against. What it answers is decided in ``answers``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from . import wire
from .answers import (
    ChatAnswer,
    RequestError,
    TextAnswer,
    chat_answer,
    completion_answer,
    prompts,
    split,
    stop_sequences,
    token_limit,
)
from .ratelimit import RollingLimit

Scope = dict[str, Any]
MODELS = ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5",
          "text-embedding-3-small"]
FAULT_KINDS = {"status", "hang", "drop", "truncate", "malformed", "trickle"}
USAGE_SHAPES = ("plain", "openai", "deepseek", "anthropic")
RECEIVED_MAX = 50
MAX_DIMENSIONS = 3072
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


ROUTES = {"/v1/chat/completions": Endpoint.CHAT, "/v1/completions": Endpoint.COMPLETIONS,
          "/v1/embeddings": Endpoint.EMBEDDINGS}


@dataclass
class FakeConfig:
    latency_ms: float = 0.0
    chunks: int = 8
    chunk_delay_ms: float = 0.0
    content_chars: int = 400
    api_key: str | None = None
    name: str = "fake"
    rpm_limit: int | None = None
    usage_shapes: dict[str, str] = field(default_factory=dict)  # model or "*" -> USAGE_SHAPES


@dataclass
class Fault:
    model: str
    kind: str
    status: int = 503
    retry_after: str | None = None
    message: str | None = None
    times: int | None = None
    rate: float = 1.0
    after_chunks: int = 1
    delay_ms: float = 2000.0
    endpoint: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))


@dataclass(frozen=True, slots=True)
class Completions:
    """A legacy completion's answers, one per prompt."""

    answers: list[TextAnswer]
    prompt_tokens: int


Answer = ChatAnswer | Completions | None


class FakeProvider:
    def __init__(self, config: FakeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.start_config = config
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._configure(replace(self.start_config))
        self.faults: list[Fault] = []
        self.requests: dict[str, int] = {}
        self.total = 0
        self.embedding_calls = 0
        self.embedding_batch_sizes: list[int] = []
        self.in_flight = 0
        self.cancelled = 0
        self.rate_limited = 0
        self.last_authorization: str | None = None
        self.cookies_received = 0  # errors set a cookie; a client that sends it back shares state
        self.last_traceparent: str | None = None
        self.received: deque[dict[str, Any]] = deque(maxlen=RECEIVED_MAX)
        self.limiter = RollingLimit()
        self.counter = 0

    def _configure(self, config: FakeConfig) -> None:
        self.config = config
        self.identity = [(b"x-fake-provider", config.name.encode())]

    # --- ASGI entry point -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        body = await wire.read_body(receive)
        headers = self.identity
        if path.startswith("/_fake/"):
            await self._control(path, method, body, send)
            return
        if not path.startswith("/v1/"):
            await wire.error(send, 404, f"Unknown route {method} {path}", "unknown_url", headers)
            return
        request_headers = dict(scope["headers"])
        auth = request_headers.get(b"authorization", b"").decode()
        self.last_authorization = auth
        self.cookies_received += b"cookie" in request_headers
        self.last_traceparent = request_headers.get(b"traceparent", b"").decode() or None
        request: Any = None
        if body:
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                request = body.decode(errors="replace")
        self.received.append({"path": path, "body": request, "authorization": auth[-4:] or None,
                              "http_version": scope.get("http_version")})
        if self.config.api_key and auth != f"Bearer {self.config.api_key}":
            await wire.error(send, 401, "Incorrect API key provided.", "invalid_api_key", headers)
            return
        if method == "GET" and path == "/v1/models":
            await wire.json(send, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": self.config.name}
                for m in MODELS]}, headers)
            return
        endpoint = ROUTES.get(path)
        if method != "POST" or endpoint is None:
            await wire.error(send, 404, f"Unknown route {method} {path}", "unknown_url", headers)
            return
        if not isinstance(request, dict):
            await wire.error(send, 400, "Request body is not a JSON object.", "invalid_json",
                             headers)
            return
        model = str(request.get("model", ""))
        self.requests[model] = self.requests.get(model, 0) + 1
        self.total += 1
        limit = self.config.rpm_limit
        if limit is not None:
            decision = self.limiter.check(limit, self.clock())
            headers = headers + decision.headers
            if not decision.allowed:
                self.rate_limited += 1
                await wire.error(send, 429, f"Rate limit reached for requests per min (RPM): "
                                 f"Limit {limit}. Please try again in {decision.retry_after}s.",
                                 "rate_limit_exceeded", headers, retry_after=decision.retry_after)
                return
        shape = request_headers.get(b"x-fake-usage-shape", b"").decode() or \
            self.config.usage_shapes.get(model) or self.config.usage_shapes.get("*") or "plain"
        request = {**request, "_usage_shape": shape if shape in USAGE_SHAPES else "plain"}
        self.in_flight += 1
        try:
            await self._serve(endpoint, request, model, send, receive, headers)
        finally:
            self.in_flight -= 1

    async def _serve(self, endpoint: Endpoint, request: dict[str, Any], model: str, send: Any,
                     receive: Any, headers: wire.Headers) -> None:
        try:
            answer = self._answer(endpoint, request)
        except RequestError as exc:
            await wire.error(send, 400, exc.message, exc.code, headers, param=exc.param)
            return
        fault = self._fault_for(model, endpoint)
        if fault is not None and fault.kind == "hang":
            await self._hang(receive)
            return
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if fault is not None and fault.kind == "status":
            await wire.error(send, fault.status, fault.message or f"Injected HTTP {fault.status}",
                             "injected_fault", headers, retry_after=fault.retry_after)
        elif endpoint is Endpoint.EMBEDDINGS:
            await self._embeddings(request, send, fault, headers)
        elif request.get("stream"):
            events, paced = self._events(request, answer)
            await self._stream(events, paced, send, receive, fault, headers)
        else:
            await self._whole(self._body(request, answer), send, fault, headers)

    def _answer(self, endpoint: Endpoint, request: dict[str, Any]) -> Answer:
        if endpoint is Endpoint.CHAT:
            return chat_answer(request, self.config.content_chars)
        if endpoint is Endpoint.COMPLETIONS:
            texts = prompts(request)
            limit = token_limit(request, COMPLETIONS_DEFAULT_MAX_TOKENS)
            stops = stop_sequences(request)
            return Completions(
                [completion_answer(p, self.config.content_chars, limit, stops) for p in texts],
                sum(len(p) // 4 + 1 for p in texts))
        return None

    async def _hang(self, receive: Any) -> None:
        """Never answer; count the request as cancelled once the client goes away."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.cancelled += 1

    def _fault_for(self, model: str, endpoint: str) -> Fault | None:
        candidates = [f for f in self.faults if f.model == model] + \
                     [f for f in self.faults if f.model == "*"]
        for fault in candidates:
            if fault.endpoint not in (None, endpoint):
                continue
            if fault.rate < 1.0 and fault.rng.random() >= fault.rate:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def _ident(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-fake-{self.counter}"

    # --- whole answers ------------------------------------------------------------------------

    def _body(self, request: dict[str, Any], answer: Answer) -> bytes:
        created, model = int(time.time()), request.get("model")
        if isinstance(answer, Completions):
            choices = [{"text": a.text, "index": i, "logprobs": None, "finish_reason": a.finish}
                       for i, a in enumerate(answer.answers)]
            completion = sum(a.completion_tokens for a in answer.answers)
            return orjson.dumps({
                "id": self._ident("cmpl"), "object": "text_completion", "created": created,
                "model": model, "system_fingerprint": "fake", "x_fake_provider": self.config.name,
                "choices": choices, "usage": _usage(answer.prompt_tokens, completion)})
        assert isinstance(answer, ChatAnswer)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in answer.tool_calls]
        return orjson.dumps({
            "id": self._ident("chatcmpl"), "object": "chat.completion", "created": created,
            "model": model, "system_fingerprint": "fake", "x_fake_provider": self.config.name,
            "choices": [{"index": 0, "message": message, "finish_reason": answer.finish}],
            "usage": _chat_usage(answer.prompt_tokens, answer.completion_tokens,
                                 request["_usage_shape"])})

    async def _whole(self, body: bytes, send: Any, fault: Fault | None,
                     headers: wire.Headers) -> None:
        if fault is not None and fault.kind == "trickle":
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.kind == "drop":
            await wire.drop(send, headers)
        if fault is not None and fault.kind == "malformed":
            await wire.raw(send, 200, b'{"id": "chatcmpl-broken", "choices": [',
                           b"application/json", headers)
            return
        if fault is not None and fault.kind == "truncate":
            body = body[: len(body) // 2]
        await wire.raw(send, 200, body, b"application/json", headers)

    # --- streams ------------------------------------------------------------------------------

    def _events(self, request: dict[str, Any], answer: Answer) -> tuple[list[bytes], int]:
        """The stream's SSE events, and how many of them are paced (all but the usage chunk)."""
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        n = max(1, self.config.chunks)
        if isinstance(answer, Completions):
            base = {"id": self._ident("cmpl"), "object": "text_completion",
                    "created": int(time.time()), "model": request.get("model"),
                    "system_fingerprint": "fake"}
            choices = [[{"text": piece, "index": i, "logprobs": None,
                         "finish_reason": a.finish if j == n - 1 else None}]
                       for i, a in enumerate(answer.answers) for j, piece in enumerate(
                           _even(a.text, n))]
            usage = _usage(answer.prompt_tokens, sum(a.completion_tokens for a in answer.answers))
        else:
            assert isinstance(answer, ChatAnswer)
            base = {"id": self._ident("chatcmpl"), "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": request.get("model"),
                    "system_fingerprint": "fake"}
            choices = [[{"index": 0, "delta": delta, "finish_reason": finish}]
                       for delta, finish in _chat_deltas(answer, n)]
            usage = _chat_usage(answer.prompt_tokens, answer.completion_tokens,
                                request["_usage_shape"])
        events = []
        for choice in choices:
            chunk: dict[str, Any] = base | {"choices": choice}
            if include_usage:
                chunk["usage"] = None
            events.append(wire.event(chunk))
        paced = len(events)
        if include_usage:
            events.append(wire.event(base | {"choices": [], "usage": usage}))
        return events, paced

    async def _stream(self, events: list[bytes], paced: int, send: Any, receive: Any,
                      fault: Fault | None, headers: wire.Headers) -> None:
        # A slow stream notices its client leaving (and counts it), like a real provider would.
        gone = asyncio.ensure_future(self._hang(receive)) if fault is not None and \
            fault.kind == "trickle" else None
        try:
            await self._send_events(events, paced, send, fault, gone, headers)
        finally:
            if gone is not None:
                gone.cancel()

    async def _send_events(self, events: list[bytes], paced: int, send: Any, fault: Fault | None,
                           gone: asyncio.Future[None] | None, headers: wire.Headers) -> None:
        delay = self.config.chunk_delay_ms / 1000
        if fault is not None and fault.kind == "trickle":
            delay = fault.delay_ms / 1000
        await wire.start_stream(send, headers)
        if fault is not None and fault.kind == "malformed":
            await wire.chunk(send, b"data: {not json\n\n")
            await wire.chunk(send, wire.DONE, more=False)
            return
        cut = fault is not None and fault.kind in ("drop", "truncate")
        for i, data in enumerate(events):
            if cut and fault is not None and fault.after_chunks <= i < paced:
                if fault.kind == "drop":
                    raise wire.Dropped()
                await wire.chunk(send, b"", more=False)
                return
            if 0 < i < paced and delay > 0:
                await asyncio.sleep(delay)
                if gone is not None and gone.done():
                    return  # the client left (``_hang`` counted it)
            await wire.chunk(send, data)
        await wire.chunk(send, wire.DONE, more=False)

    # --- embeddings ---------------------------------------------------------------------------

    async def _embeddings(self, request: dict[str, Any], send: Any, fault: Fault | None,
                          headers: wire.Headers) -> None:
        if fault is not None and fault.kind == "drop":
            await wire.drop(send, headers)
        if fault is not None and fault.kind == "malformed":
            await wire.raw(send, 200, b'{"object": "list", "data": [', b"application/json",
                           headers)
            return
        raw = request.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [str(raw)]
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else str(x) for x in raw]
        else:
            await wire.error(send, 400, "'input' must be a string or a non-empty list.",
                             "invalid_value", headers, param="input")
            return
        dims = request.get("dimensions") if isinstance(request.get("dimensions"), int) else 384
        if not 1 <= dims <= MAX_DIMENSIONS:  # as OpenAI's largest embedding model refuses
            await wire.error(send, 400, f"'dimensions' must be between 1 and {MAX_DIMENSIONS}.",
                             "invalid_value", headers, param="dimensions")
            return
        self.embedding_calls += 1
        self.embedding_batch_sizes.append(len(inputs))
        as_base64 = request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dims)
            value: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
                          if as_base64 else vector)
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(len(t) // 4 + 1 for t in inputs)
        await wire.json(send, 200, {"object": "list", "data": data, "model": request.get("model"),
                                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                        headers)

    # --- control API --------------------------------------------------------------------------

    async def _control(self, path: str, method: str, body: bytes, send: Any) -> None:
        headers = self.identity
        try:
            spec = orjson.loads(body) if body else {}
            if path == "/_fake/faults" and method == "POST":
                if spec.get("kind") not in FAULT_KINDS:
                    raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
                seed = spec.pop("seed", 0)
                self.faults.append(Fault(rng=random.Random(seed), **spec))
            elif path == "/_fake/faults" and method == "DELETE":
                self.faults.clear()
            elif path == "/_fake/config" and method == "POST":
                self._configure(_checked(replace(self.config, **spec)))
            elif path == "/_fake/reset" and method == "POST":
                self.reset()
            elif path == "/_fake/stats" and method == "GET":
                await wire.json(send, 200, self._stats(), self.identity)
                return
            elif path == "/_fake/requests" and method == "GET":
                await wire.json(send, 200, {"requests": list(self.received)}, headers)
                return
            else:
                await wire.error(send, 404, f"Unknown control route {method} {path}",
                                 "unknown_url", headers)
                return
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            await wire.error(send, 400, f"Bad control request: {exc}", "bad_fault", headers)
            return
        await wire.json(send, 200, {"ok": True}, self.identity)

    def _stats(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "requests": self.requests, "total": self.total,
            "embedding_calls": self.embedding_calls,
            "embedding_batch_sizes": self.embedding_batch_sizes,
            "in_flight": self.in_flight, "cancelled": self.cancelled,
            "rate_limited": self.rate_limited,
            "last_authorization": self.last_authorization,
            "cookies_received": self.cookies_received,
            "last_traceparent": self.last_traceparent,
            "config": asdict(self.config) | {"api_key": None},
            "faults": len(self.faults)}


def _checked(config: FakeConfig) -> FakeConfig:
    limit = config.rpm_limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError("rpm_limit must be an integer >= 1, or null for no limit")
    if not isinstance(config.name, str) or not config.name:
        raise ValueError("name must be a non-empty string")
    shapes = config.usage_shapes
    if not isinstance(shapes, dict) or any(v not in USAGE_SHAPES for v in shapes.values()):
        raise ValueError(f"usage_shapes maps a model (or '*') to one of {', '.join(USAGE_SHAPES)}")
    return config


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _chat_usage(prompt: int, completion: int, shape: str = "plain") -> dict[str, Any]:
    """Chat usage in one provider's shape. ``plain``: cached and reasoning counts of 0. The
    others report half the prompt (rounded down) as read from the provider's prompt cache and a
    quarter of the completion as reasoning: ``openai`` in ``prompt_tokens_details.cached_tokens``;
    ``deepseek`` in ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``; ``anthropic`` in
    ``cache_read_input_tokens`` plus a quarter of the prompt in ``cache_creation_input_tokens``
    (``prompt_tokens`` counting both, as OpenAI-compatible aggregators relay Claude's usage)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    cached, reasoning = (0, 0) if shape == "plain" else (prompt // 2, completion // 4)
    if shape == "deepseek":
        usage |= {"prompt_cache_hit_tokens": cached, "prompt_cache_miss_tokens": prompt - cached}
    elif shape == "anthropic":
        usage |= {"cache_read_input_tokens": cached, "cache_creation_input_tokens": prompt // 4}
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _even(text: str, n: int) -> list[str]:
    """Exactly ``n`` pieces (the last ones empty when ``text`` is short)."""
    step = -(-len(text) // n)
    return [text[i * step:(i + 1) * step] for i in range(n)]


def _chat_deltas(answer: ChatAnswer, n: int) -> list[tuple[dict[str, Any], str | None]]:
    """Chat chunks' deltas as OpenAI streams them. Text: ``n`` pieces, the role on the first,
    ``finish_reason`` on the last. Tool calls: per call, a head (``index``, ``id``, ``type``,
    name, ``arguments: ""``), then the arguments in ``max(3, n)`` pieces carrying only ``index``
    and ``function.arguments``; then an empty delta with ``finish_reason: "tool_calls"``."""
    if not answer.tool_calls:
        pieces = _even(answer.content or "", n)
        return [({"role": "assistant", "content": piece} if i == 0 else {"content": piece},
                 answer.finish if i == n - 1 else None) for i, piece in enumerate(pieces)]
    deltas: list[tuple[dict[str, Any], str | None]] = []
    for index, call in enumerate(answer.tool_calls):
        head = {"index": index, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}
        deltas.append(({"role": "assistant", "content": None, "tool_calls": [head]}
                       if index == 0 else {"tool_calls": [head]}, None))
        deltas.extend(({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
                      for piece in split(call.arguments, max(3, n)))
    deltas.append(({}, answer.finish))
    return deltas


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``: the same input always maps to the same vector."""
    digest = hashlib.sha256(text.encode()).digest()
    rng = random.Random(digest)
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def create_app(config: FakeConfig | None = None) -> FakeProvider:
    return FakeProvider(config or FakeConfig())
