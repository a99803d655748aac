"""Reading a request safely: a bounded body, and cancel-on-disconnect (authentication is
``gateway.tenants``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.types import Receive

from gateway.errors import ErrorCode, GatewayError, bad_request, body_too_large
from gateway.eventloop import current_task, running_loop
from gateway.server.intake import EXCHANGE_KEY, AdmittedRequest

T = TypeVar("T")


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes before reading them all. A body the
    intake already holds (read under the same bound) is taken as it is."""
    exchange: AdmittedRequest | None = request.scope.get(EXCHANGE_KEY)
    body = exchange.take_body() if exchange is not None else None
    if body is None:
        body = await _read(request, limit)
    elif len(body) > limit:
        raise body_too_large(limit)
    if not body:
        raise bad_request("The request body is empty; send a JSON object.",
                          code=ErrorCode.EMPTY_BODY)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.",
                          code=ErrorCode.INVALID_JSON) from None


async def _read(request: Request, limit: int) -> bytes:
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
    return b"".join(chunks)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` in this task, but cancel it the moment the client goes away, so no upstream
    call outlives the request that wanted it. One watcher task per request, nothing more."""
    return await cancel_when_gone(request.receive, work)


async def cancel_when_gone(receive: Receive, work: Awaitable[T]) -> T:
    """``cancel_on_disconnect`` on a raw ASGI ``receive`` (for responses that stream)."""
    task = current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise GatewayError(ErrorCode.CLIENT_CLOSED, "The client closed the request.") from None
        raise
    finally:
        watcher.cancel()
