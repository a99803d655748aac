"""The edges for APIs the upstream does not speak: Anthropic's Messages API
(``/v1/messages``), OpenAI's Responses API (``/v1/responses``) and legacy text completions
(``/v1/completions``). Each only translates: its request becomes a chat ``ChatPlan`` (through
``gateway/bridges/``), the answer goes through the same pipeline as chat completions (cache,
router, the account that prices it), and the chat answer or chunks are translated back. The
cost travels in ``x-gateway-cost-usd``; errors in the API's own shape (``errors.error_response``
picks Anthropic's for ``/v1/messages``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.openai import relayed
from gateway.api.pipeline import (
    Answered,
    ChatExchange,
    cost_headers,
    gateway_of,
    start_exchange,
    stream_response,
)
from gateway.assembly import Gateway
from gateway.books.accounting import Charge
from gateway.bridges import anthropic, completions, responses
from gateway.errors import GatewayError
from gateway.plan.chat import ChatPlan, plan_chat, without_nulls
from gateway.server.intake import TENANT_KEY
from gateway.server.requests import read_json

DONE = b"data: [DONE]\n\n"


class Translator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> bytes: ...
    def fail(self, error: GatewayError) -> bytes: ...


@dataclass(slots=True)
class Bridge:
    """One API's translations: request → chat payload, chat answer → API answer, and the
    stream translator for a stream of chat chunks."""

    endpoint: str
    parse: Callable[[Any], Any]
    to_chat: Callable[[Any], dict[str, Any]]
    answer: Callable[[Any, dict[str, Any], ChatExchange], dict[str, Any]]
    translator: Callable[[Any, ChatExchange], Translator]
    streams: Callable[[Any], bool]


class Translated:
    """A bridge's stream translator as the pipeline's ``StreamRenderer``."""

    def __init__(self, exchange: ChatExchange, translator: Translator) -> None:
        self._exchange = exchange
        self._translator = translator

    def start(self) -> bytes | None:
        start = getattr(self._translator, "start", None)
        return start() if start is not None else None

    def chunk(self, raw: bytes, chunk: dict[str, Any]) -> bytes | None:
        return self._translator.feed(chunk) or None

    def finish(self, charge: Charge | None, finish_reason: str | None) -> bytes:
        finish = getattr(self._translator, "finish", None)
        if finish is None:  # the legacy completions stream ends like OpenAI's
            return DONE
        out: bytes = finish(self._exchange.served.result.usage)
        return out

    def fail(self, error: GatewayError) -> bytes:
        return self._translator.fail(error)


async def serve(request: Request, bridge: Bridge) -> Response:
    parsed: list[Any] = []

    def plan(gateway: Gateway, body: Any) -> ChatPlan:
        # A top-level null means absent, as on chat (both specs make these fields nullable).
        parsed.append(bridge.parse(without_nulls(body) if isinstance(body, dict) else body))
        return plan_chat(gateway.catalog, bridge.to_chat(parsed[0]), catalog_defaults=False)

    exchange = await start_exchange(request, bridge.endpoint, plan)
    return respond(exchange, bridge, parsed[0])


def respond(exchange: ChatExchange, bridge: Bridge, api_request: Any) -> Response:
    """The chat answer (or stream) translated back into the bridge's API."""
    if bridge.streams(api_request):
        return stream_response(exchange, Translated(exchange,
                                                    bridge.translator(api_request, exchange)))
    reply = exchange.served.result
    try:
        body = bridge.answer(api_request, reply.data, exchange)
    except GatewayError as error:
        exchange.account.close(error=error)
        raise
    headers = exchange.headers() | cost_headers(exchange.account.charge(reply.data.get("usage")))
    return Answered(orjson.dumps(body), headers, exchange.account)


MESSAGES = Bridge(
    "/v1/messages", anthropic.parse_request, anthropic.to_chat,
    lambda req, data, ex: anthropic.from_chat(data, model=ex.served.name,
                                              stop_sequences=req.stop_sequences),
    lambda req, ex: anthropic.MessagesStream(model=ex.served.name,
                                             stop_sequences=req.stop_sequences),
    lambda req: bool(req.stream))
RESPONSES = Bridge(
    "/v1/responses", responses.parse_request, responses.to_chat,
    lambda req, data, ex: responses.from_chat(data, request=req, model=ex.served.name),
    lambda req, ex: responses.ResponsesStream(req, model=ex.served.name),
    lambda req: bool(req.stream))
COMPLETIONS = Bridge(
    "/v1/completions", completions.parse_request, completions.to_chat,
    lambda req, data, ex: completions.from_chat(data, request=req),
    lambda req, ex: completions.CompletionsStream(req),
    lambda req: bool(req.stream))


async def messages(request: Request) -> Response:
    return await serve(request, MESSAGES)


async def count_tokens(request: Request) -> Response:
    """An estimate made locally (no upstream call; see ``bridges.anthropic.count_tokens``)."""
    gateway = gateway_of(request)
    await gateway.tenants.authenticate(request.headers, request.scope.get(TENANT_KEY))
    body = await read_json(request, gateway.settings.max_body_bytes)
    tokens = anthropic.count_tokens(anthropic.parse_count_request(body))
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json",
                    headers={"x-gateway-token-count": "estimated"})


async def create_response(request: Request) -> Response:
    return await serve(request, RESPONSES)


async def create_completion(request: Request) -> Response:
    """Sent upstream as a completion when a deployment of the model serves ``/completions``
    (its provider says ``completions: true``): the upstream's answer and chunks are relayed as
    they come, priced, retried and fallen back from like chat, but not cached (the cache keeps
    chat completions). Otherwise bridged over chat completions."""
    parsed: list[Any] = []

    def plan(gateway: Gateway, body: Any) -> ChatPlan:
        req = completions.parse_request(body)
        parsed.append(req)
        entry = gateway.catalog.get(req.model)
        if entry is None or entry.kind != "chat" or not gateway.router.serves_completions(
                req.model):
            return plan_chat(gateway.catalog, completions.to_chat(req), catalog_defaults=False)
        payload = without_nulls(body)
        if req.stream:
            payload["stream_options"] = {**(payload.get("stream_options") or {}),
                                         "include_usage": True}
        return ChatPlan(req.model, entry, payload, req.stream, req.wants_usage,
                        path="/completions", cacheable=False)

    exchange = await start_exchange(request, "/v1/completions", plan)
    if exchange.plan.path != "/completions":
        return respond(exchange, COMPLETIONS, parsed[0])
    return relayed(exchange)


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/completions", create_completion, methods=["POST"]),
]
