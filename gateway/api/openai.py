"""The OpenAI-compatible API: ``/v1/chat/completions`` (JSON and SSE) and ``/v1/models``.

Answers are the upstream's bytes, untouched; what the gateway adds travels in headers
(``x-gateway-cost-usd``, ``x-gateway-model``, ``x-gateway-attempts``) or, for streams whose
client asked for usage, as ``cost_usd`` inside the final usage chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounting import RequestBook
from ..errors import GatewayError
from ..pricing import cost_usd, format_usd, read_usage, to_micro
from ..schemas import Usage
from ..sse import encode
from .flow import ChatCall, gateway_of, relay, run_chat
from .requests import authorize, cancel_on_disconnect, read_json
from .streaming import EventStream

DONE = b"data: [DONE]\n\n"


async def chat_completions(request: Request) -> Response:
    call = await run_chat(request, "/v1/chat/completions", seed_defaults=False)
    headers = call.headers()
    if call.plan.stream:
        return EventStream(relay(call, _stream_renderer(call), _done), headers)
    reply = call.served.result
    _, cost = call.book.charge(call.served, reply.data.get("usage"))
    if cost is not None:
        headers["x-gateway-cost-usd"] = format_usd(cost)
    call.book.close()
    return Response(reply.body, media_type="application/json", headers=headers)


def _stream_renderer(call: ChatCall) -> Callable[[bytes, dict[str, Any]], bytes | None]:
    wants_usage = call.plan.wants_usage
    entry = call.served.entry

    def render(raw: bytes, chunk: dict[str, Any]) -> bytes | None:
        usage = chunk.get("usage")
        if usage:
            if wants_usage:
                tokens = read_usage(usage)
                if tokens is not None:
                    usage["cost_usd"] = float(to_micro(cost_usd(entry, *tokens)))
                return encode(orjson.dumps(chunk))
            if not chunk.get("choices"):
                return None  # the usage chunk the gateway asked for on its own behalf
        return raw + b"\n\n"

    return render


def _done(usage: Usage, cost: Decimal | None) -> bytes:
    return DONE


async def embeddings(request: Request) -> Response:
    gateway = gateway_of(request)
    book = RequestBook(gateway.stats, gateway.metrics, "/v1/embeddings")
    try:
        authorize(request, gateway.settings.api_keys)
        body = await read_json(request, gateway.settings.max_body_bytes)
        answer = await cancel_on_disconnect(request, gateway.embeddings.embed(body))
    except GatewayError as error:
        book.close(error=error)
        raise
    book.model = answer.served
    book.close()
    return Response(answer.body, media_type="application/json", headers={
        "x-gateway-cost-usd": format_usd(answer.cost),
        "x-gateway-model": answer.served,
        "x-gateway-batch-size": str(answer.batch_size),
        "x-gateway-provider": answer.provider,
        "x-gateway-deployment": answer.deployment,
    })


async def list_models(request: Request) -> Response:
    gateway = gateway_of(request)
    authorize(request, gateway.settings.api_keys)
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
