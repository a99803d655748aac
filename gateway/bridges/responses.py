"""OpenAI's Responses API (``POST /v1/responses``) over an upstream that speaks chat
completions: the request in, the ``response`` object and its event stream out. Errors keep
OpenAI's shape (``GatewayError.body()``), as the Responses API does.

Decisions where the two APIs differ (each is tested):

- Nothing is stored: ``store: true``, ``previous_response_id``, ``conversation``,
  ``background: true`` and ``prompt`` are a 400 naming the field (the client must send the
  whole conversation, as with ``store: false``). Every answer echoes ``store: false``.
- Only ``function`` tools: a built-in tool (``web_search``, ``file_search``...) is a 400
  naming its type.
- ``instructions`` becomes the first system message; ``developer`` messages are sent as
  ``system`` (which every chat upstream takes).
- ``reasoning.effort`` goes upstream as ``reasoning_effort``; ``reasoning.summary`` and
  ``include: ["reasoning.encrypted_content"]`` are accepted and give nothing (the answer has no
  reasoning items); ``reasoning`` items in the input are dropped (only OpenAI can read them).
  Any other ``include`` is a 400.
- ``prompt_cache_key``, ``safety_identifier``, ``service_tier`` and ``text.verbosity`` mean the
  same in chat completions and go upstream unchanged; ``stream_options.include_obfuscation``
  is accepted and has nothing to pad.
- ``truncation`` is accepted either way; the gateway never truncates (an over-long input fails
  upstream, as with ``disabled``). ``metadata`` is echoed, not sent upstream.
- Items the SDK sends back from an earlier ``response.output`` keep their ``id`` / ``status``
  (ignored). A ``function_call`` right after an assistant message joins that message's
  ``tool_calls``. Images in a ``function_call_output`` are a 400 (a tool message is text).
- ``finish_reason: length`` is ``status: incomplete`` with ``incomplete_details.reason =
  "max_output_tokens"`` (``content_filter`` likewise); a stream then ends with
  ``response.incomplete``, as OpenAI's does. Tool call ``arguments`` stay the upstream's string.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from gateway.bridges.common import (
    CallPositions,
    ChatUsage,
    first_choice,
    first_choice_delta,
    sse,
    suffix,
    unsupported,
    validate,
)
from gateway.errors import GatewayError

_STRICT = ConfigDict(extra="forbid")
_ITEM = ConfigDict(extra="ignore")  # items echoed from an earlier response carry id, status...
_TAGS = ("message", "function_call", "function_call_output", "reasoning", "input_text",
         "input_image", "output_text", "refusal")


class InputText(BaseModel):
    model_config = _ITEM
    type: Literal["input_text"]
    text: str


class InputImage(BaseModel):
    model_config = _ITEM
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class OutputText(BaseModel):
    model_config = _ITEM
    type: Literal["output_text"]
    text: str


class Refusal(BaseModel):
    model_config = _ITEM
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | OutputText | Refusal, Field(discriminator="type")]


class MessageItem(BaseModel):
    model_config = _ITEM
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(BaseModel):
    model_config = _ITEM
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = _ITEM
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]


class ReasoningItem(BaseModel):
    model_config = _ITEM
    type: Literal["reasoning"]


def _item_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", None)


Item = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind)]


class FunctionTool(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    def chat(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        schema: dict[str, Any] = {"name": self.name or "response", "schema": self.schema_ or {}}
        if self.strict is not None:
            schema["strict"] = self.strict
        if self.description is not None:
            schema["description"] = self.description
        return {"type": "json_schema", "json_schema": schema}


class TextConfig(BaseModel):
    model_config = _STRICT
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesStreamOptions(BaseModel):
    model_config = _STRICT
    include_obfuscation: bool | None = None  # padding in deltas: nothing to pad here


class Reasoning(BaseModel):
    model_config = _STRICT
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(BaseModel):
    model_config = _STRICT
    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    store: Literal[False] | None = None
    reasoning: Reasoning | None = None
    include: list[Literal["reasoning.encrypted_content"]] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: Literal[False] | None = None
    stream_options: ResponsesStreamOptions | None = None
    # Chat completions takes these too: passed upstream unchanged.
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None


# Fields the gateway refuses with a reason of their own (not just "unknown").
_REFUSED = {
    "previous_response_id": "Responses are not stored by this gateway: send the whole "
                            "conversation in 'input' instead of 'previous_response_id'.",
    "conversation": "Conversations are not stored by this gateway: send the whole "
                    "conversation in 'input'.",
    "prompt": "Stored prompt templates are not supported by this gateway.",
}


def _precheck(body: Any) -> None:
    if not isinstance(body, dict):
        return
    for name, message in _REFUSED.items():
        if body.get(name) is not None:
            raise unsupported(name, message)
    if body.get("store") is True:
        raise unsupported("store", "Responses are not stored by this gateway: send "
                                   "'store': false or leave it out.")
    if body.get("background") is True:
        raise unsupported("background", "Background responses are not supported by this "
                                        "gateway.")
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise unsupported(f"tools.{i}.type",
                                  f"The tool type {kind!r} is not supported by this gateway; "
                                  "only 'function' tools are.")
    items = body.get("input")
    if isinstance(items, list):
        for i, item in enumerate(items):
            output = item.get("output") if isinstance(item, dict) else None
            if item.get("type") == "function_call_output" and isinstance(output, list) and any(
                    isinstance(p, dict) and p.get("type") == "input_image" for p in output):
                raise unsupported(f"input.{i}.output", "Images in a function_call_output are "
                                                       "not supported by this gateway.")


def parse_request(body: Any) -> ResponsesRequest:
    """Validate a ``/v1/responses`` body; a ``GatewayError`` (400) names the bad field."""
    _precheck(body)
    return validate(ResponsesRequest, body, tags=_TAGS)


# --- request -> chat ----------------------------------------------------------------------------

def _text_of(parts: list[Any]) -> str:
    return "\n\n".join(p.text if hasattr(p, "text") else p.refusal for p in parts)


def _content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not any(isinstance(p, InputImage) for p in content):
        return _text_of(content)
    out: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, InputImage):
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail is not None:
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
        else:
            out.append({"type": "text", "text": _text_of([part])})
    return out


def chat_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    items = [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) \
        else req.input
    for item in items:
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _content(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else _text_of(item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _chat_tool_choice(choice: str | NamedFunction) -> str | dict[str, Any]:
    if isinstance(choice, NamedFunction):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def to_chat(req: ResponsesRequest) -> dict[str, Any]:
    """The chat completions payload for ``req``; ``model`` as the client gave it. A stream
    always asks for usage: ``response.completed`` must carry it."""
    payload: dict[str, Any] = {"model": req.model, "messages": chat_messages(req)}
    for name, value in (("max_tokens", req.max_output_tokens), ("temperature", req.temperature),
                        ("top_p", req.top_p), ("user", req.user),
                        ("parallel_tool_calls", req.parallel_tool_calls),
                        ("prompt_cache_key", req.prompt_cache_key),
                        ("safety_identifier", req.safety_identifier),
                        ("service_tier", req.service_tier),
                        ("verbosity", req.text.verbosity if req.text else None)):
        if value is not None:
            payload[name] = value
    if req.tools:
        payload["tools"] = [{"type": "function", "function": tool.model_dump(
            exclude={"type"}, exclude_none=True)} for tool in req.tools]
    if req.tool_choice is not None:
        payload["tool_choice"] = _chat_tool_choice(req.tool_choice)
    if req.text is not None and req.text.format is not None:
        response_format = req.text.format.chat()
        if response_format is not None:
            payload["response_format"] = response_format
    if req.reasoning is not None and req.reasoning.effort is not None:
        payload["reasoning_effort"] = req.reasoning.effort
    if req.stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


# --- chat -> response ---------------------------------------------------------------------------

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def responses_usage(usage: ChatUsage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt,
            "input_tokens_details": {"cached_tokens": usage.cached,
                                     "cache_write_tokens": usage.written},
            "output_tokens": usage.completion,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.prompt + usage.completion}


def _text_echo(text: TextConfig | None) -> dict[str, Any]:
    echo: dict[str, Any] = {"format": {"type": "text"}}
    if text is not None and text.format is not None:
        echo["format"] = text.format.model_dump(by_alias=True, exclude_none=True)
    if text is not None and text.verbosity is not None:
        echo["verbosity"] = text.verbosity
    return echo


def _shell(req: ResponsesRequest, response_id: str, created_at: float,
           model: str | None) -> dict[str, Any]:
    """The ``response`` object's fields that echo the request."""
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "error": None, "incomplete_details": None,
        "instructions": req.instructions, "model": model or req.model, "output": [],
        "parallel_tool_calls": True if req.parallel_tool_calls is None
        else req.parallel_tool_calls,
        "tool_choice": "auto" if req.tool_choice is None
        else req.tool_choice if isinstance(req.tool_choice, str)
        else req.tool_choice.model_dump(),
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "temperature": req.temperature, "top_p": req.top_p,
        "max_output_tokens": req.max_output_tokens,
        "text": _text_echo(req.text),
        "reasoning": req.reasoning.model_dump() if req.reasoning is not None else None,
        "metadata": req.metadata or {}, "user": req.user, "store": False,
        "background": False, "previous_response_id": None,
        "truncation": req.truncation or "disabled", "usage": None,
        "service_tier": req.service_tier, "prompt_cache_key": req.prompt_cache_key,
        "safety_identifier": req.safety_identifier,
    }


def _finished(response: dict[str, Any], finish: Any, usage: Any) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = responses_usage(ChatUsage.read(usage))
    return response


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str,
               status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def from_chat(completion: dict[str, Any], *, request: ResponsesRequest,
              model: str | None = None) -> dict[str, Any]:
    """The ``response`` object for a chat completion; ``model`` is the one that answered (after
    a fallback), the request's by default. Raises ``GatewayError(UPSTREAM_PROTOCOL)`` for a
    completion without choices."""
    choice = first_choice(completion)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    stem = suffix(completion.get("id"))
    created = completion.get("created")
    response = _shell(request, "resp_" + stem,
                      created if isinstance(created, int | float) else time.time(), model)
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    text = message.get("content")
    if isinstance(text, str) and text:
        response["output"].append(_message_item("msg_" + stem, text, status))
    for n, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        response["output"].append(_call_item(
            f"fc_{stem}_{n}", call.get("id") or f"call_{stem}_{n}", function.get("name") or "",
            arguments if isinstance(arguments, str) else "", "completed"))
    return _finished(response, finish, completion.get("usage"))


class ResponsesStream:
    """Chat completion chunks in, Responses stream events out (each with its
    ``sequence_number``).

    ``start()`` once (``response.created``, ``response.in_progress``), ``feed(chunk)`` per
    upstream chunk, then ``finish(usage)`` (``response.completed``, or ``response.incomplete``
    after a length cut) or ``fail(error)`` (``response.failed``: the SDK's
    ``get_final_response()`` raises, LangChain raises). After either, every call returns
    ``b""``.
    """

    def __init__(self, request: ResponsesRequest, *, model: str | None = None) -> None:
        self.request = request
        self.stem = secrets.token_hex(12)
        self.response = _shell(request, "resp_" + self.stem, time.time(), model)
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # every output item so far, as it stands
        self._open: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # upstream tool call index -> its item
        self._positions = CallPositions()
        self._finish: Any = None
        self._usage: Any = None
        self._done = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse(kind, data)

    def _snapshot(self) -> dict[str, Any]:
        return {**self.response, "output": [dict(item) for item in self._items]}

    def start(self) -> bytes:
        return (self._event("response.created", response=self._snapshot())
                + self._event("response.in_progress", response=self._snapshot()))

    def _add(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._items.append(item)
        self._open = item
        return out + self._event("response.output_item.added", output_index=len(self._items) - 1,
                                 item=dict(item))

    def _close(self, status: str = "completed") -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = self._items.index(item)
        out = b""
        item["status"] = status
        if item["type"] == "message":
            part = item["content"][0]
            out += self._event("response.output_text.done", item_id=item["id"],
                               output_index=index, content_index=0, text=part["text"],
                               logprobs=[])
            out += self._event("response.content_part.done", item_id=item["id"],
                               output_index=index, content_index=0, part=dict(part))
        else:
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index, name=item["name"],
                               arguments=item["arguments"])
        return out + self._event("response.output_item.done", output_index=index,
                                 item={**item, "content": [dict(p) for p in item["content"]]}
                                 if item["type"] == "message" else dict(item))

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self._done:
            return b""
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out = b""
        step = first_choice_delta(chunk)
        if step.text:
            out += self._text(step.text)
        for call in step.tool_calls:
            out += self._tool(call)
        if step.choice is not None:
            self._finish = step.choice["finish_reason"]
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item["type"] != "message":
            item = _message_item(f"msg_{self.stem}_{len(self._items)}", "", "in_progress")
            item["content"] = []
            out += self._add(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.content_part.added", item_id=item["id"],
                               output_index=len(self._items) - 1, content_index=0,
                               part=dict(part))
            item["content"].append(part)
        item["content"][0]["text"] += text
        return out + self._event("response.output_text.delta", item_id=item["id"],
                                 output_index=self._items.index(item), content_index=0,
                                 delta=text, logprobs=[])

    def _tool(self, call: dict[str, Any]) -> bytes:
        out = b""
        position = self._positions.of(call)
        function = call.get("function") or {}
        item = self._calls.get(position)
        if item is None:
            n = len(self._items)
            item = _call_item(f"fc_{self.stem}_{n}", call.get("id") or f"call_{self.stem}_{n}",
                              function.get("name") or "", "", "in_progress")
            out += self._add(item)
            self._calls[position] = item
        pieces = function.get("arguments")
        if isinstance(pieces, str) and pieces:
            item["arguments"] += pieces
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=self._items.index(item), delta=pieces)
        return out

    def finish(self, usage: dict[str, Any] | None = None) -> bytes:
        """Close the stream: ``usage`` (the chat usage) if given, else the one the stream
        carried."""
        if self._done:
            return b""
        self._done = True
        incomplete = self._finish in _INCOMPLETE
        out = self._close("incomplete" if incomplete else "completed")
        final = _finished(self._snapshot(), self._finish,
                          usage if usage is not None else self._usage)
        kind = "response.incomplete" if incomplete else "response.completed"
        return out + self._event(kind, response=final)

    def fail(self, error: GatewayError) -> bytes:
        if self._done:
            return b""
        self._done = True
        for item in self._items:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        failed = {**self._snapshot(), "status": "failed",
                  "error": {"code": error.code or "server_error", "message": error.message}}
        return self._event("response.failed", response=failed)
