"""Spans around a routed request and each upstream attempt, when a tracer is configured."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.upstream.failures import UpstreamFailure

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer


class UpstreamSpans:
    """A span per request through the router, and a client span per upstream attempt in it."""

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer
        self.enabled = tracer is not None

    @contextlib.contextmanager
    def request(self, operation: str, model: str) -> Iterator[Span | None]:
        """Covers every attempt and fallback until the answer (for streams: its first chunk)."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry.trace import Status, StatusCode

        with self._tracer.start_as_current_span(
            f"gateway {operation}", record_exception=False, set_status_on_exception=False,
            attributes={"gen_ai.operation.name": operation, "gateway.requested_model": model},
        ) as span:
            try:
                yield span
            except GatewayError as error:
                span.set_attribute("http.response.status_code", error.status)
                span.set_status(Status(StatusCode.ERROR, error.code or error.type))
                raise

    @contextlib.contextmanager
    def attempt(self, operation: str, model: str, upstream_model: str,
                attempt: int) -> Iterator[Span | None]:
        """A client span around one upstream attempt; a failure marks it as an error."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self._tracer.start_as_current_span(
            f"upstream {operation}", kind=SpanKind.CLIENT,
            record_exception=False, set_status_on_exception=False,
            attributes={"gen_ai.operation.name": operation, "gateway.model": model,
                        "gen_ai.request.model": upstream_model, "gateway.attempt": attempt},
        ) as span:
            try:
                yield span
            except UpstreamFailure as failure:
                span.set_attribute("gateway.failure", failure.kind)
                if failure.status is not None:
                    span.set_attribute("http.response.status_code", failure.status)
                # The kind, not the message: an upstream's message can quote request data.
                span.set_status(Status(StatusCode.ERROR, failure.kind))
                raise
