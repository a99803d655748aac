"""An upstream's chat completions, whole and as chunks, built the way OpenAI sends them (tool
calls as indexed deltas whose arguments arrive in pieces, usage in a last chunk without
choices), and a scripted upstream model for the bridges' SDK tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Call:
    id: str
    name: str
    pieces: list[str]  # the arguments as the upstream streams them

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


@dataclass
class Answer:
    """What the scripted upstream says: text, tool calls, why it stopped, usage."""

    text: str | None = None
    calls: list[Call] = field(default_factory=list)
    finish: str = "stop"
    prompt_tokens: int = 21
    completion_tokens: int = 9
    cached_tokens: int = 0
    choice_extra: dict[str, Any] = field(default_factory=dict)
    id: str = "chatcmpl-up-1"

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens,
                                 "completion_tokens": self.completion_tokens,
                                 "total_tokens": self.prompt_tokens + self.completion_tokens}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage

    def completion(self, model: str = "up-model") -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}} for c in self.calls]
        return {"id": self.id, "object": "chat.completion", "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish,
                             "logprobs": None, **self.choice_extra}],
                "usage": self.usage()}

    def chunks(self, model: str = "up-model", text_pieces: int = 3) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None,
                  **extra: Any) -> dict[str, Any]:
            return {"id": self.id, "object": "chat.completion.chunk", "created": 1700000000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                 **extra}]}

        out = [chunk({"role": "assistant", "content": ""})]
        if self.text:
            size = max(1, len(self.text) // text_pieces)
            out += [chunk({"content": self.text[i:i + size]})
                    for i in range(0, len(self.text), size)]
        for n, call in enumerate(self.calls):
            out.append(chunk({"tool_calls": [{"index": n, "id": call.id, "type": "function",
                                              "function": {"name": call.name,
                                                           "arguments": ""}}]}))
            out += [chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
                    for piece in call.pieces]
        out.append(chunk({}, self.finish, **self.choice_extra))
        out.append({"id": self.id, "object": "chat.completion.chunk", "created": 1700000000,
                    "model": model, "choices": [], "usage": self.usage()})
        return out


def weather_call(city: str = "Hanoi", call_id: str = "call_w1") -> Call:
    arguments = orjson.dumps({"city": city, "unit": "celsius"}).decode()
    cut = len(arguments) // 3
    return Call(call_id, "get_weather", [arguments[:cut], arguments[cut:2 * cut],
                                         arguments[2 * cut:]])


def weather_model(payload: dict[str, Any]) -> Answer:
    """A model that calls ``get_weather`` when it has the tool and no result yet, and answers
    with the tool's result once it has one."""
    last = payload["messages"][-1]
    if last["role"] == "tool":
        return Answer(text=f"The tool said: {last['content']}", prompt_tokens=40,
                      completion_tokens=8)
    if payload.get("tools"):
        return Answer(text=None, calls=[weather_call()], finish="tool_calls",
                      prompt_tokens=30, completion_tokens=12)
    text = last["content"] if isinstance(last["content"], str) else "parts"
    return Answer(text=f"Echo: {text}")


Model = Callable[[dict[str, Any]], Answer]
