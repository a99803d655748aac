"""Legacy text completions (``POST /v1/completions``) over chat completions, for an upstream
that does not serve ``/v1/completions`` itself (when it does, the request goes there as it is).

The prompt becomes one user message, so a chat model answers it rather than continuing it
token for token: that is what this fallback can honestly offer. Decisions (each is tested):

- ``prompt``: a string, or a list of exactly one string. Several prompts would be several
  upstream calls (a 400 naming ``prompt``); token-id prompts cannot be sent to a chat API (400).
- ``echo: true`` puts the prompt in front of the text (in the first chunk of each choice when
  streaming), as OpenAI does. ``logprobs``, ``suffix`` and ``best_of`` > 1 are a 400 naming the
  field: chat completions has no insertion, no best-of, and a different logprobs shape.
- ``n``, ``stop``, sampling and penalty parameters, ``seed``, ``logit_bias`` and ``user`` mean
  the same in both APIs and go upstream unchanged.
- Errors keep OpenAI's shape; a failure inside a stream is ``GatewayError.sse_event()`` with no
  ``[DONE]`` (the SDK raises).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.bridges.common import ChatUsage, suffix, unsupported, validate
from gateway.errors import ErrorCode, GatewayError


class CompletionsStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = None


class CompletionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False
    stream_options: CompletionsStreamOptions | None = None
    echo: bool = False
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    logprobs: None = None
    suffix: None = None
    best_of: int | None = Field(default=None, ge=0, le=1)

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _precheck(body: Any) -> None:
    if not isinstance(body, dict):
        return
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if prompt and not all(isinstance(p, str) for p in prompt):
            raise unsupported("prompt", "Token-id prompts are not supported by this gateway: "
                                        "send the prompt as a string.")
        if len(prompt) != 1:
            raise unsupported("prompt", "Send one prompt per request: a list of several "
                                        "prompts is not supported by this gateway.")
    for name, why in (("logprobs", "logprobs are not supported on legacy completions"),
                      ("suffix", "'suffix' (insertion) is not supported"),
                      ("best_of", "'best_of' above 1 is not supported")):
        value = body.get(name)
        if value is not None and not (name == "best_of" and value in (0, 1)):
            raise unsupported(name, f"{why} by this gateway.")


def parse_request(body: Any) -> CompletionsRequest:
    """Validate a ``/v1/completions`` body; a ``GatewayError`` (400) names the bad field.
    A top-level null means absent, as on chat (the spec makes these nullable); a null prompt
    is the spec's default document, taken here as the empty prompt."""
    if isinstance(body, dict):
        body = {key: "" if value is None else value for key, value in body.items()
                if value is not None or key == "prompt"}
    _precheck(body)
    return validate(CompletionsRequest, body)


def to_chat(req: CompletionsRequest) -> dict[str, Any]:
    """The chat payload: the prompt as the one user message. A stream always asks for usage."""
    payload: dict[str, Any] = {"model": req.model,
                               "messages": [{"role": "user", "content": req.text}],
                               "max_tokens": req.max_tokens}
    for name in ("temperature", "top_p", "stop", "n", "presence_penalty", "frequency_penalty",
                 "seed", "logit_bias", "user"):
        value = getattr(req, name)
        if value is not None and value != []:
            payload[name] = value
    if req.stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def _usage(usage: Any) -> dict[str, int]:
    tokens = ChatUsage.read(usage)
    return {"prompt_tokens": tokens.prompt, "completion_tokens": tokens.completion,
            "total_tokens": tokens.prompt + tokens.completion}


def _finish(reason: Any) -> str | None:
    """Legacy completions know ``stop``, ``length`` and ``content_filter``."""
    if reason is None:
        return None
    return reason if reason in ("length", "content_filter") else "stop"


def from_chat(completion: dict[str, Any], *, request: CompletionsRequest) -> dict[str, Any]:
    """The ``text_completion`` object for a chat completion (every choice, in order)."""
    choices = []
    for position, choice in enumerate(completion.get("choices") or []):
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message.get("content"), str) else ""
        choices.append({"text": (request.text if request.echo else "") + text,
                        "index": choice.get("index", position), "logprobs": None,
                        "finish_reason": _finish(choice.get("finish_reason")) or "stop"})
    if not choices:
        raise GatewayError(ErrorCode.UPSTREAM_PROTOCOL,
                           "The upstream answered a chat completion without choices.")
    created = completion.get("created")
    return {"id": "cmpl-" + suffix(completion.get("id")), "object": "text_completion",
            "created": created if isinstance(created, int) else int(time.time()),
            "model": completion.get("model") or request.model, "choices": choices,
            "usage": _usage(completion.get("usage"))}


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class CompletionsStream:
    """Chat completion chunks in, ``text_completion`` chunks out (``data: ...`` events; the
    caller sends ``data: [DONE]`` after a clean end). The usage chunk is passed on only when the
    client asked for it (``stream_options.include_usage``)."""

    def __init__(self, request: CompletionsRequest) -> None:
        self.request = request
        self._echoed: set[int] = set()
        self._failed = False

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self._failed:
            return b""
        created = chunk.get("created")
        shell = {"id": "cmpl-" + suffix(chunk.get("id")), "object": "text_completion",
                 "created": created if isinstance(created, int) else int(time.time()),
                 "model": chunk.get("model") or self.request.model}
        out = b""
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            text = (choice.get("delta") or {}).get("content")
            text = text if isinstance(text, str) else ""
            if self.request.echo and index not in self._echoed:
                self._echoed.add(index)
                text = self.request.text + text
            finish = _finish(choice.get("finish_reason"))
            if text or finish:
                out += _data({**shell, "choices": [{"text": text, "index": index,
                                                    "logprobs": None,
                                                    "finish_reason": finish}]})
        if chunk.get("usage") and self.request.wants_usage:
            out += _data({**shell, "choices": [], "usage": _usage(chunk["usage"])})
        return out

    def fail(self, error: GatewayError) -> bytes:
        """The failure as OpenAI's in-stream error event; the caller must not send [DONE]."""
        if self._failed:
            return b""
        self._failed = True
        return error.sse_event()

