"""The OpenAI-compatible API: ``/v1/chat/completions`` (JSON and SSE), ``/v1/embeddings`` and
``/v1/models``.

Answers are the upstream's bytes, untouched; what the gateway adds travels in headers
(``x-gateway-cost-usd``, ``x-gateway-model``, ``x-gateway-attempts``, ``x-gateway-cache``) or,
for streams whose client asked for usage, as ``cost_usd`` in a copy of the final usage chunk.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.pipeline import (
    Answered,
    ChatExchange,
    cost_headers,
    gateway_of,
    start_exchange,
    stream_response,
)
from gateway.assembly import Gateway
from gateway.books.accounting import Charge, RequestAccount
from gateway.errors import GatewayError
from gateway.plan.chat import ChatPlan, plan_chat
from gateway.pricing import to_micro
from gateway.server.intake import TENANT_KEY
from gateway.server.requests import cancel_on_disconnect, read_json
from gateway.upstream.sse import encode

DONE = b"data: [DONE]\n\n"


def _plan(gateway: Gateway, body: Any) -> ChatPlan:
    return plan_chat(gateway.catalog, body, catalog_defaults=False)


async def chat_completions(request: Request) -> Response:
    return relayed(await start_exchange(request, "/v1/chat/completions", _plan))


def relayed(exchange: ChatExchange) -> Response:
    """The upstream's answer as it came (bytes, or chunks), priced in a header."""
    headers = exchange.headers()
    if exchange.plan.stream:
        return stream_response(exchange, ChatChunks(exchange))
    reply = exchange.served.result
    headers.update(cost_headers(exchange.account.charge(reply.data.get("usage"))))
    return Answered(reply.body, headers, exchange.account)


class ChatChunks:
    """OpenAI's own stream: chunks as the upstream sent them; the usage chunk the gateway asked
    for on its own behalf is dropped, and a copy of it gains ``cost_usd`` when the client asked
    for usage (0 for an answer from the cache)."""

    def __init__(self, exchange: ChatExchange) -> None:
        self._account = exchange.account
        self._wants_usage = exchange.plan.wants_usage

    def start(self) -> bytes | None:
        return None

    def chunk(self, raw: bytes, chunk: dict[str, Any]) -> bytes | None:
        usage = chunk.get("usage")
        if not usage:
            return raw + b"\n\n"
        if not self._wants_usage:
            return raw + b"\n\n" if chunk.get("choices") else None
        charge = self._account.charge(usage)
        if charge is None:
            return raw + b"\n\n"
        priced = {**usage, "cost_usd": float(to_micro(charge.cost))}
        return encode(orjson.dumps({**chunk, "usage": priced}))

    def finish(self, charge: Charge | None, finish_reason: str | None) -> bytes:
        return DONE

    def fail(self, error: GatewayError) -> bytes:
        return error.sse_event()


async def embeddings(request: Request) -> Response:
    gateway = gateway_of(request)
    tenancy = gateway.tenants.tenancy("/v1/embeddings", request.headers)
    account = RequestAccount(gateway.stats, gateway.metrics, "/v1/embeddings", tenancy)
    try:
        await tenancy.authenticate(request.scope.get(TENANT_KEY))
        body = await read_json(request, gateway.settings.max_body_bytes)
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            await tenancy.admit(body["model"], body)
        answer = await cancel_on_disconnect(request, gateway.embeddings.embed(body))
    except GatewayError as error:
        error.headers.update(tenancy.rate_headers())
        account.close(error=error)
        raise
    account.answered_by(answer.requested, answer.served,
                        answer.price or gateway.catalog.models[answer.served],
                        upstream_s=answer.upstream_s, attempts=answer.attempts)
    charge = account.charge({"prompt_tokens": answer.tokens, "completion_tokens": 0})
    return Answered(answer.body, account=account, headers={
        **cost_headers(charge),
        "x-gateway-model": answer.served,
        "x-gateway-attempts": str(answer.attempts),
        "x-gateway-batch-size": str(answer.batch_size),
        "x-gateway-provider": answer.provider,
        "x-gateway-deployment": answer.deployment,
        **tenancy.rate_headers(),
    })


async def list_models(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.tenants.authenticate(request.headers)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": entry.provider}
        for name, entry in gateway.catalog.models.items()
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
