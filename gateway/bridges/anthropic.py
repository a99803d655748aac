"""Anthropic's Messages API (``POST /v1/messages``) over an upstream that speaks OpenAI chat
completions: the request in, the answer and its stream out, errors in Anthropic's shape.

Decisions where the two APIs differ (each is tested):

- ``thinking`` is accepted and dropped: a chat completions upstream has no reasoning budget, and
  an answer without thinking blocks is a valid Messages answer. ``thinking`` /
  ``redacted_thinking`` blocks in the history are dropped for the same reason (only Anthropic
  can verify their signatures). ``service_tier`` and every ``cache_control`` are accepted and
  dropped: they change capacity and billing, not the answer. Content blocks ignore fields
  they do not know (clients echo the SDK's response blocks, with ``caller``, ``citations``...);
  top-level fields, tools and ``tool_choice`` are strict: an unknown one is a 400 naming it.
- ``top_k`` is passed upstream as ``top_k`` (vLLM, SGLang, DeepSeek-compatible servers take it;
  a strict upstream refuses it visibly instead of the gateway dropping it).
- Text-only content is sent as one string (blocks joined by a blank line), which every
  chat upstream accepts; content with images is sent as ``text`` / ``image_url`` parts.
- ``tool_result`` blocks become ``role: tool`` messages, in order, before the rest of the user
  turn; an ``is_error`` result's text is prefixed with ``[error] ``; images a tool returned
  follow in the next user message (a tool message cannot carry images).
- A final assistant message (prefill) is refused: a chat upstream starts a new message instead
  of continuing it, which would change the answer's meaning.
- ``stop_reason: "stop_sequence"`` is reported only when the upstream says which stop string
  matched (vLLM's ``choice.stop_reason``, SGLang's ``choice.matched_stop``): OpenAI's
  ``finish_reason: "stop"`` does not tell a stop sequence from a natural end, and OpenAI strips
  the stop string, so anything else would be a guess; then it is ``end_turn``.
- Tool call arguments that are not a JSON object are a 502 ``upstream_protocol`` (see
  ``common.tool_arguments``); in a stream the pieces are relayed as they come and the SDK's own
  JSON parser raises on them, as it would on Anthropic's.
- ``usage.input_tokens`` is the upstream's ``prompt_tokens`` minus its cached and cache-written
  tokens, which go in ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (Anthropic
  counts them apart), read from whichever shape the upstream reports them in.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.bridges.common import (
    CallPositions,
    ChatUsage,
    first_choice,
    first_choice_delta,
    sse,
    suffix,
    tool_arguments,
    unsupported,
    validate,
)
from gateway.errors import ErrorCode, GatewayError

_STRICT = ConfigDict(extra="forbid")
# Content blocks ignore fields they do not know: clients send the SDK's response blocks back as
# history, with response-only fields (``caller``, ``toolset_name``, ``citations``) in them.
_BLOCK = ConfigDict(extra="ignore")
_TAGS = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking")
Ignored = dict[str, Any] | None  # cache_control and the like: accepted, not sent upstream


class TextBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["text"]
    text: str
    cache_control: Ignored = None


class ImageSource(BaseModel):
    model_config = _BLOCK
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ImageSource:
        if self.type == "base64" and not (self.media_type and self.data):
            raise ValueError("a base64 image source needs 'media_type' and 'data'")
        if self.type == "url" and not self.url:
            raise ValueError("a url image source needs 'url'")
        return self

    def as_url(self) -> str:
        return self.url if self.type == "url" else f"data:{self.media_type};base64,{self.data}"


class ImageBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["image"]
    source: ImageSource
    cache_control: Ignored = None


class ToolUseBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: Ignored = None


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultPart] = ""
    is_error: bool = False
    cache_control: Ignored = None


class ThinkingBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(BaseModel):
    model_config = _BLOCK
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
                  | RedactedThinkingBlock, Field(discriminator="type")]


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: Ignored = None


class ToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's 'name'")
        return self


class Metadata(BaseModel):
    model_config = _STRICT
    user_id: str | None = None


class Thinking(BaseModel):
    model_config = _STRICT
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: what the prompt is made of."""

    model_config = _STRICT
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None  # dropped (see the module's docstring)


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=0)  # 0 is valid: it pre-warms Anthropic's prompt cache
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = None
    stream: bool = False
    service_tier: Literal["auto", "standard_only"] | None = None  # dropped


def _precheck(body: Any) -> None:
    """Refusals pydantic cannot word well: Anthropic's server tools, and prefill."""
    if not isinstance(body, dict):
        return
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise unsupported(f"tools.{i}.type",
                                  f"The tool type {kind!r} (an Anthropic server tool) is not "
                                  "supported by this gateway; only custom tools with an "
                                  "input_schema are.")


def _postcheck(req: CountTokensRequest, *, answering: bool) -> None:
    for i, message in enumerate(req.messages):
        if isinstance(message.content, str):
            continue
        for j, block in enumerate(message.content):
            allowed = (TextBlock, ImageBlock, ToolResultBlock) if message.role == "user" else \
                (TextBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock)
            if not isinstance(block, allowed):
                raise GatewayError(ErrorCode.INVALID_VALUE,
                                   f"{'An' if message.role == 'assistant' else 'A'} "
                                   f"{message.role} message cannot contain a "
                                   f"{block.type!r} block.",
                                   param=f"messages.{i}.content.{j}.type")
    last = len(req.messages) - 1
    if answering and req.messages[last].role == "assistant":
        raise unsupported(f"messages.{last}.role",
                          "A final assistant message (prefill) is not supported: the upstream "
                          "chat API would start a new message instead of continuing it.")


def parse_request(body: Any) -> MessagesRequest:
    """Validate a ``/v1/messages`` body; a ``GatewayError`` (400) names the bad field."""
    _precheck(body)
    req = validate(MessagesRequest, body, tags=_TAGS)
    _postcheck(req, answering=True)
    return req


def parse_count_request(body: Any) -> CountTokensRequest:
    """Validate a ``/v1/messages/count_tokens`` body."""
    _precheck(body)
    req = validate(CountTokensRequest, body, tags=_TAGS)
    _postcheck(req, answering=False)
    return req


# --- request -> chat ----------------------------------------------------------------------------

def _joined(texts: list[str]) -> str:
    return "\n\n".join(texts)


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if system is None:
        return None
    text = system if isinstance(system, str) else _joined([b.text for b in system])
    return text or None


def _content(parts: list[TextBlock | ImageBlock]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextBlock) for p in parts):
        return _joined([p.text for p in parts if isinstance(p, TextBlock)])
    return [{"type": "text", "text": p.text} if isinstance(p, TextBlock)
            else {"type": "image_url", "image_url": {"url": p.source.as_url()}} for p in parts]


def _tool_result(block: ToolResultBlock) -> tuple[dict[str, Any], list[ImageBlock]]:
    if isinstance(block.content, str):
        text, images = block.content, []
    else:
        text = _joined([p.text for p in block.content if isinstance(p, TextBlock)])
        images = [p for p in block.content if isinstance(p, ImageBlock)]
    if block.is_error:
        text = "[error] " + text
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}, images


def _user(message: Message) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    rest: list[TextBlock | ImageBlock] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            tool, images = _tool_result(block)
            out.append(tool)
            if images:
                rest.append(TextBlock(type="text",
                                      text=f"Images returned by tool call {block.tool_use_id}:"))
                rest.extend(images)
        elif isinstance(block, TextBlock | ImageBlock):
            rest.append(block)
    if rest:
        out.append({"role": "user", "content": _content(rest)})
    return out


def _assistant(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts = [b.text for b in message.content if isinstance(b, TextBlock)]
    calls = [{"id": b.id, "type": "function",
              "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()}}
             for b in message.content if isinstance(b, ToolUseBlock)]
    out: dict[str, Any] = {"role": "assistant", "content": _joined(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    elif out["content"] is None:
        out["content"] = ""
    return out


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_messages(req: CountTokensRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _system_text(req.system)
    if system is not None:
        messages.append({"role": "system", "content": system})
    for message in req.messages:
        if message.role == "user":
            messages.extend(_user(message))
        else:
            messages.append(_assistant(message))
    return messages


def chat_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def to_chat(req: MessagesRequest) -> dict[str, Any]:
    """The chat completions payload for ``req``; ``model`` as the client gave it. A stream
    always asks for usage: ``message_delta`` must carry it."""
    payload: dict[str, Any] = {"model": req.model, "messages": chat_messages(req),
                               "max_tokens": req.max_tokens}
    for name, value in (("temperature", req.temperature), ("top_p", req.top_p),
                        ("top_k", req.top_k), ("stop", req.stop_sequences or None)):
        if value is not None:
            payload[name] = value
    if req.metadata is not None and req.metadata.user_id is not None:
        payload["user"] = req.metadata.user_id
    if req.tools:
        payload["tools"] = chat_tools(req.tools)
    if req.tool_choice is not None:
        payload["tool_choice"] = _tool_choice(req.tool_choice)
        if req.tool_choice.disable_parallel_tool_use:
            payload["parallel_tool_calls"] = False
    if req.stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


# --- chat -> answer -----------------------------------------------------------------------------

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "function_call": "tool_use", "content_filter": "refusal"}


def stop_reason(choice: dict[str, Any], stop_sequences: list[str] | None,
                has_tool_calls: bool) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat choice (see the module's
    docstring on how a stop sequence is recognised)."""
    finish = choice.get("finish_reason")
    if finish == "stop" and stop_sequences:
        for field in ("stop_reason", "matched_stop"):
            matched = choice.get(field)
            if isinstance(matched, str) and matched in stop_sequences:
                return "stop_sequence", matched
    if has_tool_calls and finish in ("stop", "tool_calls", "function_call"):
        return "tool_use", None
    return _STOP_REASONS.get(finish or "stop", "end_turn"), None


def anthropic_usage(usage: ChatUsage) -> dict[str, int]:
    cached = min(usage.cached, usage.prompt)
    written = min(usage.written, usage.prompt - cached)
    return {"input_tokens": usage.prompt - cached - written,
            "output_tokens": usage.completion,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written}


def from_chat(completion: dict[str, Any], *, model: str,
              stop_sequences: list[str] | None) -> dict[str, Any]:
    """The Anthropic message for a chat completion. Raises ``GatewayError(UPSTREAM_PROTOCOL)``
    for a completion without choices or with tool arguments that are not a JSON object."""
    choice = first_choice(completion)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    for n, call in enumerate(calls):
        function = call.get("function") or {}
        name = function.get("name") or ""
        content.append({"type": "tool_use",
                        "id": call.get("id") or f"toolu_{suffix(completion.get('id'))}_{n}",
                        "name": name, "input": tool_arguments(name, function.get("arguments"))})
    reason, sequence = stop_reason(choice, stop_sequences, bool(calls))
    return {"id": "msg_" + suffix(completion.get("id")), "type": "message",
            "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": anthropic_usage(ChatUsage.read(completion.get("usage")))}


def error_event(error: GatewayError) -> bytes:
    """A failure after the stream started, as Anthropic sends it."""
    return sse("error", error.anthropic_body())


class MessagesStream:
    """Chat completion chunks in, Anthropic stream events out.

    Call ``start()`` once, ``feed(chunk)`` per upstream chunk (parsed JSON), then either
    ``finish(usage)`` when the upstream ended cleanly or ``fail(error)`` when it did not. After
    ``fail`` (or ``finish``) every call returns ``b""``: no ``message_stop`` follows an error.
    """

    def __init__(self, *, model: str, stop_sequences: list[str] | None = None,
                 input_tokens: int = 0) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self.input_tokens = input_tokens
        self.id = "msg_" + secrets.token_hex(12)
        self._index = -1  # the open block's index, -1 when none is open
        self._open: str | None = None  # "text" or "tool_use"
        self._tools: dict[int, int] = {}  # upstream tool call index -> block index
        self._positions = CallPositions()
        self._finish: dict[str, Any] = {}  # the choice fields that say why it stopped
        self._usage: Any = None
        self._done = False

    def start(self) -> bytes:
        shell = {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                 "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}
        return (sse("message_start", {"type": "message_start", "message": shell})
                + sse("ping", {"type": "ping"}))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _begin(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = block["type"]
        return out + sse("content_block_start", {"type": "content_block_start",
                                                 "index": self._index, "content_block": block})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": delta})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self._done:
            return b""
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out = b""
        step = first_choice_delta(chunk)
        if step.text:
            if self._open != "text":
                out += self._begin({"type": "text", "text": ""})
            out += self._delta(self._index, {"type": "text_delta", "text": step.text})
        for call in step.tool_calls:
            out += self._tool_delta(call)
        if step.choice is not None:
            self._finish = step.choice
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        position = self._positions.of(call)
        function = call.get("function") or {}
        if position not in self._tools:
            out += self._begin({"type": "tool_use",
                                "id": call.get("id") or f"toolu_{secrets.token_hex(12)}",
                                "name": function.get("name") or "", "input": {}})
            self._tools[position] = self._index
        pieces = function.get("arguments")
        if isinstance(pieces, str) and pieces:
            out += self._delta(self._tools[position],
                               {"type": "input_json_delta", "partial_json": pieces})
        return out

    def finish(self, usage: dict[str, Any] | None = None) -> bytes:
        """Close the stream: ``usage`` (the chat usage) if given, else the one the stream
        carried."""
        if self._done:
            return b""
        self._done = True
        reason, sequence = stop_reason(self._finish or {"finish_reason": "stop"},
                                       self.stop_sequences, bool(self._tools))
        tokens = anthropic_usage(ChatUsage.read(usage if usage is not None else self._usage))
        return (self._close()
                + sse("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": reason,
                                                  "stop_sequence": sequence},
                                        "usage": tokens})
                + sse("message_stop", {"type": "message_stop"}))

    def fail(self, error: GatewayError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return error_event(error)


# --- count_tokens -------------------------------------------------------------------------------

# A word with its leading space, a run of digits, a run of whitespace, a run of punctuation.
_PIECES = re.compile(r" ?[^\W\d_]+| ?\d+|\s+|[^\w\s]+|_")
WORD_LETTERS = 10  # an ASCII word is one token per this many letters (common words: one)
DIGITS = 3  # digits per token
MARKS = 3  # punctuation characters per token
IMAGE_TOKENS = 1600  # Anthropic: about width*height/750, at most ~1,600 for a resized image
MESSAGE_TOKENS = 4  # role and separators per message
TOOL_TOKENS = 12  # the framing of one tool definition


def text_tokens(text: str) -> int:
    """Estimated tokens of ``text``, piece by piece (``_PIECES``): an ASCII word one per
    ``WORD_LETTERS`` letters, a non-ASCII word one per letter, digits one per ``DIGITS``,
    whitespace one per run, punctuation one per ``MARKS`` characters. The constants were fitted
    to Claude's legacy tokenizer (docs/apis.md gives the measured error)."""
    total = 0
    for piece in _PIECES.findall(text):
        core = piece.lstrip(" ") or piece
        if core.isspace():
            total += 1
        elif core[0].isdigit():
            total += math.ceil(len(core) / DIGITS)
        elif core[0].isalpha():
            total += math.ceil(len(core) / WORD_LETTERS) if core.isascii() else len(core)
        else:
            total += math.ceil(len(core) / MARKS)
    return total


def count_tokens(req: CountTokensRequest) -> int:
    """A local estimate of the prompt's input tokens (no upstream call, no download): the
    chat messages' text and tool-call JSON by ``text_tokens``, plus ``MESSAGE_TOKENS`` per
    message, ``IMAGE_TOKENS`` per image and each tool's name, description and JSON schema plus
    ``TOOL_TOKENS``. The upstream's own count (chat ``usage.prompt_tokens``) stays the one that
    is billed."""
    total = 0
    for message in chat_messages(req):
        total += MESSAGE_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                total += text_tokens(part["text"]) if part["type"] == "text" else IMAGE_TOKENS
        for call in message.get("tool_calls") or []:
            total += text_tokens(call["function"]["name"] + call["function"]["arguments"])
    for tool in req.tools or []:
        total += TOOL_TOKENS + text_tokens(tool.name + " " + (tool.description or "") + " "
                                           + orjson.dumps(tool.input_schema).decode())
    return total
