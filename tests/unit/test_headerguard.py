"""The header guard on uvicorn's real httptools protocol, fed bytes in process: oversized or too
many headers are 431, a head that never ends is 408, and a normal request is untouched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.server import headerguard
from gateway.server.headerguard import WRAPPED

from . import httptools_wire
from .httptools_wire import Transport


@pytest.fixture
def guarded() -> Iterator[None]:
    headerguard.remove()  # importing service.py applies it with the default limits
    saved = {name: vars(HttpToolsProtocol)[name] for name in WRAPPED}
    assert headerguard.apply(header_timeout_s=0.05, max_header_bytes=2048, max_headers=20)
    yield
    headerguard.remove()
    assert {name: vars(HttpToolsProtocol)[name] for name in WRAPPED} == saved


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def closed(transport: Transport, within_s: float = 5.0) -> bool:
    """Poll for the close (the guard's timer runs on a loop shared with a busy machine)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not transport.closed and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return transport.closed


def connect() -> tuple[HttpToolsProtocol, Transport]:
    return httptools_wire.connect(ok)


async def test_a_normal_request_is_answered(guarded: None) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.1)  # past the header timeout: it was disarmed with the headers
    assert transport.status() == 200 and not transport.closed


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 3000 + b"\r\n",                          # one header too large
    b"".join(b"X-H%d: v\r\n" % i for i in range(30)),            # too many headers
])
async def test_headers_over_the_limits_are_431_and_close(guarded: None, headers: bytes) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert transport.status() == 431 and transport.closed
    body = transport.written.split(b"\r\n\r\n", 1)[1]
    assert orjson.loads(body)["error"]["code"] == "request_headers_too_large"


async def test_a_head_that_keeps_growing_is_431_before_it_ends(guarded: None) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(3):
        if not transport.closed:
            protocol.data_received(b"a" * 1000)
    assert transport.status() == 431 and transport.closed


async def test_a_head_that_never_ends_is_408_and_closed(guarded: None) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert await closed(transport)
    assert transport.status() == 408


async def test_a_connection_that_sends_nothing_is_closed(guarded: None) -> None:
    _, transport = connect()
    assert await closed(transport)
    assert transport.status() == 408
