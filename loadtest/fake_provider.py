"""A fast fake OpenAI-compatible provider with run-time fault injection.

Every test, benchmark and the demo use it in place of a real provider:

    python -m loadtest.fake_provider --host 127.0.0.1 --port 8001 [--latency-ms 0] [--chunks 8]
        [--chunk-delay-ms 0] [--content-chars 400] [--api-key KEY] [--name fake] [--rpm-limit N]
        [--gzip | --brotli] [--tls-cert cert.pem --tls-key key.pem] [--http2]

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``GET /v1/models``; the code lives in ``loadtest/fake/`` (``app``, ``answers``, ``ratelimit``,
``wire``). Everything is deterministic: the same request always gets the same answer.

Chat answers
- Text: ``"Fake answer to: <last user message>. "`` repeated to ``--content-chars``; a tool result
  as the last message gets ``"Tool result received: <its content>"``.
- Tool calls: with ``tools`` (type ``function``), ``tool_choice`` not ``"none"`` and a last
  message that is not a ``tool`` result, the answer is ``content: null``, ``tool_calls`` and
  ``finish_reason: "tool_calls"``. Called: a named ``tool_choice`` → that tool; else EVERY tool
  when there are ≥2, ``parallel_tool_calls`` is not false and the last user message contains the
  word "parallel" (case-insensitive); else the first tool.
- Arguments: compact JSON built from the tool's ``parameters`` schema: an object gets its
  ``required`` properties (all of its properties when ``required`` is absent); strings take the
  last user message's words in turn (``\\w+``, starting over for each call; ``fake`` when there
  are none; known ``format``s get a fixed valid value), integers 1 and numbers 1.5 (moved inside
  ``minimum``/``maximum``), booleans true, ``enum`` its first value, ``const`` itself, arrays
  ``max(1, minItems)`` items, ``anyOf``/``oneOf`` their first non-null option, local ``$ref``s.
- Ids: ``call_`` + 24 hex digits of sha256(index, name, arguments, last user message): a stream
  and a plain answer to the same request carry the same ids.
- Streamed tool calls as OpenAI streams them: per call a head delta (``index``, ``id``,
  ``type``, ``function.name``, ``arguments: ""``; the first one also ``role``, ``content: null``),
  then the arguments in ``max(3, --chunks)`` pieces (fewer only if shorter) carrying only
  ``index`` and ``function.arguments``; then an empty delta with ``finish_reason: "tool_calls"``.
- ``response_format``: ``json_object`` → ``{"answer": "Fake answer to: <last user message>."}``;
  ``json_schema`` → an instance of ``json_schema.schema`` by the rules above. Streams too.
- ``stop`` (a string or ≤4): the answer is cut just before the first stop sequence it contains
  (``finish_reason: "stop"``). ``max_tokens`` / ``max_completion_tokens`` (the smaller wins; a
  token is 4 characters) cut it with ``finish_reason: "length"``; a value < 1 is a 400. Tool
  calls are never cut. Usage carries ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens`` (both 0).
- Usage shapes, per model (``usage_shapes`` in ``/_fake/config``: model or ``*`` → shape) or per
  request (header ``x-fake-usage-shape``): ``plain`` (the default, above); ``openai``: half the
  prompt (rounded down) in ``prompt_tokens_details.cached_tokens`` and a quarter of the
  completion in ``completion_tokens_details.reasoning_tokens``; ``deepseek``: the same half as
  ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``; ``anthropic``: the half as
  ``cache_read_input_tokens`` and a quarter of the prompt as ``cache_creation_input_tokens``
  (``prompt_tokens`` counts both).

Legacy completions: ``prompt`` (a string or a list → one choice each) is answered with
``"Fake completion of: <prompt>. "`` repeated, cut at ``max_tokens`` (default 16) or ``stop``;
``stream`` sends ``text_completion`` chunks (``--chunks`` per prompt), ``finish_reason`` on the
last of each prompt, then the usage chunk when ``stream_options.include_usage``, then ``[DONE]``.

Identity and limits: every response carries ``x-fake-provider: <--name>``; bodies carry
``x_fake_provider: <name>``. With ``rpm_limit`` (``--rpm-limit`` or ``/_fake/config``), a POST to
``/v1/*`` beyond that many in the last 60 s gets 429 ``rate_limit_exceeded`` with ``retry-after``
(whole seconds until a slot frees); every answer under a limit carries
``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
``x-ratelimit-reset-requests`` (until the window is empty again, as ``20ms``/``6.5s``/``1m0s``).

Control API (``/_fake/``): ``POST faults`` (``model`` or ``*``, ``kind`` in status, hang, drop,
truncate, malformed, trickle; ``status``, ``retry_after``, ``message``, ``times``, ``rate``,
``seed``, ``after_chunks``, ``delay_ms``, ``endpoint`` in chat, completions, embeddings),
``DELETE faults``, ``POST config`` (any ``FakeConfig`` field), ``POST reset``, ``GET stats``,
``GET requests`` (the last 50 ``/v1/*`` requests: ``path``, parsed ``body``, the last 4
characters of ``authorization``, and the ``http_version`` it came over).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from loadtest.fake import (
    FAULT_KINDS,
    MODELS,
    Dropped,
    FakeConfig,
    FakeProvider,
    Fault,
    create_app,
    fake_vector,
)
from loadtest.fake.gzipped import GzipEverything

__all__ = ["FAULT_KINDS", "MODELS", "Dropped", "FakeConfig", "FakeProvider", "Fault",
           "create_app", "fake_vector", "main"]


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--content-chars", type=int, default=400)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--name", default="fake", help="sent as the x-fake-provider header")
    parser.add_argument("--rpm-limit", type=int, default=None,
                        help="requests per rolling minute before 429 (default: no limit)")
    parser.add_argument("--gzip", action="store_true",
                        help="gzip every /v1/* answer, whatever the client offered")
    parser.add_argument("--brotli", action="store_true", help="the same, in brotli")
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", default=None, help="and this key")
    parser.add_argument("--http2", action="store_true",
                        help="serve with hypercorn: HTTP/2 (by ALPN, with --tls-cert) and 1.1")
    args = parser.parse_args(argv)
    app: Any = create_app(FakeConfig(args.latency_ms, args.chunks, args.chunk_delay_ms,
                                     args.content_chars, args.api_key, args.name, args.rpm_limit))
    if args.gzip or args.brotli:
        app = GzipEverything(app, "br" if args.brotli else "gzip")
    scheme = "https" if args.tls_cert else "http"
    print(f"fake provider {args.name!r} listening on {scheme}://{args.host}:{args.port}",
          flush=True)
    if args.http2:
        serve_http2(app, args.host, args.port, args.tls_cert, args.tls_key)
        return
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on",
                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)


def serve_http2(app: Any, host: str, port: int, cert: str | None, key: str | None) -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.certfile, config.keyfile = cert, key
    config.loglevel = "WARNING"
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
