"""The ASGI app BentoML mounts: routes, OpenAI-shaped errors for everything, intake (auth, a
bounded body read under its own deadline, then admission control), and the POST routes served
from a table (``dispatch``).

A plain Starlette app (FastAPI's own base): every route reads its body itself (bounded, parsed
once, passed through), so FastAPI's per-request dependency solving would only cost CPU.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from gateway.api import admin, batch, bridged, dashboard, index, models, openai, simple
from gateway.books.accounting import RequestAccount
from gateway.errors import ErrorCode, GatewayError, error_response
from gateway.observability.metrics import Metrics
from gateway.server.dispatch import DirectRoutes, direct_table
from gateway.server.intake import Intake, IntakeLimits
from gateway.settings import Settings
from gateway.tenants.admission import RATE_HEADER_NAMES, Tenant

logger = logging.getLogger("gateway")

# The answer headers a browser app may read (CORS hides all but a few by default).
EXPOSED_HEADERS = (
    "x-gateway-cost-usd", "x-gateway-saved-usd", "x-gateway-model", "x-gateway-provider",
    "x-gateway-deployment", "x-gateway-attempts", "x-gateway-cache",
    "x-gateway-cache-similarity", "x-request-id", "retry-after",
    *(name for _, *names in RATE_HEADER_NAMES for name in names))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(request.url.path, exc)


HTTP_ERROR_CODES = {404: ErrorCode.UNKNOWN_URL, 405: ErrorCode.METHOD_NOT_ALLOWED}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the OpenAI shape."""
    assert isinstance(exc, HTTPException)
    message = {
        404: f"Unknown endpoint {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    code = HTTP_ERROR_CODES.get(exc.status_code, ErrorCode.INVALID_VALUE)
    return error_response(request.url.path, GatewayError(code, message, headers=exc.headers))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The type only: an exception's text could quote request data or headers.
    logger.error("unhandled error on %s %s: %s", request.method, request.url.path,
                 type(exc).__name__)
    return error_response(request.url.path,
                          GatewayError(ErrorCode.INTERNAL_ERROR, "Internal gateway error."))


async def _render_error(request: Request, exc: Exception) -> Response:
    """What the exception handlers below answer, for routes served by ``DirectRoutes``."""
    if isinstance(exc, GatewayError):
        return await _gateway_error(request, exc)
    if isinstance(exc, HTTPException):
        return await _http_error(request, exc)
    return await _unexpected(request, exc)


def create_app(settings: Settings) -> Starlette:
    routes = [*simple.routes, *openai.routes, *models.routes, *bridged.routes, *batch.routes]
    every_route = [*routes, *admin.routes, *dashboard.routes]  # these check their own keys
    every_route.append(index.route(every_route))
    app = Starlette(
        routes=every_route,
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    # Every POST route serves clients and needs their key: checked before the body is read.
    keyed = frozenset(r.path for r in routes
                      if isinstance(r, Route) and "POST" in (r.methods or ()))

    async def authorize_client(scope: Scope) -> Tenant | None:
        gateway = getattr(app.state, "gateway", None)
        if gateway is None:
            return None
        tenant: Tenant = await gateway.tenants.authenticate(Headers(scope=scope))
        return tenant

    def metrics() -> Metrics | None:
        gateway = getattr(app.state, "gateway", None)
        return gateway.metrics if gateway is not None else None

    def book(endpoint: str, error: GatewayError) -> None:
        gateway = getattr(app.state, "gateway", None)
        if gateway is not None:
            tenancy = gateway.tenants.tenancy(endpoint, {})  # for its access log line
            RequestAccount(gateway.stats, gateway.metrics, endpoint, tenancy).close(error=error)

    limits = IntakeLimits(
        max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s,
        max_readers=settings.max_body_readers,
        max_buffered_bytes=settings.max_body_buffer_bytes,
        max_concurrency=settings.max_concurrency)
    app.add_middleware(DirectRoutes, table=direct_table(every_route),
                       render_error=_render_error)
    app.add_middleware(Intake, limits=limits, endpoints=keyed, authorize=authorize_client,
                       metrics=metrics, book=book)
    if settings.cors_origins:  # outermost: a preflight is answered before intake sees it
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["*"], expose_headers=list(EXPOSED_HEADERS), max_age=600)
    return app
