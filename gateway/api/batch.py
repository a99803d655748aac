"""``POST /batch``: many ``/call``-shaped requests in one call, each answered or failed on its own.

Each item goes through the same pipeline as ``/call`` (catalog defaults, the cache and its
coalescing, retries, fallbacks, the account that prices it), at most
``GATEWAY_BATCH_PARALLELISM`` at a time; results come back in input order with the total cost.
Streaming is not available inside a batch.
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

from gateway.api.pipeline import answer, gateway_of
from gateway.api.simple import simplify
from gateway.assembly import Gateway
from gateway.books.accounting import RequestAccount
from gateway.cache.service import Directives
from gateway.errors import ErrorCode, GatewayError, bad_request
from gateway.plan.chat import plan_chat
from gateway.pricing import to_micro
from gateway.routing.deadline import Deadline
from gateway.server.intake import TENANT_KEY
from gateway.server.requests import cancel_on_disconnect, read_json
from gateway.tenants.admission import Tenant


async def _run_item(gateway: Gateway, request: Request, index: int, item: Any,
                    slots: asyncio.Semaphore, tenant: Tenant, directives: Directives,
                    deadline: Deadline) -> tuple[dict[str, Any], Decimal]:
    tenancy = gateway.tenants.tenancy("/batch", request.headers, tenant)
    account = RequestAccount(gateway.stats, gateway.metrics, "/batch", tenancy)
    try:
        plan = plan_chat(gateway.catalog, item, catalog_defaults=True)
        if plan.stream:
            raise bad_request("Streaming is not available inside a batch.", param="stream")
        account.model = plan.model
        await tenancy.admit(plan.model, plan.payload)  # each item counts against the key
        async with slots:
            exchange = await answer(gateway, account, plan, tenant.scope, directives, deadline)
    except GatewayError as error:
        account.close(error=error)
        return {"index": index, "status": error.status, **error.body()}, Decimal(0)
    charge = account.charge(exchange.served.result.data.get("usage"))
    result = simplify(exchange, charge)
    account.close()
    return ({"index": index, "status": 200, "response": result.model_dump()},
            charge.cost if charge else Decimal(0))


async def batch(request: Request) -> Response:
    started = time.monotonic()
    gateway = gateway_of(request)
    settings = gateway.settings
    tenant = await gateway.tenants.authenticate(request.headers, request.scope.get(TENANT_KEY))
    body = await read_json(request, settings.max_body_bytes)
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_request("'requests' must be a non-empty list of chat requests.",
                          param="requests")
    if len(items) > settings.batch_max_requests:
        raise bad_request(f"A batch holds at most {settings.batch_max_requests} requests.",
                          param="requests", code=ErrorCode.BATCH_TOO_LARGE)
    slots = asyncio.Semaphore(settings.batch_parallelism)
    directives = Directives.parse(request.headers.get("cache-control"))
    deadline = Deadline.after(settings.timeout_s, start=started)
    outcomes = await cancel_on_disconnect(request, asyncio.gather(
        *(_run_item(gateway, request, i, item, slots, tenant, directives, deadline)
          for i, item in enumerate(items))))
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
