"""``POST /batch``: many chat requests in one call, each answered or failed on its own.

They run concurrently, at most ``GATEWAY_BATCH_PARALLELISM`` at a time, through the same router
as ``/call`` (same defaults, retries and fallbacks); results come back in input order with the
total cost. Streaming is not available inside a batch.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounting import RequestBook
from ..chat import plan_chat
from ..context import Gateway
from ..deadline import Deadline
from ..errors import ErrorCode, GatewayError, bad_request
from ..pricing import to_micro
from .flow import gateway_of
from .requests import authorize, cancel_on_disconnect, read_json
from .seed import simplify


async def _one(gateway: Gateway, index: int, item: Any, gate: asyncio.Semaphore,
               deadline: Deadline) -> tuple[dict[str, Any], Decimal]:
    book = RequestBook(gateway.stats, gateway.metrics, "/batch")
    try:
        plan = plan_chat(gateway.catalog, item, seed_defaults=True)
        if plan.stream:
            raise bad_request("Streaming is not available inside a batch.", param="stream")
        book.model = plan.model
        async with gate:
            served = await gateway.router.complete(plan.model, plan.payload, deadline)
    except GatewayError as error:
        book.close(error=error)
        return {"index": index, "status": error.status, **error.body()}, Decimal(0)
    book.served(plan.model, served)
    usage, cost = book.charge(served, served.result.data.get("usage"))
    answer = simplify(served, usage, cost, book.elapsed_ms())
    book.close()
    return {"index": index, "status": 200, "response": answer.model_dump()}, cost or Decimal(0)


async def batch(request: Request) -> Response:
    started = time.monotonic()
    gateway = gateway_of(request)
    settings = gateway.settings
    authorize(request, settings.api_keys)
    body = await read_json(request, settings.max_body_bytes)
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_request("'requests' must be a non-empty list of chat requests.",
                          param="requests")
    if len(items) > settings.batch_max_requests:
        raise bad_request(f"A batch holds at most {settings.batch_max_requests} requests.",
                          param="requests", code=ErrorCode.BATCH_TOO_LARGE)
    gate = asyncio.Semaphore(settings.batch_parallelism)
    deadline = Deadline.after(settings.timeout_s, start=started)
    outcomes = await cancel_on_disconnect(request, asyncio.gather(
        *(_one(gateway, i, item, gate, deadline) for i, item in enumerate(items))))
    results = [result for result, _ in outcomes]
    total = sum((cost for _, cost in outcomes), Decimal(0))
    succeeded = sum(1 for r in results if r["status"] == 200)
    return Response(orjson.dumps({
        "results": results,
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "total_cost_usd": float(to_micro(total)),
        "latency_ms": round(1000 * (time.monotonic() - started), 3),
    }), media_type="application/json")


routes = [Route("/batch", batch, methods=["POST"])]
