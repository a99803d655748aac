"""The gateway's Prometheus metrics on BentoML's /metrics: what a request records, and labels
that stay bounded whatever path or key a client sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY, FakeProvider, GatewayServer

MESSAGES = [{"role": "user", "content": "count me"}]
CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: GatewayServer) -> Samples:
    text = httpx.get(f"{gateway.url}/metrics").text
    assert UPSTREAM_KEY not in text and CLIENT_KEY not in text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def growth(before: Samples, after: Samples) -> Callable[..., float]:
    """How much one sample (a name and its labels) grew between two scrapes."""

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return grew


def test_a_request_records_count_latency_overhead_tokens_and_cost(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    before = scrape(gateway)
    answer = sdk.chat.completions.with_raw_response.create(model="gpt-4.1", messages=MESSAGES)
    usage = answer.parse().usage
    assert usage is not None
    stream = sdk.chat.completions.create(
        model="gpt-4.1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    streamed = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    after = scrape(gateway)
    grew = growth(before, after)

    assert grew("gateway_requests_total", endpoint=CHAT, model="gpt-4.1", status_class="2xx") == 2
    assert grew("gateway_request_duration_seconds_count", endpoint=CHAT, model="gpt-4.1") == 2
    assert grew("gateway_overhead_seconds_count", endpoint=CHAT) == 2
    assert grew("gateway_upstream_duration_seconds_count", model="gpt-4.1") == 2
    assert grew("gateway_time_to_first_token_seconds_count", model="gpt-4.1") == 1
    assert grew("gateway_tokens_total", model="gpt-4.1", direction="input") == (
        usage.prompt_tokens + streamed.prompt_tokens
    )
    assert grew("gateway_tokens_total", model="gpt-4.1", direction="output") == (
        usage.completion_tokens + streamed.completion_tokens
    )
    assert grew("gateway_cost_usd_total", model="gpt-4.1") == pytest.approx(
        float(answer.headers["x-gateway-cost-usd"]) + streamed.model_extra["cost_usd"], abs=2e-6
    )
    overhead_sum = grew("gateway_overhead_seconds_sum", endpoint=CHAT)
    total_sum = grew("gateway_request_duration_seconds_sum", endpoint=CHAT, model="gpt-4.1")
    assert 0 < overhead_sum < total_sum


def test_retries_fallbacks_and_errors_are_counted(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    client = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    before = scrape(gateway)
    served = client.post(CHAT, json={"model": "deepseek-v3.2", "messages": MESSAGES})
    assert served.status_code == 200 and served.json()["model"] == "gemini-2.5-flash"
    assert client.post(CHAT, json={"model": "deepseek-v3.2"}).status_code == 400
    assert (
        httpx.post(
            gateway.url + CHAT, json={}, headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    after = scrape(gateway)
    grew = growth(before, after)

    assert (
        grew("gateway_fallbacks_total", requested="deepseek-v3.2", served="gemini-2.5-flash") == 1
    )
    assert (
        grew(
            "gateway_upstream_failures_total",
            model="deepseek-v3.2",
            deployment="holysheep",
            kind="status",
        )
        == 3
    )
    assert grew("gateway_errors_total", endpoint=CHAT, type="invalid_request_error") == 1
    assert grew("gateway_errors_total", endpoint=CHAT, type="authentication_error") == 1


def test_no_label_carries_a_raw_path_or_a_key(gateway: GatewayServer) -> None:
    for path in ("/v1/chat/completions/x1", "/nothing/y2", "/v1/z3"):
        httpx.post(gateway.url + path, json={}, headers={"Authorization": "Bearer sk-leaked-k4"})
    httpx.get(gateway.url + "/health")
    text = httpx.get(f"{gateway.url}/metrics").text
    for probe in ("x1", "y2", "z3", "sk-leaked-k4", '/health"'):
        assert probe not in text
    bentoml_endpoints = {
        dict(labels).get("endpoint")
        for (name, labels) in scrape(gateway)
        if name.startswith("bentoml_service_request")
    }
    assert CHAT not in bentoml_endpoints  # the proxy routes bypass BentoML's middleware


def test_gc_pauses_are_exported(gateway: GatewayServer) -> None:
    client = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    for _ in range(50):  # allocations enough for a few young-generation collections
        client.post(CHAT, json={"model": "gpt-4.1", "messages": MESSAGES})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the worker flushes recorded pauses once a second
        counts = [
            v
            for (name, _), v in scrape(gateway).items()
            if name == "gateway_gc_pause_seconds_count"
        ]
        if sum(counts) > 0:
            return
        time.sleep(0.5)
    pytest.fail("no GC pause reached /metrics")


@pytest.fixture(scope="module")
def telemetry_gateway(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url, env={"GATEWAY_BENTOML_TELEMETRY": "true"})
    yield server
    server.stop()


def test_bentoml_telemetry_puts_the_routes_back_under_bentoml(
    telemetry_gateway: GatewayServer,
) -> None:
    answer = httpx.post(
        telemetry_gateway.url + CHAT,
        json={"model": "gpt-4.1", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert answer.status_code == 200
    samples = scrape(telemetry_gateway)
    assert (
        value(samples, "gateway_requests_total", endpoint=CHAT, model="gpt-4.1", status_class="2xx")
        == 1
    )
    bentoml_endpoints = {
        dict(labels).get("endpoint")
        for (name, labels) in samples
        if name == "bentoml_service_request_total"
    }
    assert CHAT in bentoml_endpoints
    # What the default (fast) path prevents: BentoML labels its metrics with the raw path.
    httpx.get(telemetry_gateway.url + "/made/up/path")
    assert "/made/up/path" in httpx.get(f"{telemetry_gateway.url}/metrics").text
