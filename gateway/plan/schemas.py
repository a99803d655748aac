"""Pydantic models at the edges: what a chat request must look like, what ``/call`` answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ErrorCode, GatewayError, bad_request


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields the gateway reads; everything else passes through to the upstream untouched."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1)
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # No bounds of the gateway's own: the spec sets none, the upstream judges.
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CallResponse(BaseModel):
    """The seed's simplified answer."""

    id: str
    model: str
    content: str
    finish_reason: str | None = None
    usage: Usage
    latency_ms: float
    cost_usd: float | None
    cache: str | None = None
    similarity: float | None = None
    saved_usd: float | None = None


def validate_chat(body: Any) -> ChatRequest:
    """Validate a decoded JSON body, turning problems into a 400 that names the field."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if body.get("messages") == []:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise GatewayError(ErrorCode.INVALID_VALUE, f"Invalid value for '{field}': {err['msg']}.",
                           param=field) from None
