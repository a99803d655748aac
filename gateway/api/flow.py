"""The path every chat request shares, whichever API it came in by:
authenticate → read a bounded body → validate and plan → router (retries, fallbacks, deadline),
and for streams the relay loop that turns an upstream failure into a final error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from ..accounting import RequestBook
from ..chat import ChatPlan, plan_chat
from ..context import Gateway
from ..errors import GatewayError
from ..router import Served
from ..schemas import Usage
from ..upstream import UpstreamFailure, UpstreamStream
from .requests import authorize, cancel_on_disconnect, read_json

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class ChatCall:
    gateway: Gateway
    book: RequestBook
    plan: ChatPlan
    served: Served

    def headers(self) -> dict[str, str]:
        return {"x-gateway-model": self.served.name,
                "x-gateway-attempts": str(self.served.attempts)}


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def run_chat(request: Request, endpoint: str, *, seed_defaults: bool) -> ChatCall:
    """Everything up to the upstream's answer (or its opened stream)."""
    gateway = gateway_of(request)
    book = RequestBook(gateway.stats, gateway.metrics, endpoint)
    settings = gateway.settings
    try:
        authorize(request, settings.api_keys)
        body = await read_json(request, settings.max_body_bytes)
        plan = plan_chat(gateway.catalog, body, seed_defaults=seed_defaults)
        book.model = plan.model
        deadline = book.started + settings.timeout_s
        route = gateway.router.open_stream if plan.stream else gateway.router.complete
        served = await cancel_on_disconnect(request, route(plan.model, plan.payload, deadline))
    except GatewayError as error:
        book.close(error=error)
        raise
    book.served(plan.model, served)
    return ChatCall(gateway, book, plan, served)


async def relay(
    call: ChatCall,
    render: Callable[[bytes, dict[str, Any]], bytes | None],
    finish: Callable[[Usage, Decimal | None], bytes],
) -> AsyncIterator[bytes]:
    """Relay the upstream stream chunk by chunk through ``render``, then ``finish``. A failure
    after the first byte cannot fall back any more: it ends the stream with an error event and
    no ``[DONE]``, so no client mistakes a cut answer for a whole one."""
    stream: UpstreamStream = call.served.result
    first = True
    try:
        async for raw, chunk in stream:
            out = render(raw, chunk)
            if out:
                if first:
                    call.book.first_chunk()
                    first = False
                yield out
        usage, cost = call.book.charge(call.served, stream.usage)
        yield finish(usage, cost)
        call.book.close()
    except UpstreamFailure as failure:
        error = GatewayError(
            502,
            f"The upstream stream failed after it had started: {failure.describe()}",
            type="upstream_error",
            code=f"stream_{failure.kind}",
        )
        call.book.close(error=error)
        yield error.sse_event()
    finally:
        await stream.aclose()
        call.book.close(status=499)  # the client left mid-stream; no-op if already closed
