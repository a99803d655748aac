"""Upstream misbehaviour, injected into the real fake provider, as a client of the gateway sees it.

Each test checks the client-visible outcome, how many calls the fake provider counted per model,
and how long it took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "are you there?"}]


def chat(
    base: str, model: str = "deepseek-v3.2", stream: bool = False, timeout: float = 30
) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers=AUTH,
        timeout=timeout,
        json={"model": model, "messages": MESSAGES, "stream": stream},
    )


def stream_events(base: str, model: str = "deepseek-v3.2") -> tuple[httpx.Response, list[str]]:
    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        headers=AUTH,
        timeout=30,
        json={"model": model, "messages": MESSAGES, "stream": True},
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, events


@pytest.fixture(scope="module")
def quick(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    """A gateway with short timeouts, so hangs and stalls are cut within a second."""
    server = GatewayServer(
        log_dir,
        fake.base_url,
        env={
            "GATEWAY_UPSTREAM_TIMEOUT": "0.5",
            "GATEWAY_STREAM_IDLE_TIMEOUT": "0.5",
            "GATEWAY_TIMEOUT": "4",
            "GATEWAY_BREAKER_FAILURES": "1000",
            "GATEWAY_BREAKER_MIN_CALLS": "1000",
        },
    )
    yield server
    server.stop()


def test_a_503_burst_is_retried_on_the_same_model(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=503, times=2)
    started = time.monotonic()
    response = chat(gateway.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "deepseek-v3.2"
    assert response.headers["x-gateway-attempts"] == "3"
    assert fake.calls("deepseek-v3.2") == 3 and fake.calls("gemini-2.5-flash") == 0
    assert elapsed < 2.0  # two short backoffs, not the full cap


def test_a_failing_model_falls_back_along_the_chain(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    response = chat(gateway.url)
    assert response.status_code == 200
    assert response.json()["model"] == "gemini-2.5-flash"
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert response.headers["x-gateway-attempts"] == "4"
    assert fake.calls("deepseek-v3.2") == 3 and fake.calls("gemini-2.5-flash") == 1


def test_call_reports_the_model_that_answered(gateway: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=502)
    fake.fault(model="gemini-2.5-flash", kind="status", status=500)
    body = httpx.post(f"{gateway.url}/call", headers=AUTH, json={"messages": MESSAGES}).json()
    assert body["model"] == "gpt-4.1"
    assert fake.calls("gpt-4.1") == 1


def test_retry_after_is_honoured(gateway: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=429, retry_after="1", times=1)
    started = time.monotonic()
    response = chat(gateway.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "deepseek-v3.2"
    assert fake.calls("deepseek-v3.2") == 2
    assert 1.0 <= elapsed < 2.5


def test_a_retry_after_past_the_deadline_falls_back_at_once(
    quick: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=429, retry_after="30")
    started = time.monotonic()
    response = chat(quick.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fake.calls("deepseek-v3.2") == 1
    assert elapsed < 1.0


def test_a_hanging_model_times_out_and_falls_back(quick: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="deepseek-v3.2", kind="hang")
    started = time.monotonic()
    response = chat(quick.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fake.calls("deepseek-v3.2") == 3
    assert 1.5 <= elapsed < 3.5  # three 0.5 s timeouts plus short backoffs
    time.sleep(0.2)
    stats = fake.stats()
    assert stats["in_flight"] == 0 and stats["cancelled"] == 3  # no orphan upstream requests


def test_malformed_json_is_retried_then_falls_back(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="malformed")
    response = chat(gateway.url)
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fake.calls("deepseek-v3.2") == 3


def test_a_connection_drop_mid_stream_ends_with_an_error_not_done(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="drop", after_chunks=2)
    response, events = stream_events(gateway.url)
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert len(events) == 3
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_truncated"
    assert fake.calls("gemini-2.5-flash") == 0  # bytes had reached the client: no switching


def test_the_sdk_raises_on_a_stream_cut_mid_answer(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="drop", after_chunks=2)
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in sdk.chat.completions.create(
            model="deepseek-v3.2", messages=MESSAGES, stream=True
        ):
            received.append(chunk)
    assert len(received) == 2


def test_a_politely_truncated_stream_is_reported_as_an_error(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="truncate", after_chunks=2)
    _, events = stream_events(gateway.url)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_truncated"


def test_a_stream_that_fails_before_its_first_chunk_falls_back(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="drop", after_chunks=0)
    response, events = stream_events(gateway.url)
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert events[-1] == "[DONE]"
    assert fake.calls("deepseek-v3.2") == 3


def test_a_stream_refused_with_503_falls_back(gateway: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    response, events = stream_events(gateway.url)
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert events[-1] == "[DONE]"


def test_a_stalled_stream_is_cut_after_the_idle_timeout(
    quick: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="trickle", delay_ms=3000)
    started = time.monotonic()
    _, events = stream_events(quick.url)
    elapsed = time.monotonic() - started
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] in ("stream_timeout",)
    assert elapsed < 2.5


def test_the_deadline_covers_every_retry_and_fallback(
    quick: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="*", kind="hang")  # 3 models x 3 tries x 0.5 s would take 4.5 s
    started = time.monotonic()
    response = chat(quick.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert 3.5 <= elapsed < 4.8  # GATEWAY_TIMEOUT=4


def test_a_client_disconnect_cancels_the_upstream_call(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="hang")
    with pytest.raises(httpx.ReadTimeout):
        chat(gateway.url, timeout=0.5)
    time.sleep(0.3)
    stats = fake.stats()
    assert stats["cancelled"] == 1 and stats["in_flight"] == 0
    assert fake.calls("deepseek-v3.2") == 1


@pytest.fixture
def breaker_gateway(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(
        log_dir,
        fake.base_url,
        env={
            "GATEWAY_BREAKER_FAILURES": "2",
            "GATEWAY_BREAKER_COOLDOWN": "1",
            "GATEWAY_RETRY_ATTEMPTS": "1",
        },
    )
    yield server
    server.stop()


def test_the_breaker_opens_skips_the_model_and_closes_after_a_good_probe(
    breaker_gateway: GatewayServer, fake: FakeProvider
) -> None:
    base = breaker_gateway.url
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    for _ in range(2):
        assert chat(base).headers["x-gateway-model"] == "gemini-2.5-flash"
    assert httpx.get(f"{base}/health").json()["breakers"]["deepseek-v3.2"] == "open"
    assert fake.calls("deepseek-v3.2") == 2

    started = time.monotonic()
    response = chat(base)
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fake.calls("deepseek-v3.2") == 2  # open: no upstream call at all
    assert time.monotonic() - started < 0.5

    time.sleep(1.1)
    fake.reset()
    assert chat(base).headers["x-gateway-model"] == "deepseek-v3.2"  # the half-open probe
    assert httpx.get(f"{base}/health").json()["breakers"]["deepseek-v3.2"] == "closed"


def test_every_breaker_open_is_503_with_retry_after(
    breaker_gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="*", kind="status", status=500)
    for _ in range(2):
        assert chat(breaker_gateway.url).status_code == 502
    calls = fake.stats()["total"]
    response = chat(breaker_gateway.url)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "circuit_open"
    assert int(response.headers["retry-after"]) >= 1
    assert fake.stats()["total"] == calls


def test_a_client_leaving_mid_stream_closes_the_upstream_stream(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="deepseek-v3.2", kind="trickle", delay_ms=300)
    body = {"model": "deepseek-v3.2", "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=10, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as client,
        client.stream("POST", f"{gateway.v1}/chat/completions", json=body) as response,
    ):
        first = next(response.iter_bytes())
        assert first.startswith(b"data: ")
    deadline = time.monotonic() + 1  # before the last of the 5 trickled chunks (1.2 s) is due
    while time.monotonic() < deadline:
        stats = fake.stats()
        if stats["cancelled"] == 1 and stats["in_flight"] == 0:
            break
        time.sleep(0.05)
    assert (stats["cancelled"], stats["in_flight"]) == (1, 0)
