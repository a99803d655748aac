"""What every bridge shares: turning a pydantic validation failure into one ``GatewayError`` that
names the bad field as a dotted path, SSE framing, and reading a chat completion's usage."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from gateway.digest import sha256
from gateway.errors import ErrorCode, GatewayError
from gateway.pricing import read_tokens

M = TypeVar("M", bound=BaseModel)

# Pydantic puts a union branch's description ("str", "list[...]", "function-after[...]", a
# model's class name) in an error's location; those are not fields the client wrote (every
# field name of these APIs is lower case).
_BRANCH_MARKS = ("[", "str", "int", "float", "bool", "dict", "list", "none")


def _is_branch(part: str) -> bool:
    return "[" in part or part in _BRANCH_MARKS or part[:1].isupper()


def dotted(loc: tuple[int | str, ...], tags: Collection[str]) -> str:
    """``('messages', 0, 'content', 'list[...]', 1, 'image', 'source')`` ->
    ``messages.1.content.1.source``: union branches dropped, and a discriminated union's tag
    (which follows a list index and is not the last part) dropped too."""
    parts: list[str] = []
    previous: int | str | None = None
    for i, part in enumerate(loc):
        if isinstance(part, str):
            if _is_branch(part):
                continue
            if isinstance(previous, int) and part in tags and i < len(loc) - 1:
                previous = part
                continue
        parts.append(str(part))
        previous = part
    return ".".join(parts)


def validate(model: type[M], body: Any, *, tags: Collection[str] = ()) -> M:
    """``model.model_validate(body)``, its first error (the most specific one) as a 400."""
    if not isinstance(body, dict):
        raise GatewayError(ErrorCode.INVALID_VALUE, "The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as failure:
        errors = failure.errors(include_url=False)
    error = max(errors, key=lambda e: len(e["loc"]))
    param = dotted(tuple(error["loc"]), tags) or None
    kind = error["type"]
    if kind == "missing":
        raise GatewayError(ErrorCode.MISSING_PARAMETER,
                           f"Missing required parameter: '{param}'.", param=param)
    if kind == "extra_forbidden":
        raise GatewayError(ErrorCode.UNSUPPORTED_PARAMETER,
                           f"Unsupported parameter: '{param}' is not supported by this gateway.",
                           param=param)
    message = error["msg"].removeprefix("Value error, ")
    raise GatewayError(ErrorCode.INVALID_VALUE, f"Invalid value for '{param}': {message}",
                       param=param)


def unsupported(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorCode.UNSUPPORTED_PARAMETER, message, param=param)


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named server-sent event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def suffix(completion_id: Any) -> str:
    """A stable 24-hex-digit suffix from an upstream completion id (the same answer, replayed
    from the cache, keeps its id)."""
    return sha256(str(completion_id).encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ChatUsage:
    """A chat completion's ``usage``, with absent counts as zero; the cache's counts read by
    ``pricing.read_tokens``, whichever provider's shape they came in."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    written: int = 0

    @classmethod
    def read(cls, usage: Any) -> ChatUsage:
        if not isinstance(usage, dict):
            return cls()

        def count(source: Any, key: str) -> int:
            value = source.get(key) if isinstance(source, dict) else None
            return value if isinstance(value, int) and value >= 0 else 0

        tokens = read_tokens(usage)
        if tokens is not None:
            return cls(tokens.prompt, tokens.completion, tokens.cached, tokens.reasoning,
                       tokens.written)
        return cls(count(usage, "prompt_tokens"), count(usage, "completion_tokens"),
                   count(usage.get("prompt_tokens_details"), "cached_tokens"),
                   count(usage.get("completion_tokens_details"), "reasoning_tokens"))


def first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    """The completion's first choice; a completion without one is the upstream's fault."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise GatewayError(ErrorCode.UPSTREAM_PROTOCOL,
                           "The upstream answered a chat completion without choices.")
    return choices[0]


@dataclass(frozen=True, slots=True)
class FirstChoiceDelta:
    """What one chat chunk says about its first choice: new text, tool-call pieces, and the
    finish reason (with the choice, whose other fields some APIs read)."""

    text: str
    tool_calls: list[dict[str, Any]]
    choice: dict[str, Any] | None


def first_choice_delta(chunk: dict[str, Any]) -> FirstChoiceDelta:
    """The first choice's delta in a chunk (the bridged APIs answer with one choice)."""
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content")
        return FirstChoiceDelta(text if isinstance(text, str) else "",
                                list(delta.get("tool_calls") or []),
                                choice if choice.get("finish_reason") else None)
    return FirstChoiceDelta("", [], None)


def tool_arguments(name: str, arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` string as the JSON object Anthropic's ``input`` must be.
    Empty means no arguments; anything that is not a JSON object is the upstream's protocol
    error (a guessed object would run the client's tool with arguments the model never gave)."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise GatewayError(ErrorCode.UPSTREAM_PROTOCOL,
                           f"The upstream's call of tool {name!r} has arguments that are not a "
                           "JSON object.")
    return value


class CallPositions:
    """Which upstream tool call a streamed delta belongs to: its ``index``, or, from an upstream
    that leaves the index out, a new position per new call ``id`` (pieces without an id belong
    to the call before them)."""

    def __init__(self) -> None:
        self._by_id: dict[str, int] = {}
        self._last: int | None = None

    def of(self, call: dict[str, Any]) -> int:
        index = call.get("index")
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        if not isinstance(index, int):
            if call_id is not None and call_id in self._by_id:
                index = self._by_id[call_id]
            elif call_id is not None:
                index = 0 if self._last is None else self._last + 1
            else:
                index = 0 if self._last is None else self._last
        if call_id is not None:
            self._by_id.setdefault(call_id, index)
        self._last = index
        return index
