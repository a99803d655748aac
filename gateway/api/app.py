"""The ASGI app BentoML mounts: routes, OpenAI-shaped errors for everything, admission control."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import GatewayError
from . import batch, openai, seed
from .admission import AdmissionMiddleware

logger = logging.getLogger("gateway")


async def _gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.to_response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, str(exc.detail), code="http_error").to_response()


async def _validation_error(_: Request, exc: Exception) -> Response:
    return GatewayError(400, f"Invalid request: {exc}", code="invalid_value").to_response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s: %s", request.method, request.url.path,
                 type(exc).__name__)
    return GatewayError(500, "Internal gateway error.", type="server_error",
                        code="internal_error").to_response()


def create_app(max_concurrency: int) -> FastAPI:
    app = FastAPI(title="LLM Gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(seed.router)
    app.include_router(openai.router)
    app.include_router(batch.router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(AdmissionMiddleware, limit=max_concurrency)
    return app
