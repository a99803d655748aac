"""A fast fake OpenAI-compatible provider with run-time fault injection.

Every test, benchmark and the demo use it in place of HolySheep:

    python -m loadtest.fake_provider --host 127.0.0.1 --port 8001 [--latency-ms 0] [--chunks 8]
        [--chunk-delay-ms 0] [--content-chars 400] [--api-key KEY]

A plain ASGI app (no framework) so that it costs as little as possible: it is the baseline the
gateway's overhead is measured against. Faults are switched at run time through ``/_fake/``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import struct
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
MODELS = ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5",
          "text-embedding-3-small"]
FAULT_KINDS = {"status", "hang", "drop", "truncate", "malformed", "trickle"}


@dataclass
class FakeConfig:
    latency_ms: float = 0.0
    chunks: int = 8
    chunk_delay_ms: float = 0.0
    content_chars: int = 400
    api_key: str | None = None


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


class Dropped(Exception):
    """Raised inside the app to make uvicorn abort the connection without a clean end."""


class FakeProvider:
    def __init__(self, config: FakeConfig) -> None:
        self.start_config = config
        self.reset()

    def reset(self) -> None:
        self.config = replace(self.start_config)
        self.faults: list[Fault] = []
        self.requests: dict[str, int] = {}
        self.total = 0
        self.embedding_calls = 0
        self.embedding_batch_sizes: list[int] = []
        self.in_flight = 0
        self.cancelled = 0
        self.last_authorization: str | None = None
        self.cookies_received = 0  # errors set a cookie; a client that sends it back shares state
        self.last_traceparent: str | None = None
        self.counter = 0

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
        body = await _read_body(receive)
        if path.startswith("/_fake/"):
            await self._control(path, method, body, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode()
        if path.startswith("/v1/"):
            self.last_authorization = auth
            self.cookies_received += b"cookie" in headers
            self.last_traceparent = headers.get(b"traceparent", b"").decode() or None
            if self.config.api_key and auth != f"Bearer {self.config.api_key}":
                await _error(send, 401, "Incorrect API key provided.", "invalid_api_key")
                return
        if method == "GET" and path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]})
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/embeddings"):
            await _error(send, 404, f"Unknown route {method} {path}", "unknown_url")
            return
        try:
            request = orjson.loads(body)
            assert isinstance(request, dict)
        except (orjson.JSONDecodeError, AssertionError):
            await _error(send, 400, "Request body is not a JSON object.", "invalid_json")
            return
        model = str(request.get("model", ""))
        endpoint = "chat" if path.endswith("completions") else "embeddings"
        self.requests[model] = self.requests.get(model, 0) + 1
        self.total += 1
        self.in_flight += 1
        try:
            fault = self._fault_for(model, endpoint)
            if fault is not None and fault.kind == "hang":
                await self._hang(receive)
                return
            if self.config.latency_ms > 0:
                await asyncio.sleep(self.config.latency_ms / 1000)
            if fault is not None and fault.kind == "status":
                await _error(send, fault.status, fault.message or f"Injected HTTP {fault.status}",
                             "injected_fault", retry_after=fault.retry_after)
            elif endpoint == "embeddings":
                await self._embeddings(request, send, fault)
            elif request.get("stream"):
                await self._stream(request, send, fault, receive)
            else:
                await self._complete(request, send, fault)
        finally:
            self.in_flight -= 1

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

    # --- chat ---------------------------------------------------------------------------------

    def _answer(self, request: dict[str, Any]) -> tuple[str, str, int, int]:
        messages = request.get("messages") or []
        texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
        last_user = next((_text(m.get("content")) for m in reversed(messages)
                          if isinstance(m, dict) and m.get("role") == "user"), "")
        prompt_tokens = sum(len(t) // 4 + 4 for t in texts)
        seed = f"Fake answer to: {last_user}. "
        size = self.config.content_chars
        content = (seed * (size // max(1, len(seed)) + 1))[:size]
        finish = "stop"
        max_tokens = request.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and len(content) // 4 > max_tokens:
            content, finish = content[: max_tokens * 4], "length"
        return content, finish, prompt_tokens, max(1, len(content) // 4)

    def _ident(self) -> str:
        self.counter += 1
        return f"chatcmpl-fake-{self.counter}"

    async def _complete(self, request: dict[str, Any], send: Any, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "trickle":
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.kind == "drop":
            await _drop(send)
        if fault is not None and fault.kind == "malformed":
            await _raw(send, 200, b'{"id": "chatcmpl-broken", "choices": [', b"application/json")
            return
        content, finish, prompt, completion = self._answer(request)
        body = orjson.dumps({
            "id": self._ident(), "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model"), "system_fingerprint": "fake", "x_fake_provider": True,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })
        if fault is not None and fault.kind == "truncate":
            body = body[: len(body) // 2]
        await _raw(send, 200, body, b"application/json")

    async def _stream(self, request: dict[str, Any], send: Any, fault: Fault | None,
                      receive: Any) -> None:
        # A slow stream notices its client leaving (and counts it), like a real provider would.
        gone = asyncio.ensure_future(self._hang(receive)) if fault is not None and \
            fault.kind == "trickle" else None
        try:
            await self._stream_chunks(request, send, fault, gone)
        finally:
            if gone is not None:
                gone.cancel()

    async def _stream_chunks(self, request: dict[str, Any], send: Any, fault: Fault | None,
                             gone: asyncio.Future[None] | None) -> None:
        content, finish, prompt, completion = self._answer(request)
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        ident, created, model = self._ident(), int(time.time()), request.get("model")
        n = max(1, self.config.chunks)
        step = -(-len(content) // n)
        pieces = [content[i * step:(i + 1) * step] for i in range(n)]
        delay = self.config.chunk_delay_ms / 1000
        if fault is not None and fault.kind == "trickle":
            delay = fault.delay_ms / 1000
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache")]})
        if fault is not None and fault.kind == "malformed":
            await _chunk(send, b"data: {not json\n\n")
            await _chunk(send, b"data: [DONE]\n\n", more=False)
            return
        for i, piece in enumerate(pieces):
            if fault is not None and fault.kind in ("drop", "truncate") and i >= fault.after_chunks:
                if fault.kind == "drop":
                    raise Dropped()
                await _chunk(send, b"", more=False)
                return
            if i and delay > 0:
                await asyncio.sleep(delay)
                if gone is not None and gone.done():
                    return  # the client left (``_hang`` counted it)
            delta: dict[str, Any] = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            chunk: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fake",
                "choices": [{"index": 0, "delta": delta,
                             "finish_reason": finish if i == n - 1 else None}]}
            if include_usage:
                chunk["usage"] = None
            await _chunk(send, b"data: " + orjson.dumps(chunk) + b"\n\n")
        if include_usage:
            await _chunk(send, b"data: " + orjson.dumps({
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}) + b"\n\n")
        await _chunk(send, b"data: [DONE]\n\n", more=False)

    # --- embeddings ---------------------------------------------------------------------------

    async def _embeddings(self, request: dict[str, Any], send: Any, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "drop":
            await _drop(send)
        if fault is not None and fault.kind == "malformed":
            await _raw(send, 200, b'{"object": "list", "data": [', b"application/json")
            return
        raw = request.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [str(raw)]
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else str(x) for x in raw]
        else:
            await _error(send, 400, "'input' must be a string or a non-empty list.", "invalid_value")
            return
        self.embedding_calls += 1
        self.embedding_batch_sizes.append(len(inputs))
        dims = request.get("dimensions") if isinstance(request.get("dimensions"), int) else 384
        as_base64 = request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dims)
            value: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
                          if as_base64 else vector)
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(len(t) // 4 + 1 for t in inputs)
        await _json(send, 200, {"object": "list", "data": data, "model": request.get("model"),
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # --- control API --------------------------------------------------------------------------

    async def _control(self, path: str, method: str, body: bytes, send: Any) -> None:
        spec = orjson.loads(body) if body else {}
        if path == "/_fake/faults" and method == "POST":
            if spec.get("kind") not in FAULT_KINDS:
                await _error(send, 400, f"kind must be one of {sorted(FAULT_KINDS)}", "bad_fault")
                return
            seed = spec.pop("seed", 0)
            self.faults.append(Fault(rng=random.Random(seed), **spec))
        elif path == "/_fake/faults" and method == "DELETE":
            self.faults.clear()
        elif path == "/_fake/config" and method == "POST":
            self.config = replace(self.config, **spec)
        elif path == "/_fake/reset" and method == "POST":
            self.reset()
        elif path == "/_fake/stats" and method == "GET":
            await _json(send, 200, {
                "requests": self.requests, "total": self.total,
                "embedding_calls": self.embedding_calls,
                "embedding_batch_sizes": self.embedding_batch_sizes,
                "in_flight": self.in_flight, "cancelled": self.cancelled,
                "last_authorization": self.last_authorization,
                "cookies_received": self.cookies_received,
                "last_traceparent": self.last_traceparent,
                "config": asdict(self.config) | {"api_key": None},
                "faults": len(self.faults)})
            return
        else:
            await _error(send, 404, f"Unknown control route {method} {path}", "unknown_url")
            return
        await _json(send, 200, {"ok": True})


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``: the same input always maps to the same vector."""
    digest = hashlib.sha256(text.encode()).digest()
    rng = random.Random(digest)
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _drop(send: Any) -> None:
    """Promise a body, send part of it, then abort: the client sees the connection die."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
    await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
    raise Dropped()


async def _chunk(send: Any, body: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _raw(send: Any, status: int, body: bytes, content_type: bytes,
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, payload: Any) -> None:
    await _raw(send, status, orjson.dumps(payload), b"application/json")


async def _error(send: Any, status: int, message: str, code: str,
                 retry_after: str | None = None) -> None:
    kind = "rate_limit_error" if status == 429 else (
        "server_error" if status >= 500 else "invalid_request_error")
    extra = [(b"set-cookie", b"fake_session=from-an-error; Path=/")]
    if retry_after:
        extra.append((b"retry-after", retry_after.encode()))
    await _raw(send, status, orjson.dumps({"error": {"message": message, "type": kind,
                                                     "param": None, "code": code}}),
               b"application/json", extra)


def create_app(config: FakeConfig | None = None) -> FakeProvider:
    return FakeProvider(config or FakeConfig())


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--content-chars", type=int, default=400)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    app = create_app(FakeConfig(args.latency_ms, args.chunks, args.chunk_delay_ms,
                                args.content_chars, args.api_key))
    print(f"fake provider listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    sys.exit(main())
