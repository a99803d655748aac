"""The upstream client and the router, against respx (the httpx transport)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
import respx
from prometheus_client import CollectorRegistry

from gateway.catalog import load_catalog
from gateway.errors import GatewayError
from gateway.failures import UpstreamFailure
from gateway.health import ServiceStats
from gateway.metrics import Metrics
from gateway.router import Router
from gateway.settings import Settings
from gateway.upstream import UpstreamClient, parse_retry_after

BASE = "http://up.test/v1"
KEY = "sk-upstream-unit-key"
CATALOG = load_catalog()
MESSAGES = [{"role": "user", "content": "hi"}]


def completion(model: str = "gpt-4.1") -> dict[str, object]:
    return {"id": "c1", "object": "chat.completion", "model": model, "extra_field": 1,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def sse(*chunks: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"id": "c1", "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def settings(**overrides: object) -> Settings:
    values = {"HOLYSHEEP_BASE_URL": BASE, "HOLYSHEEP_API_KEY": KEY, "GATEWAY_RETRY_BASE": 0.001,
              "GATEWAY_RETRY_MAX_WAIT": 0.002, "GATEWAY_RETRY_AFTER_MAX": 0.3, **overrides}
    return Settings(**{k: str(v) for k, v in values.items()})  # type: ignore[arg-type]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def client(mock: respx.MockRouter, **overrides: object) -> UpstreamClient:
    return UpstreamClient(settings(**overrides), transport=httpx.MockTransport(mock.async_handler))


def router_for(mock: respx.MockRouter, **overrides: object) -> Router:
    s = settings(**overrides)
    upstream = UpstreamClient(s, transport=httpx.MockTransport(mock.async_handler))
    return Router(s, CATALOG, upstream, ServiceStats(), Metrics(CollectorRegistry()))


# --- the client -----------------------------------------------------------------------------

async def test_the_key_is_sent_and_the_answer_kept_byte_for_byte(mock: respx.MockRouter) -> None:
    raw = orjson.dumps(completion())
    route = mock.post("/chat/completions").respond(200, content=raw)
    reply = await client(mock).post_json("/chat/completions", b"{}", 5)
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    assert str(route.calls.last.request.url) == f"{BASE}/chat/completions"
    assert reply.body == raw and reply.data["extra_field"] == 1


async def test_a_4xx_is_a_client_error_with_the_upstreams_words(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(400, json={"error": {
        "message": "bad temperature", "type": "invalid_request_error", "code": "bad_param"}})
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).post_json("/chat/completions", b"{}", 5)
    failure = caught.value
    assert (failure.kind, failure.status, failure.retryable, failure.is_client_error) == (
        "status", 400, False, True)
    assert (failure.message, failure.error_type, failure.error_code) == (
        "bad temperature", "invalid_request_error", "bad_param")


async def test_429_and_503_are_retryable_with_retry_after(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(429, headers={"Retry-After": "2"}, json={})
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).post_json("/chat/completions", b"{}", 5)
    assert caught.value.retryable and caught.value.retry_after == 2.0


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("1.5") == 1.5
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 28 <= (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_an_upstream_message_quoting_the_key_is_redacted(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(401, json={"error": {"message": f"bad key {KEY}"}})
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).post_json("/chat/completions", b"{}", 5)
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message


@pytest.mark.parametrize(("effect", "kind"), [
    (httpx.ConnectError("refused"), "connect"),
    (httpx.ReadTimeout("slow"), "timeout"),
    (httpx.RemoteProtocolError("closed"), "connect"),
])
async def test_transport_errors_are_classified(mock: respx.MockRouter, effect: Exception,
                                               kind: str) -> None:
    mock.post("/chat/completions").mock(side_effect=effect)
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).post_json("/chat/completions", b"{}", 5)
    assert caught.value.kind == kind and caught.value.retryable


async def test_malformed_json_is_a_protocol_failure(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(200, content=b'{"choices": [')
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).post_json("/chat/completions", b"{}", 5)
    assert caught.value.kind == "protocol"


async def test_a_stream_yields_its_chunks_and_totals(mock: respx.MockRouter) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    mock.post("/chat/completions").respond(200, content=sse(
        chunk("Hel"), chunk("lo", "stop"), {"id": "c1", "choices": [], "usage": usage}))
    stream = await client(mock).open_stream("/chat/completions", b"{}", 5)
    await stream.start()
    texts = [c["choices"][0]["delta"]["content"] async for _, c in stream if c["choices"]]
    assert texts == ["Hel", "lo"]
    assert (stream.finish_reason, stream.usage, stream.model, stream.done) == (
        "stop", usage, "gpt-4.1", True)


@pytest.mark.parametrize(("body", "kind"), [
    (sse(chunk("a"), chunk("b"), done=False), "truncated"),
    (sse(chunk("a"), {"error": {"message": "overloaded"}}), "protocol"),
    (b"data: {not json\n\n", "protocol"),
])
async def test_a_broken_stream_raises(mock: respx.MockRouter, body: bytes, kind: str) -> None:
    mock.post("/chat/completions").respond(200, content=body)
    stream = await client(mock).open_stream("/chat/completions", b"{}", 5)
    with pytest.raises(UpstreamFailure) as caught:
        await stream.start()
        async for _ in stream:
            pass
    assert caught.value.kind == kind


async def test_a_refused_stream_raises_the_status_failure(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(503, json={"error": {"message": "busy"}})
    with pytest.raises(UpstreamFailure) as caught:
        await client(mock).open_stream("/chat/completions", b"{}", 5)
    assert (caught.value.status, caught.value.message) == (503, "busy")


# --- the router -----------------------------------------------------------------------------

def deadline(seconds: float = 10) -> float:
    return time.monotonic() + seconds


async def test_a_503_is_retried_then_answered(mock: respx.MockRouter) -> None:
    route = mock.post("/chat/completions")
    route.side_effect = [httpx.Response(503, json={}), httpx.Response(200, json=completion())]
    served = await router_for(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.name, served.attempts, route.call_count) == ("gpt-4.1", 2, 2)


async def test_retry_after_sets_the_wait_capped_by_the_setting(mock: respx.MockRouter) -> None:
    route = mock.post("/chat/completions")
    route.side_effect = [httpx.Response(429, headers={"Retry-After": "0.1"}, json={}),
                         httpx.Response(429, headers={"Retry-After": "60"}, json={}),
                         httpx.Response(200, json=completion())]
    started = time.monotonic()
    await router_for(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.0  # 0.1 s, then 60 s capped to GATEWAY_RETRY_AFTER_MAX=0.3


async def test_a_retry_after_beyond_the_deadline_falls_back_at_once(mock: respx.MockRouter) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        model = orjson.loads(request.content)["model"]
        if model == "deepseek-v3.2":
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={})
        return httpx.Response(200, json=completion(model))

    mock.post("/chat/completions").mock(side_effect=answer)
    started = time.monotonic()
    served = await router_for(mock).complete("deepseek-v3.2", {"messages": MESSAGES}, deadline(0.2))
    assert served.name == "gemini-2.5-flash"
    assert time.monotonic() - started < 0.15


async def test_a_client_error_is_neither_retried_nor_fallen_back_from(
    mock: respx.MockRouter,
) -> None:
    route = mock.post("/chat/completions").respond(400, json={"error": {"message": "no"}})
    with pytest.raises(GatewayError) as caught:
        await router_for(mock).complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    assert (caught.value.status, caught.value.message, route.call_count) == (400, "no", 1)


async def test_the_chain_is_followed_and_the_payload_names_each_model(
    mock: respx.MockRouter,
) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        model = orjson.loads(request.content)["model"]
        seen.append(model)
        return httpx.Response(503 if model == "deepseek-v3.2" else 200, json=completion(model))

    mock.post("/chat/completions").mock(side_effect=answer)
    served = await router_for(mock).complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    assert served.name == "gemini-2.5-flash" and served.attempts == 4
    assert seen == ["deepseek-v3.2"] * 3 + ["gemini-2.5-flash"]


async def test_when_every_model_fails_the_502_names_them_all(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(500, json={"error": {"message": "boom"}})
    with pytest.raises(GatewayError) as caught:
        await router_for(mock).complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    assert caught.value.status == 502
    for model in ("deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1"):
        assert model in caught.value.message


async def test_all_timeouts_are_504(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GatewayError) as caught:
        await router_for(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")


async def test_upstream_rejecting_the_gateways_key_is_a_502(mock: respx.MockRouter) -> None:
    mock.post("/chat/completions").respond(401, json={"error": {"message": "bad key"}})
    with pytest.raises(GatewayError) as caught:
        await router_for(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (caught.value.status, caught.value.code) == (502, "upstream_auth_failed")


async def test_open_breakers_everywhere_are_a_503_without_an_upstream_call(
    mock: respx.MockRouter,
) -> None:
    route = mock.post("/chat/completions").respond(500, json={})
    router = router_for(mock, GATEWAY_BREAKER_FAILURES=1, GATEWAY_RETRY_ATTEMPTS=1)
    with pytest.raises(GatewayError):
        await router.complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    calls = route.call_count
    with pytest.raises(GatewayError) as caught:
        await router.complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    assert caught.value.status == 503 and int(caught.value.headers["Retry-After"]) >= 1
    assert route.call_count == calls


async def test_a_stream_failing_before_its_first_chunk_falls_back(mock: respx.MockRouter) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        model = orjson.loads(request.content)["model"]
        if model == "deepseek-v3.2":
            return httpx.Response(200, content=b"")  # ends before any chunk: truncated
        return httpx.Response(200, content=sse(chunk("hi", "stop")))

    mock.post("/chat/completions").mock(side_effect=answer)
    served = await router_for(mock).open_stream("deepseek-v3.2", {"messages": MESSAGES, "stream": True},
                                                deadline())
    assert served.name == "gemini-2.5-flash"
    assert [c["choices"][0]["delta"]["content"] async for _, c in served.result] == ["hi"]


async def test_a_deadline_already_past_is_a_504(mock: respx.MockRouter) -> None:
    with pytest.raises(GatewayError) as caught:
        await router_for(mock).complete("gpt-4.1", {"messages": MESSAGES}, time.monotonic() - 1)
    assert (caught.value.status, caught.value.code) == (504, "deadline_exceeded")
