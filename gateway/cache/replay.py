"""Streams and the cache: replay a cached answer as SSE, and assemble a finished stream into
an answer worth caching."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from .entry import CachedAnswer


class ReplayStream:
    """Serves a cached completion through the same interface as an upstream stream: one chunk
    with each choice's whole message, one with its finish reason, then the usage chunk."""

    def __init__(self, answer: CachedAnswer) -> None:
        data = answer.data()
        self._data = data
        self.model: str | None = data.get("model")
        self.usage: dict[str, Any] | None = data.get("usage")
        choices = data.get("choices") or [{}]
        self.finish_reason: str | None = choices[0].get("finish_reason")

    async def __aiter__(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        data = self._data
        base = {"id": data.get("id"), "object": "chat.completion.chunk",
                "created": data.get("created"), "model": data.get("model")}
        choices = data.get("choices") or []
        for chunk in (
            {**base, "choices": [{"index": c.get("index", i), "delta": c.get("message") or {},
                                  "finish_reason": None} for i, c in enumerate(choices)]},
            {**base, "choices": [{"index": c.get("index", i), "delta": {},
                                  "finish_reason": c.get("finish_reason")}
                                 for i, c in enumerate(choices)]},
            {**base, "choices": [], "usage": self.usage},
        ):
            yield b"data: " + orjson.dumps(chunk), chunk

    async def aclose(self) -> None:
        return None


class Assembler:
    """Collects a stream's chunks into one ``chat.completion`` body. Answers with tool calls or
    other deltas it cannot rebuild faithfully are marked unfit for the cache."""

    def __init__(self) -> None:
        self.fit = True
        self._head: dict[str, Any] = {}
        self._content: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}

    def feed(self, chunk: dict[str, Any]) -> None:
        if not self._head and chunk.get("id"):
            self._head = {"id": chunk.get("id"), "created": chunk.get("created"),
                          "model": chunk.get("model")}
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if any(k not in ("role", "content") for k in delta if delta[k] is not None):
                self.fit = False
            if delta.get("content"):
                self._content.setdefault(index, []).append(delta["content"])
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]
            else:
                self._finish.setdefault(index, None)

    def finish_reasons(self) -> list[str | None]:
        return list(self._finish.values())

    def body(self, usage: dict[str, Any] | None) -> bytes:
        choices = [
            {"index": i, "message": {"role": "assistant", "content": "".join(self._content.get(i, []))},
             "finish_reason": self._finish[i]}
            for i in sorted(self._finish)
        ]
        return orjson.dumps({**self._head, "object": "chat.completion",
                             "created": self._head.get("created") or int(time.time()),
                             "choices": choices, "usage": usage})
