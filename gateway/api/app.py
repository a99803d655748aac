"""The ASGI app BentoML mounts: routes, OpenAI-shaped errors for everything, admission control.

A plain Starlette app (FastAPI's own base): every route reads its body itself (bounded, parsed
once, passed through), so FastAPI's per-request dependency solving would only cost CPU.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ErrorCode, GatewayError
from . import admin, batch, dashboard, openai, seed
from .admission import AdmissionMiddleware

logger = logging.getLogger("gateway")


async def _gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.to_response()


HTTP_ERROR_CODES = {404: ErrorCode.UNKNOWN_URL, 405: ErrorCode.METHOD_NOT_ALLOWED}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the OpenAI shape."""
    assert isinstance(exc, HTTPException)
    message = {
        404: f"Unknown endpoint {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    code = HTTP_ERROR_CODES.get(exc.status_code, ErrorCode.INVALID_VALUE)
    return GatewayError(code, message, headers=exc.headers).to_response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The type only: an exception's text could quote request data or headers.
    logger.error("unhandled error on %s %s: %s", request.method, request.url.path,
                 type(exc).__name__)
    return GatewayError(ErrorCode.INTERNAL_ERROR, "Internal gateway error.").to_response()


def create_app(max_concurrency: int) -> Starlette:
    return Starlette(
        routes=[*seed.routes, *openai.routes, *batch.routes, *admin.routes,
                *dashboard.routes],
        middleware=[Middleware(AdmissionMiddleware, limit=max_concurrency)],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
