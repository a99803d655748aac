"""``Answered``: a complete answer is written first and booked after, however the writing went."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import Response
from starlette.types import Message

from gateway.api.pipeline import Answered
from gateway.books.accounting import RequestAccount

from .inprocess import in_process

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def never_called() -> Message:
    raise AssertionError("an answer reads nothing")


async def test_the_answer_is_written_before_its_books_close() -> None:
    async with in_process() as gw:
        stats = gw.gateway.stats
        account = RequestAccount(stats, gw.gateway.metrics, "/v1/chat/completions")
        before = stats.requests
        booked_when: list[tuple[str, int]] = []

        async def send(message: Message) -> None:
            booked_when.append((message["type"], stats.requests - before))

        await Answered(b'{"ok":true}', {"x-gateway-model": "m"}, account)(SCOPE, never_called,
                                                                          send)
        assert booked_when == [("http.response.start", 0), ("http.response.body", 0)]
        assert stats.requests - before == 1


async def test_the_books_close_even_when_writing_fails() -> None:
    async with in_process() as gw:
        stats = gw.gateway.stats
        account = RequestAccount(stats, gw.gateway.metrics, "/v1/chat/completions")
        before = stats.requests

        async def broken(message: Any) -> None:
            raise OSError("connection reset")

        with pytest.raises(OSError):
            await Answered(b"{}", {}, account)(SCOPE, never_called, broken)
        assert stats.requests - before == 1


async def test_the_head_is_what_starlette_would_send_with_the_length_first() -> None:
    async with in_process() as gw:
        account = RequestAccount(gw.gateway.stats, gw.gateway.metrics, "/v1/chat/completions")
        body = '{"text":"é"}'  # a str body is sent as UTF-8, its length in bytes
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        headers = {"x-gateway-model": "m", "x-ratelimit-remaining-requests": "9"}
        await Answered(body, headers, account)(SCOPE, never_called, send)
        starlette = Response(body, headers=headers, media_type="application/json")
        assert sent[0]["status"] == 200
        assert sent[0]["headers"][0] == (b"content-length", b"13")
        assert sorted(sent[0]["headers"]) == sorted(starlette.raw_headers)
        assert sent[1]["body"] == body.encode() == starlette.body
