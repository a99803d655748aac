"""What the fake provider says: pure functions from a request to text, JSON or tool calls.

Deterministic on purpose: the same request always gets the same answer, tool-call ids included,
so a test can compare a stream with a plain answer, or a cache replay with the original.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

WORD = re.compile(r"\w+")
PARALLEL = re.compile(r"\bparallel\b", re.IGNORECASE)
MAX_DEPTH = 12
FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00Z",
           "email": "fake@example.com", "uri": "https://example.com/fake",
           "uuid": "00000000-0000-4000-8000-000000000000"}


class Finish(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"


class Format(StrEnum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class RequestError(Exception):
    """A request a real provider would refuse with 400; rendered in OpenAI's error shape."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class ChatAnswer:
    content: str | None
    tool_calls: list[ToolCall]
    finish: Finish
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class TextAnswer:
    text: str
    finish: Finish
    completion_tokens: int


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text for p in content
                        if isinstance(p, dict) and isinstance(text := p.get("text"), str))
    return ""


def filler(seed: str, size: int) -> str:
    return (seed * (size // max(1, len(seed)) + 1))[:size]


def token_limit(request: dict[str, Any], default: int | None = None) -> int | None:
    """``max_tokens`` and ``max_completion_tokens`` (the smaller wins); below 1 is refused."""
    plain = request.get("max_tokens")
    if type(plain) is int and plain >= 1 and request.get("max_completion_tokens") is None:
        return plain  # the common case, kept cheap: this is the benchmarks' baseline path
    given = []
    for param in ("max_tokens", "max_completion_tokens"):
        value = request.get(param)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise RequestError(f"Invalid type for '{param}': expected an integer.", param,
                               "invalid_type")
        if value < 1:
            raise RequestError(f"Invalid '{param}': integer below minimum value. Expected a value "
                               f">= 1, but got {value} instead.", param, "integer_below_min_value")
        given.append(value)
    return min(given) if given else default


def stop_sequences(request: dict[str, Any]) -> tuple[str, ...]:
    stop = request.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise RequestError("Invalid 'stop': expected a string or a list of at most 4 strings.", "stop")


def cut(text: str, stops: tuple[str, ...], limit: int | None) -> tuple[str, Finish]:
    """Cut just before the first stop sequence, then at ``limit`` tokens (4 characters each)."""
    finish = Finish.STOP
    if stops:
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            text = text[:min(found)]
    if limit is not None and len(text) // 4 > limit:
        text, finish = text[:limit * 4], Finish.LENGTH
    return text, finish


class Words:
    """The last user message's words, handed out in turn (``fake`` when it has none)."""

    def __init__(self, text: str) -> None:
        self._words = WORD.findall(text) or ["fake"]
        self._next = 0

    def take(self) -> str:
        word = self._words[self._next % len(self._words)]
        self._next += 1
        return word


def schema_instance(schema: Any, words: Words, root: Any = None, depth: int = 0) -> Any:
    """A JSON value valid against ``schema``: objects get their required properties (all of
    them when ``required`` is absent), enums their first value, strings the next word, numbers
    1 (or 1.5) moved inside the bounds, booleans true, arrays ``max(1, minItems)`` items."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return words.take()
    if depth > MAX_DEPTH:
        return None
    if isinstance(schema.get("$ref"), str):
        return schema_instance(_resolve(root, schema["$ref"]), words, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not (isinstance(o, dict)
                                                      and o.get("type") == "null")), options[0])
            return schema_instance(chosen, words, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return schema_instance(_merge(schema, root), words, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        return {name: schema_instance(props.get(name, {}), words, root, depth + 1)
                for name in names}
    if kind == "array":
        count = max(schema["minItems"], 1) if isinstance(schema.get("minItems"), int) else 1
        if schema.get("maxItems") == 0:
            count = 0
        items = schema.get("items", {})
        return [schema_instance(items, words, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, words)


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref.removeprefix("#").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


def _merge(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[Any] = list(merged.get("required") or [])
    for part in schema["allOf"]:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str):
            part = _resolve(root, part["$ref"])
        if not isinstance(part, dict):
            continue
        props.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if r not in required)
        for key, value in part.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    value: float = 1 if integer else 1.5
    low, high = schema.get("minimum"), schema.get("maximum")
    low_ex, high_ex = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(low_ex, int | float) and value <= low_ex:
        value = math.floor(low_ex) + 1 if integer else low_ex + 0.5
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(high_ex, int | float) and value >= high_ex:
        value = math.ceil(high_ex) - 1 if integer else high_ex - 0.5
    return int(value) if integer else float(value)


def _string(schema: dict[str, Any], words: Words) -> str:
    fmt = schema.get("format")
    text = FORMATS[fmt] if fmt in FORMATS else words.take()
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text * (low // max(1, len(text)) + 1))[:low]
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def function_tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``function`` tools (``[]`` without any), each ``{"name", "parameters"}``."""
    tools = request.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError("Invalid 'tools': expected an array.", "tools", "invalid_type")
    found = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(f"Missing required parameter: 'tools[{i}].function.name'.",
                               f"tools[{i}].function.name", "missing_required_parameter")
        found.append(function)
    return found


def choose_tools(request: dict[str, Any], tools: list[dict[str, Any]],
                 last_user: str) -> list[dict[str, Any]]:
    """Which tools get called: a named ``tool_choice`` → that one; ``"none"`` → none; otherwise
    every tool when there are ≥2, ``parallel_tool_calls`` is not false and the last user message
    has the word "parallel"; otherwise the first."""
    choice = request.get("tool_choice")
    if choice == "none" or not tools:
        return []
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        named = [t for t in tools if t["name"] == name]
        if not named:
            raise RequestError(f"Invalid 'tool_choice': no function named {name!r} in 'tools'.",
                               "tool_choice")
        return named
    if choice not in (None, "auto", "required"):
        raise RequestError("Invalid 'tool_choice': expected 'none', 'auto', 'required' or a "
                           "named function.", "tool_choice")
    if len(tools) >= 2 and request.get("parallel_tool_calls") is not False \
            and PARALLEL.search(last_user):
        return tools
    return tools[:1]


def tool_calls(chosen: list[dict[str, Any]], last_user: str) -> list[ToolCall]:
    calls = []
    for index, tool in enumerate(chosen):
        arguments = orjson.dumps(schema_instance(tool.get("parameters") or {"type": "object"},
                                                 Words(last_user))).decode()
        digest = hashlib.sha256(f"{index}\0{tool['name']}\0{arguments}\0{last_user}".encode())
        calls.append(ToolCall(f"call_{digest.hexdigest()[:24]}", tool["name"], arguments))
    return calls


def response_format(request: dict[str, Any]) -> tuple[Format, Any]:
    spec = request.get("response_format")
    if spec is None:
        return Format.TEXT, None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in Format.__members__.values():
        raise RequestError("Invalid 'response_format.type': expected 'text', 'json_object' or "
                           "'json_schema'.", "response_format.type")
    if kind != Format.JSON_SCHEMA:
        return Format(kind), None
    inner = spec.get("json_schema")
    if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
        raise RequestError("Missing required parameter: 'response_format.json_schema.name'.",
                           "response_format.json_schema.name", "missing_required_parameter")
    return Format.JSON_SCHEMA, inner.get("schema") or {"type": "object"}


def chat_answer(request: dict[str, Any], content_chars: int) -> ChatAnswer:
    """The answer to a chat request: tool calls, a tool result's echo, JSON, or filler text."""
    raw = request.get("messages")
    messages = raw if isinstance(raw, list) else []
    limit = token_limit(request)
    stops = stop_sequences(request)
    fmt, schema = response_format(request)
    last_user, prompt_tokens = "", 0
    for message in messages:
        if isinstance(message, dict):
            text = text_of(message.get("content"))
            prompt_tokens += len(text) // 4 + 4
            if message.get("role") == "user":
                last_user = text
    last = messages[-1] if messages else None
    last_is_tool = isinstance(last, dict) and last.get("role") == "tool"
    tools = function_tools(request)
    if tools and not last_is_tool:
        chosen = choose_tools(request, tools, last_user)
        if chosen:
            calls = tool_calls(chosen, last_user)
            size = sum(len(c.name) + len(c.arguments) for c in calls)
            return ChatAnswer(None, calls, Finish.TOOL_CALLS, prompt_tokens, max(1, size // 4))
    if isinstance(last, dict) and last_is_tool:
        text = f"Tool result received: {text_of(last.get('content'))}"
    elif fmt is Format.JSON_OBJECT:
        text = orjson.dumps({"answer": f"Fake answer to: {last_user}."}).decode()
    elif fmt is Format.JSON_SCHEMA:
        text = orjson.dumps(schema_instance(schema, Words(last_user))).decode()
    else:
        text = filler(f"Fake answer to: {last_user}. ", content_chars)
    content, finish = cut(text, stops, limit)
    return ChatAnswer(content, [], finish, prompt_tokens, max(1, len(content) // 4))


def prompts(request: dict[str, Any]) -> list[str]:
    """A legacy completion's prompts: a string, a list of strings, or token arrays."""
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [str(prompt)]
        if all(isinstance(p, str | list) for p in prompt):
            return [p if isinstance(p, str) else str(p) for p in prompt]
    raise RequestError("Invalid 'prompt': expected a string or a non-empty list of strings.",
                       "prompt", "invalid_type" if prompt is not None else
                       "missing_required_parameter")


def completion_answer(prompt: str, content_chars: int, limit: int | None,
                      stops: tuple[str, ...]) -> TextAnswer:
    text, finish = cut(filler(f"Fake completion of: {prompt}. ", content_chars), stops, limit)
    return TextAnswer(text, finish, max(1, len(text) // 4))


def split(text: str, pieces: int) -> Iterator[str]:
    """``text`` in ``pieces`` near-equal parts (fewer when it is shorter), none empty."""
    step = max(1, -(-len(text) // max(1, pieces)))
    return (text[i:i + step] for i in range(0, len(text), step))
