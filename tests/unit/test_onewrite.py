"""One write for a sized answer, on uvicorn's real httptools protocol fed bytes in process: the
head goes out with the body, an event stream's head with its first event, other streams and
HEAD answers are written as before, and an answer that fails after its head still sends that
head before the connection closes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.server import onewrite

from .httptools_wire import Transport, connect

BODY = b'{"answer": 42}'


async def sized(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def streamed(content_type: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})
    return app


async def fails_after_head(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"10")]})
    raise RuntimeError("failed between head and body")


@pytest.fixture(params=[True, False], ids=["applied", "uvicorn-alone"])
def applied(request: pytest.FixtureRequest) -> Iterator[bool]:
    onewrite.remove()  # importing service.py applies it
    saved = vars(RequestResponseCycle)["send"]
    if request.param:
        assert onewrite.apply()
    yield request.param
    onewrite.remove()
    assert vars(RequestResponseCycle)["send"] is saved


async def serve(app: Any, request: bytes) -> Transport:
    protocol, transport = connect(app)
    protocol.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if b"".join(transport.writes).endswith((BODY, b"0\r\n\r\n")) or transport.closed:
            break
    return transport


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_sized_answer_is_one_write(applied: bool) -> None:
    transport = await serve(sized, GET)
    whole = b"".join(transport.writes)
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b"\r\n\r\n" + BODY)
    assert len(transport.writes) == (1 if applied else 2)
    assert not transport.closed  # keep-alive as before


async def test_a_stream_is_written_as_it_comes(applied: bool) -> None:
    transport = await serve(streamed(b"application/x-ndjson"), GET)
    assert len(transport.writes) == 3  # head, then each chunk
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in transport.writes[0]


async def test_an_event_stream_head_leaves_with_its_first_event(applied: bool) -> None:
    transport = await serve(streamed(b"text/event-stream"), GET)
    whole = b"".join(transport.writes)
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in whole
    assert whole.endswith(b"data: 2\n\n\r\n0\r\n\r\n")
    if applied:
        assert len(transport.writes) == 2
        assert transport.writes[0].endswith(b"data: 1\n\n\r\n")
    else:
        assert len(transport.writes) == 3


async def test_a_head_answer_has_no_body_and_is_written_at_once(applied: bool) -> None:
    transport = await serve(sized, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"content-length: %d\r\n\r\n" % len(BODY))


async def test_a_head_is_not_lost_when_the_answer_fails_before_its_body(applied: bool) -> None:
    transport = await serve(fails_after_head, GET)
    assert transport.closed
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 OK\r\n")
