"""OpenTelemetry spans around upstream calls, made only when tracing is configured.

BentoML 1.4 takes tracing options from the service decorator only, so ``service_tracing`` turns
the gateway's settings (``GATEWAY_TRACING_*``) into them and BentoML builds the tracer provider
and its exporter. With an exporter and a non-zero sample rate, every upstream attempt gets a
client span (model, upstream model, attempt, outcome); otherwise no span is started at all: even
a non-recording span costs microseconds on the hot path for nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.settings import Settings


def service_tracing(settings: Settings) -> dict[str, Any]:
    """``@bentoml.service(tracing=...)`` options for the configured exporter (empty: none)."""
    if settings.tracing_exporter is None:
        return {}
    options: dict[str, Any] = {"exporter_type": settings.tracing_exporter,
                               "sample_rate": settings.tracing_sample_rate}
    if settings.tracing_exporter == "zipkin":
        options["zipkin"] = {"endpoint": settings.tracing_endpoint}
    else:
        options["otlp"] = {"protocol": "http", "endpoint": settings.tracing_endpoint}
    return options


class IncomingTraceContext:
    """ASGI middleware: a caller's W3C ``traceparent`` becomes the parent of the gateway's spans."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
