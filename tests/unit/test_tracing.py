"""Tracing options from settings, and the spans UpstreamSpans makes (an in-memory exporter)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from gateway.errors import ErrorCode, GatewayError
from gateway.observability.tracing import service_tracing
from gateway.routing.spans import UpstreamSpans
from gateway.settings import Settings
from gateway.upstream.failures import FailureKind, UpstreamFailure


def settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def test_no_exporter_means_no_bentoml_tracing_options() -> None:
    assert service_tracing(settings()) == {}


def test_exporters_map_to_bentoml_options() -> None:
    zipkin = service_tracing(settings(GATEWAY_TRACING_EXPORTER="zipkin",
                                      GATEWAY_TRACING_ENDPOINT="http://z:9411/api/v2/spans",
                                      GATEWAY_TRACING_SAMPLE_RATE="0.25"))
    assert zipkin == {"exporter_type": "zipkin", "sample_rate": 0.25,
                      "zipkin": {"endpoint": "http://z:9411/api/v2/spans"}}
    otlp = service_tracing(settings(GATEWAY_TRACING_EXPORTER="otlp",
                                    GATEWAY_TRACING_ENDPOINT="http://o:4318/v1/traces"))
    assert otlp["otlp"] == {"protocol": "http", "endpoint": "http://o:4318/v1/traces"}


@pytest.mark.parametrize("env", [{"GATEWAY_TRACING_EXPORTER": "zipkin"},
                                 {"GATEWAY_TRACING_EXPORTER": "jaeger",
                                  "GATEWAY_TRACING_ENDPOINT": "http://j"},
                                 {"GATEWAY_TRACING_SAMPLE_RATE": "2"}])
def test_bad_tracing_settings_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        settings(**env)


def test_without_a_tracer_nothing_is_started_and_errors_pass_through() -> None:
    spans = UpstreamSpans(None)
    with spans.request("chat", "m") as request, spans.attempt("chat", "m", "m-up", 1) as attempt:
        assert request is None and attempt is None
    with pytest.raises(UpstreamFailure), spans.attempt("chat", "m", "m-up", 1):
        raise UpstreamFailure(FailureKind.STATUS, "boom", status=503)


def test_spans_nest_and_record_failures_without_messages() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = UpstreamSpans(provider.get_tracer("test"))
    with pytest.raises(GatewayError), spans.request("chat", "deepseek-v3.2"):
        with pytest.raises(UpstreamFailure), spans.attempt("chat", "deepseek-v3.2", "ds", 1):
            raise UpstreamFailure(FailureKind.STATUS, "a message quoting the prompt", status=503)
        raise GatewayError(ErrorCode.UPSTREAM_ERROR, "every model failed")
    attempt, request = exporter.get_finished_spans()
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert attempt.attributes is not None and attempt.attributes["gateway.attempt"] == 1
    assert attempt.attributes["http.response.status_code"] == 503
    assert attempt.status.status_code is StatusCode.ERROR
    assert "prompt" not in (attempt.status.description or "")
    assert request.status.status_code is StatusCode.ERROR
    assert request.status.description == "upstream_error"
