"""``Answered``: a complete answer is written first and booked after, however the writing went."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message

from gateway.accounting import RequestAccount
from gateway.api.pipeline import Answered

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
