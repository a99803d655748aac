"""Reading a request safely: authentication, a bounded body, and cancel-on-disconnect."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.types import Receive

from ..errors import ErrorCode, GatewayError, bad_request, body_too_large, unauthorized

T = TypeVar("T")


def presented_key(request: Request) -> bytes:
    """The client's key: ``Authorization: Bearer <key>`` (OpenAI) or ``x-api-key`` (Anthropic)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode()
    return request.headers.get("x-api-key", "").strip().encode()


def authorize(request: Request, keys: tuple[bytes, ...]) -> str:
    """Check the client's key in constant time; returns the tenant: an id derived from the key
    (never the key itself), or "" when the gateway is open."""
    if not keys:
        return ""
    presented = presented_key(request)
    matched = False
    for key in keys:  # compare against every key so timing says nothing about which one
        matched |= hmac.compare_digest(presented, key)
    if not presented or not matched:
        raise unauthorized()
    return hashlib.sha256(presented).hexdigest()


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise bad_request("The request body is empty; send a JSON object.",
                          code=ErrorCode.EMPTY_BODY)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.",
                          code=ErrorCode.INVALID_JSON) from None


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` in this task, but cancel it the moment the client goes away, so no upstream
    call outlives the request that wanted it. One watcher task per request, nothing more."""
    return await cancel_when_gone(request.receive, work)


async def cancel_when_gone(receive: Receive, work: Awaitable[T]) -> T:
    """``cancel_on_disconnect`` on a raw ASGI ``receive`` (for responses that stream)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise GatewayError(ErrorCode.CLIENT_CLOSED, "The client closed the request.") from None
        raise
    finally:
        watcher.cancel()
