"""The seed's own API: ``POST /call`` (simplified answer), ``GET /models``, ``GET /health``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..pricing import to_micro
from ..router import Served
from ..schemas import CallResponse, Usage
from ..sse import encode
from .flow import ChatCall, gateway_of, relay, run_chat
from .streaming import EventStream


def _dollars(cost: Decimal | None) -> float | None:
    return None if cost is None else float(to_micro(cost))


def simplify(served: Served, usage: Usage, cost: Decimal | None, latency_ms: float) -> CallResponse:
    """The seed's answer shape from an upstream chat completion."""
    data = served.result.data
    choice = (data.get("choices") or [{}])[0]
    return CallResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model") or served.entry.upstream_model),
        content=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        latency_ms=latency_ms,
        cost_usd=_dollars(cost),
    )


async def call(request: Request) -> Response:
    chat = await run_chat(request, "/call", seed_defaults=True)
    if chat.plan.stream:
        render, finish = _stream_format(chat)
        return EventStream(relay(chat, render, finish), chat.headers())
    data = chat.served.result.data
    usage, cost = chat.book.charge(chat.served, data.get("usage"))
    answer = simplify(chat.served, usage, cost, chat.book.elapsed_ms())
    answer.cache = chat.cache_status
    answer.similarity = chat.similarity
    if chat.served.cached:
        answer.saved_usd = _dollars(chat.saved())
    chat.book.close()
    return Response(answer.model_dump_json(), media_type="application/json",
                    headers=chat.headers())


def _stream_format(
    chat: ChatCall,
) -> tuple[Callable[[bytes, dict[str, Any]], bytes | None], Callable[[Usage, Decimal | None], bytes]]:
    """``data: {"id", "model", "content"}`` per delta, then one closing event with
    ``finish_reason``, ``usage``, ``latency_ms`` and ``cost_usd``, then ``[DONE]``."""
    seen = {"id": "", "model": chat.served.entry.upstream_model}

    def render(_: bytes, chunk: dict[str, Any]) -> bytes | None:
        seen["id"] = seen["id"] or str(chunk.get("id", ""))
        seen["model"] = chunk.get("model") or seen["model"]
        parts = [(c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()]
        text = "".join(p for p in parts if p)
        if not text:
            return None
        return encode(orjson.dumps({**seen, "content": text}))

    def finish(usage: Usage, cost: Decimal | None) -> bytes:
        stream = chat.served.result
        return encode(orjson.dumps({
            **seen,
            "finish_reason": stream.finish_reason,
            "usage": usage.model_dump(),
            "latency_ms": chat.book.elapsed_ms(),
            "cost_usd": _dollars(cost),
            "cache": chat.cache_status,
        })) + b"data: [DONE]\n\n"

    return render, finish


async def models(request: Request) -> Response:
    catalog = gateway_of(request).catalog
    return Response(orjson.dumps({
        "models": [
            {
                "id": name,
                "provider": entry.provider,
                "kind": entry.kind,
                "input_usd_per_mtok": float(entry.input_usd_per_mtok),
                "output_usd_per_mtok": float(entry.output_usd_per_mtok),
                "max_tokens": entry.max_tokens,
                "temperature": entry.temperature,
                "fallbacks": catalog.chain(name)[1:],
            }
            for name, entry in catalog.models.items()
        ],
        "default_model": catalog.default_model,
        "currency": catalog.currency,
        "note": catalog.note,
    }), media_type="application/json")


async def health(request: Request) -> Response:
    gateway = gateway_of(request)
    report = gateway.stats.snapshot()
    report["breakers"] = gateway.router.breaker_states()
    report["deployments"] = gateway.router.deployment_health()
    return Response(orjson.dumps(report), media_type="application/json")


routes = [
    Route("/call", call, methods=["POST"]),
    Route("/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
