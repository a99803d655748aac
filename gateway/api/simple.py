"""The gateway's simplified API (the contract it was first specified with): ``POST /call``,
``GET /models``, ``GET /health``. ``/call`` fills a missing model, ``max_tokens`` and
``temperature`` from the catalog and answers in a flat shape with the cost inside."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.pipeline import Answered, ChatExchange, gateway_of, start_exchange, stream_response
from gateway.assembly import Gateway
from gateway.books.accounting import Charge
from gateway.errors import GatewayError
from gateway.plan.chat import ChatPlan, plan_chat
from gateway.plan.schemas import CallResponse, Usage
from gateway.pricing import to_micro
from gateway.upstream.sse import encode


def _dollars(amount: Decimal | None) -> float | None:
    return None if amount is None else float(to_micro(amount))


def _plan(gateway: Gateway, body: Any) -> ChatPlan:
    return plan_chat(gateway.catalog, body, catalog_defaults=True)


def simplify(exchange: ChatExchange, charge: Charge | None) -> CallResponse:
    """The flat answer shape from a chat completion (upstream or cached), priced."""
    served = exchange.served
    data = served.result.data
    choice = (data.get("choices") or [{}])[0]
    outcome = exchange.outcome
    return CallResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model") or served.entry.upstream_model),
        content=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=charge.usage if charge else Usage(),
        latency_ms=exchange.account.elapsed_ms(),
        cost_usd=_dollars(charge.cost) if charge else None,
        cache=outcome.result.value if outcome.result else None,
        similarity=outcome.similarity,
        saved_usd=_dollars(charge.saved) if charge and outcome.cached else None,
    )


async def call(request: Request) -> Response:
    exchange = await start_exchange(request, "/call", _plan)
    if exchange.plan.stream:
        return stream_response(exchange, CallChunks(exchange))
    charge = exchange.account.charge(exchange.served.result.data.get("usage"))
    answer = simplify(exchange, charge)
    return Answered(answer.model_dump_json(), exchange.headers(), exchange.account)


class CallChunks:
    """``data: {"id", "model", "content"}`` per delta, then one closing event with
    ``finish_reason``, ``usage``, ``latency_ms``, ``cost_usd`` and ``cache``, then ``[DONE]``."""

    def __init__(self, exchange: ChatExchange) -> None:
        self._exchange = exchange
        self._seen = {"id": "", "model": exchange.served.entry.upstream_model}

    def start(self) -> bytes | None:
        return None

    def chunk(self, raw: bytes, chunk: dict[str, Any]) -> bytes | None:
        seen = self._seen
        seen["id"] = seen["id"] or str(chunk.get("id", ""))
        seen["model"] = chunk.get("model") or seen["model"]
        parts = [(c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()]
        text = "".join(p for p in parts if p)
        if not text:
            return None
        return encode(orjson.dumps({**seen, "content": text}))

    def finish(self, charge: Charge | None, finish_reason: str | None) -> bytes:
        exchange = self._exchange
        outcome = exchange.outcome
        return encode(orjson.dumps({
            **self._seen,
            "finish_reason": finish_reason,
            "usage": (charge.usage if charge else Usage()).model_dump(),
            "latency_ms": exchange.account.elapsed_ms(),
            "cost_usd": _dollars(charge.cost) if charge else None,
            "cache": outcome.result.value if outcome.result else None,
            "saved_usd": _dollars(charge.saved) if charge and outcome.cached else None,
        })) + b"data: [DONE]\n\n"

    def fail(self, error: GatewayError) -> bytes:
        return error.sse_event()


async def models(request: Request) -> Response:
    catalog = gateway_of(request).catalog
    return Response(orjson.dumps({
        "models": [
            {
                "id": name,
                "owned_by": entry.owned_by,  # the vendor
                "provider": entry.owned_by,  # the simplified contract's name for the vendor
                "providers": list(dict.fromkeys(  # the upstreams that serve it, as in /health
                    d.provider for d in catalog.deployments(name))),
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
    breakers = gateway.router.breaker_states()
    report = gateway.stats.snapshot(breakers, gateway.catalog.chain(gateway.catalog.default_model))
    report["deployments"] = gateway.router.deployment_health()
    report["patched"] = not gateway.settings.unpatched  # GATEWAY_UNPATCHED: deliberately off
    return Response(orjson.dumps(report), media_type="application/json")


routes = [
    Route("/call", call, methods=["POST"]),
    Route("/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
