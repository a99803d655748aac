"""``EventStream`` on uvicorn's real httptools protocol fed bytes in process: a ``LastChunk``
leaves with the response's end in one write, and the iterator still runs to its end after it
(where the relay closes the request's books)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.server import onewrite
from gateway.server.streaming import EventStream, LastChunk

from .httptools_wire import connect

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def one_write() -> Iterator[None]:
    onewrite.remove()
    assert onewrite.apply()
    yield
    onewrite.remove()


async def test_the_last_chunk_and_the_end_are_one_write(one_write: None) -> None:
    after_last: list[str] = []
    closed: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield LastChunk(b"data: 2\n\n")
        after_last.append("books closed")

    async def on_close() -> None:
        closed.append("closed")

    stream = EventStream(events(), {}, on_close=on_close, stall_timeout_s=5.0)
    protocol, transport = connect(stream)
    protocol.data_received(GET)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if transport.written.endswith(b"0\r\n\r\n"):
            break
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"data: 1\n\n\r\n")
    assert transport.writes[1] == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert after_last == ["books closed"] and closed == ["closed"]


async def test_a_stream_without_a_last_chunk_ends_with_an_empty_write(one_write: None) -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    protocol, transport = connect(EventStream(events(), {}, stall_timeout_s=5.0))
    protocol.data_received(GET)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if transport.written.endswith(b"0\r\n\r\n"):
            break
    assert transport.written.endswith(b"9\r\ndata: 1\n\n\r\n0\r\n\r\n")
    assert transport.writes[-1] == b"0\r\n\r\n"
