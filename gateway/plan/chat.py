"""Turning a client's chat request into what the router sends upstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.catalog import Catalog, ModelEntry
from gateway.errors import ErrorCode, bad_request, model_not_found
from gateway.plan.schemas import validate_chat


@dataclass(slots=True)
class ChatPlan:
    """A validated chat request: which catalog model, and the body to send upstream."""

    model: str
    entry: ModelEntry
    payload: dict[str, Any]
    stream: bool
    wants_usage: bool
    path: str = "/chat/completions"  # "/completions": legacy completions sent upstream natively
    cacheable: bool = True  # the cache keeps chat completions only


def without_nulls(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's spec makes most optional parameters nullable: a top-level null means absent."""
    if any(value is None for value in body.values()):
        return {key: value for key, value in body.items() if value is not None}
    return body


def plan_chat(catalog: Catalog, body: Any, *, catalog_defaults: bool) -> ChatPlan:
    """Validate ``body`` and prepare the upstream payload.

    ``catalog_defaults`` (the ``/call`` contract) fills a missing model, ``max_tokens`` and
    ``temperature`` from the catalog; the OpenAI API passes the client's choices through as
    they are. Streams always ask the upstream for usage, so every stream can be priced.
    """
    if isinstance(body, dict):
        body = without_nulls(body)
    request = validate_chat(body)
    name = request.model
    if name is None:
        if not catalog_defaults:
            raise bad_request("'model' is required.", param="model",
                              code=ErrorCode.MISSING_PARAMETER)
        name = catalog.default_model
    entry = catalog.get(name)
    if entry is None:
        raise model_not_found(name)
    if entry.kind != "chat":
        raise bad_request(f"The model {name!r} is not a chat model.", param="model",
                          code=ErrorCode.MODEL_NOT_SUPPORTED)
    payload = dict(body)
    if catalog_defaults:
        for key in ("max_tokens", "temperature"):
            if payload.get(key) is None and getattr(entry, key) is not None:
                payload[key] = getattr(entry, key)
    wants_usage = False
    if request.stream:
        wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return ChatPlan(name, entry, payload, request.stream, wants_usage)
