"""ASGI plumbing for the fake provider: whole bodies, SSE chunks, errors in OpenAI's shape.

Every helper takes the response's extra headers (the provider's identity, rate-limit headers)
so that they are written once, with the response start, and cost nothing more than a list.
"""

from __future__ import annotations

from typing import Any

import orjson

Headers = list[tuple[bytes, bytes]]
ERROR_COOKIE = (b"set-cookie", b"fake_session=from-an-error; Path=/")


class Dropped(Exception):
    """Raised inside the app to make uvicorn abort the connection without a clean end."""


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def raw(send: Any, status: int, body: bytes, content_type: bytes, headers: Headers) -> None:
    start = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start + headers})
    await send({"type": "http.response.body", "body": body})


async def json(send: Any, status: int, payload: Any, headers: Headers) -> None:
    await raw(send, status, orjson.dumps(payload), b"application/json", headers)


async def error(send: Any, status: int, message: str, code: str, headers: Headers,
                retry_after: str | None = None, param: str | None = None) -> None:
    """OpenAI's error body; every error also sets a cookie (a client that keeps it shares state)."""
    kind = "rate_limit_error" if status == 429 else (
        "server_error" if status >= 500 else "invalid_request_error")
    extra = [ERROR_COOKIE, *headers]
    if retry_after:
        extra.append((b"retry-after", retry_after.encode()))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    await raw(send, status, orjson.dumps(body), b"application/json", extra)


async def start_stream(send: Any, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"),
                            (b"cache-control", b"no-cache"), *headers]})


async def chunk(send: Any, body: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def drop(send: Any, headers: Headers) -> None:
    """Promise a body, send part of it, then abort: the client sees the connection die."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"4096"), *headers]})
    await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
    raise Dropped()
