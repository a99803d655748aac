"""Streams and the cache: replay a cached answer as chat-completion chunks, and assemble a
finished stream into an answer worth caching. Tool calls travel both ways as OpenAI streams them:
indexed deltas (the official SDKs' stream helpers index their accumulators by ``index``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.cache.entry import CachedAnswer

TEXT_FIELDS = ("content", "refusal", "reasoning_content")


def _choice_deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas that rebuild one choice's message: its role and texts, then each tool call."""
    message = choice.get("message") or {}
    first: dict[str, Any] = {"role": message.get("role") or "assistant"}
    for name in TEXT_FIELDS:
        if isinstance(message.get(name), str):
            first[name] = message[name]
    deltas = [first]
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        deltas.append({"tool_calls": [{
            "index": index, "id": call.get("id"), "type": call.get("type") or "function",
            "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
        }]})
    return deltas


class ReplayStream:
    """Serves a cached completion through the same interface as an upstream stream: each
    choice's message as deltas, then each choice's finish reason, then the usage chunk."""

    def __init__(self, answer: CachedAnswer) -> None:
        data = answer.data()
        self._data = data
        self.model: str | None = data.get("model")
        self.usage: dict[str, Any] | None = data.get("usage")
        choices = data.get("choices") or [{}]
        self.finish_reason: str | None = choices[0].get("finish_reason")
        self.done = False

    def _chunks(self) -> list[dict[str, Any]]:
        data = self._data
        base = {"id": data.get("id"), "object": "chat.completion.chunk",
                "created": data.get("created"), "model": data.get("model")}
        choices = data.get("choices") or []
        chunks = []
        for i, choice in enumerate(choices):
            index = choice.get("index", i)
            for delta in _choice_deltas(choice):
                chunks.append({**base, "choices": [{"index": index, "delta": delta,
                                                    "finish_reason": None}]})
        chunks.append({**base, "choices": [
            {"index": c.get("index", i), "delta": {}, "finish_reason": c.get("finish_reason")}
            for i, c in enumerate(choices)]})
        chunks.append({**base, "choices": [], "usage": self.usage})
        return chunks

    async def batches(self) -> AsyncIterator[list[tuple[bytes, dict[str, Any]]]]:
        """The whole answer at once: it is all in hand, so it goes out in one send."""
        batch = [(b"data: " + orjson.dumps(chunk), chunk) for chunk in self._chunks()]
        self.done = True
        yield batch

    async def __aiter__(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        async for batch in self.batches():
            for pair in batch:
                yield pair

    async def aclose(self) -> None:
        return None


class _Choice:
    __slots__ = ("finish", "role", "texts", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.texts: dict[str, list[str]] = {}
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None

    def message(self) -> dict[str, Any]:
        content = "".join(self.texts.get("content", ()))
        message: dict[str, Any] = {"role": self.role,
                                   "content": content if content or not self.tools else None}
        for name, parts in self.texts.items():
            if name != "content":
                message[name] = "".join(parts)
        if self.tools:
            message["tool_calls"] = [
                {"id": t["id"], "type": t["type"],
                 "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                for _, t in sorted(self.tools.items())]
        return message


class Assembler:
    """Collects a stream's chunks into one ``chat.completion`` body: text, refusals, reasoning
    and tool calls. A delta it cannot rebuild faithfully (logprobs, legacy function calls, a
    field it does not know) makes the stream not rebuildable, so it is not cached."""

    def __init__(self) -> None:
        self.rebuildable = True
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}

    def feed(self, chunk: dict[str, Any]) -> None:
        if not self._head and chunk.get("id"):
            self._head = {"id": chunk.get("id"), "created": chunk.get("created"),
                          "model": chunk.get("model")}
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            if choice.get("logprobs") is not None:
                self.rebuildable = False
            self._delta(state, choice.get("delta") or {})
            if choice.get("finish_reason"):
                state.finish = choice["finish_reason"]

    def _delta(self, state: _Choice, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if value is None:
                continue
            if key == "role":
                state.role = value
            elif key in TEXT_FIELDS and isinstance(value, str):
                state.texts.setdefault(key, []).append(value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    self._tool_delta(state, call)
            else:
                self.rebuildable = False

    def _tool_delta(self, state: _Choice, call: Any) -> None:
        if not isinstance(call, dict) or not isinstance(call.get("index"), int):
            self.rebuildable = False
            return
        tool = state.tools.setdefault(call["index"], {"id": None, "type": "function",
                                                      "name": None, "arguments": []})
        if call.get("id"):
            tool["id"] = call["id"]
        if call.get("type"):
            tool["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            tool["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            tool["arguments"].append(function["arguments"])

    def finish_reasons(self) -> list[str | None]:
        return [state.finish for state in self._choices.values()]

    def body(self, usage: dict[str, Any] | None) -> bytes:
        choices = [{"index": i, "message": self._choices[i].message(),
                    "finish_reason": self._choices[i].finish}
                   for i in sorted(self._choices)]
        return orjson.dumps({**self._head, "object": "chat.completion",
                             "created": self._head.get("created") or int(time.time()),
                             "choices": choices, "usage": usage})
