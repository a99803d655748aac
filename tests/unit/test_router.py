"""The router: retries, Retry-After, fallbacks, breakers and the deadline, over respx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
import respx
from prometheus_client import CollectorRegistry

from gateway.catalog import load_catalog
from gateway.errors import GatewayError
from gateway.observability.health import ServiceStats
from gateway.observability.metrics import Metrics
from gateway.routing.breaker import State
from gateway.routing.deadline import Deadline
from gateway.routing.router import Router, Served
from gateway.settings import Settings
from gateway.upstream.client import UpstreamClient
from gateway.upstream.failures import Attempt, FailureKind, UpstreamFailure

BASE = "http://up.test/v1"
URL = f"{BASE}/chat/completions"
KEY = "sk-router-unit-key"
CATALOG = load_catalog()
MESSAGES = [{"role": "user", "content": "hi"}]
CHAIN = ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1"]


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "HOLYSHEEP_BASE_URL": BASE, "HOLYSHEEP_API_KEY": KEY,
        "GATEWAY_RETRY_ATTEMPTS": 3, "GATEWAY_RETRY_BASE": 0.001, "GATEWAY_RETRY_MAX_WAIT": 0.002,
        "GATEWAY_RETRY_AFTER_MAX": 30, "GATEWAY_RETRY_STATUSES": "429,500,502,503,504",
        "GATEWAY_UPSTREAM_TIMEOUT": 5, "GATEWAY_STREAM_IDLE_TIMEOUT": 5, "GATEWAY_TIMEOUT": 30,
        "GATEWAY_BREAKER_FAILURES": 100, "GATEWAY_BREAKER_MIN_CALLS": 100,
        "GATEWAY_BREAKER_RATIO": 0.5, "GATEWAY_BREAKER_WINDOW": 30, "GATEWAY_BREAKER_COOLDOWN": 15,
        **overrides,
    }
    return Settings(**{k: str(v) for k, v in values.items()})  # type: ignore[arg-type]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    yield respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def make_router(mock: respx.MockRouter, clock: Callable[[], float] = time.monotonic,
                **overrides: object) -> Router:
    settings = make_settings(**overrides)
    upstream = UpstreamClient(settings, transport=httpx.MockTransport(mock.async_handler))
    return Router(settings, CATALOG, upstream, ServiceStats(), Metrics(CollectorRegistry()),
                  clock=clock)


def tried(served: Served) -> list[str]:
    """The failures on the way, as the client would read them (one deployment per model)."""
    return [attempt.describe(with_deployment=False) for attempt in served.failures]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep the router asks for, recorded (and not really slept)."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: object = None) -> object:
        recorded.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return recorded


def deadline(seconds: float = 10.0) -> Deadline:
    return Deadline.after(seconds)


def completion(model: str) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def sse_chunk(model: str, text: str, finish: str | None = None) -> bytes:
    event = {"id": "chatcmpl-1", "model": model,
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


def by_model(answers: dict[str, Callable[[], httpx.Response]],
             seen: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """A side effect answering per upstream model, recording the model of every call."""
    def answer(request: httpx.Request) -> httpx.Response:
        model = orjson.loads(request.content)["model"]
        seen.append(model)
        return answers[model]()
    return answer


def error(status: int, message: str = "busy", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"message": message}})


async def gateway_error(awaitable: object) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


# --- retries --------------------------------------------------------------------------------

async def test_a_503_is_retried_then_answered(mock: respx.MockRouter) -> None:
    route = mock.post(URL)
    route.side_effect = [error(503), httpx.Response(200, json=completion("gpt-4.1"))]
    served = await make_router(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.name, served.attempts, served.failures, route.call_count) == (
        "gpt-4.1", 2, [Attempt("gpt-4.1", "holysheep", FailureKind.STATUS, 1, 503, "busy")], 2)
    assert (served.provider, served.deployment) == ("holysheep", "holysheep")
    assert served.result.data == completion("gpt-4.1")
    assert served.entry is CATALOG.models["gpt-4.1"]


async def test_a_connection_error_is_retried_too(mock: respx.MockRouter) -> None:
    route = mock.post(URL)
    route.side_effect = [httpx.ConnectError("refused"), httpx.ConnectError("refused"),
                         httpx.Response(200, json=completion("gpt-4.1"))]
    served = await make_router(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.attempts, route.call_count) == (3, 3)


async def test_backoff_waits_grow_and_are_jittered_under_the_cap(
    mock: respx.MockRouter, sleeps: list[float],
) -> None:
    route = mock.post(URL)
    route.side_effect = [error(500), error(500), httpx.Response(200, json=completion("gpt-4.1"))]
    await make_router(mock, GATEWAY_RETRY_BASE=0.001, GATEWAY_RETRY_MAX_WAIT=0.0015).complete(
        "gpt-4.1", {"messages": MESSAGES}, deadline())
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.001      # uniform in [0, base]
    assert 0 <= sleeps[1] <= 0.0015     # uniform in [0, min(2·base, max wait)]


async def test_retry_after_header_sets_the_wait(mock: respx.MockRouter) -> None:
    route = mock.post(URL)
    route.side_effect = [error(429, **{"Retry-After": "0.05"}),
                         httpx.Response(200, json=completion("gpt-4.1"))]
    started = time.monotonic()
    served = await make_router(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    elapsed = time.monotonic() - started
    assert served.attempts == 2
    assert 0.05 <= elapsed < 1.0


async def test_retry_after_header_is_the_exact_wait(
    mock: respx.MockRouter, sleeps: list[float],
) -> None:
    route = mock.post(URL)
    route.side_effect = [error(429, **{"Retry-After": "0.05"}),
                         error(503, **{"Retry-After": "2"}),
                         httpx.Response(200, json=completion("gpt-4.1"))]
    await make_router(mock).complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert sleeps == [0.05, 2.0]


async def test_retry_after_is_capped_by_retry_after_max(mock: respx.MockRouter) -> None:
    route = mock.post(URL)
    route.side_effect = [error(429, **{"Retry-After": "60"}),
                         httpx.Response(200, json=completion("gpt-4.1"))]
    started = time.monotonic()
    served = await make_router(mock, GATEWAY_RETRY_AFTER_MAX=0.05).complete(
        "gpt-4.1", {"messages": MESSAGES}, deadline())
    elapsed = time.monotonic() - started
    assert served.attempts == 2
    assert 0.05 <= elapsed < 1.0


async def test_a_capped_retry_after_sleeps_exactly_the_cap(
    mock: respx.MockRouter, sleeps: list[float],
) -> None:
    route = mock.post(URL)
    route.side_effect = [error(429, **{"Retry-After": "60"}),
                         httpx.Response(200, json=completion("gpt-4.1"))]
    await make_router(mock, GATEWAY_RETRY_AFTER_MAX=0.25).complete(
        "gpt-4.1", {"messages": MESSAGES}, deadline())
    assert sleeps == [0.25]


async def test_a_retry_after_beyond_the_deadline_falls_back_at_once(
    mock: respx.MockRouter, sleeps: list[float],
) -> None:
    seen: list[str] = []
    mock.post(URL).mock(side_effect=by_model({
        "deepseek-v3.2": lambda: error(429, "slow down", **{"Retry-After": "5"}),
        "gemini-2.5-flash": lambda: httpx.Response(200, json=completion("gemini-2.5-flash")),
    }, seen))
    started = time.monotonic()
    served = await make_router(mock).complete("deepseek-v3.2", {"messages": MESSAGES},
                                              deadline(2.0))
    assert time.monotonic() - started < 1.0
    assert sleeps == []
    assert seen == ["deepseek-v3.2", "gemini-2.5-flash"]
    assert (served.name, served.attempts) == ("gemini-2.5-flash", 2)
    assert tried(served) == ["deepseek-v3.2: HTTP 429: slow down (after 1 attempt)"]


# --- client errors --------------------------------------------------------------------------

async def test_a_400_is_neither_retried_nor_fallen_back_from(mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(400, json={"error": {
        "message": "max_tokens is too large", "type": "invalid_request_error",
        "param": "max_tokens", "code": "invalid_value"}})
    failure = await gateway_error(make_router(mock).complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.message, failure.type, failure.code) == (
        400, "max_tokens is too large", "invalid_request_error", "invalid_value")
    assert route.call_count == 1


async def test_a_4xx_without_an_error_type_is_an_invalid_request(mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(404, content=b"not here")
    failure = await gateway_error(make_router(mock).complete(
        "gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.message, failure.type, failure.code) == (
        404, "the upstream answered HTTP 404", "invalid_request_error", None)
    assert route.call_count == 1


async def test_a_5xx_outside_the_retry_statuses_is_relayed_without_retry_or_fallback(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(
        500, json={"error": {"message": "internal", "type": "server_error"}})
    failure = await gateway_error(make_router(mock, GATEWAY_RETRY_STATUSES="429,503").complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.message, failure.type) == (500, "internal", "server_error")
    assert route.call_count == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_rejecting_the_gateways_key_is_a_502(
    mock: respx.MockRouter, status: int,
) -> None:
    route = mock.post(URL).respond(status, json={"error": {"message": f"invalid key {KEY}"}})
    failure = await gateway_error(make_router(mock).complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.type, failure.code) == (
        502, "upstream_error", "upstream_auth_failed")
    assert failure.message == (f"The upstream rejected the gateway's credentials "
                               f"(HTTP {status}): invalid key [redacted]")
    assert route.call_count == 1


async def test_a_client_error_does_not_count_against_the_breaker(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(400, json={"error": {"message": "bad"}})
    router = make_router(mock, GATEWAY_BREAKER_FAILURES=1)
    for _ in range(3):
        await gateway_error(router.complete("gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert router.breaker("gpt-4.1").state is State.CLOSED


# --- fallbacks ------------------------------------------------------------------------------

async def test_after_every_retry_fails_it_falls_back_to_the_next_model(
    mock: respx.MockRouter,
) -> None:
    seen: list[str] = []
    route = mock.post(URL).mock(side_effect=by_model({
        "deepseek-v3.2": lambda: error(503, "overloaded"),
        "gemini-2.5-flash": lambda: httpx.Response(200, json=completion("gemini-2.5-flash")),
    }, seen))
    served = await make_router(mock).complete(
        "deepseek-v3.2", {"messages": MESSAGES, "temperature": 0.2}, deadline())
    assert seen == ["deepseek-v3.2"] * 3 + ["gemini-2.5-flash"]
    assert orjson.loads(route.calls.last.request.content) == {
        "messages": MESSAGES, "temperature": 0.2, "model": "gemini-2.5-flash"}
    assert (served.name, served.attempts) == ("gemini-2.5-flash", 4)
    assert served.entry is CATALOG.models["gemini-2.5-flash"]
    assert tried(served) == ["deepseek-v3.2: HTTP 503: overloaded (after 3 attempts)"]
    assert served.result.data["model"] == "gemini-2.5-flash"


async def test_the_payloads_model_is_replaced_by_the_upstream_model(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(200, json=completion("gpt-4.1"))
    await make_router(mock).complete(
        "gpt-4.1", {"model": "something-else", "messages": MESSAGES, "x_custom": [1]}, deadline())
    assert orjson.loads(route.calls.last.request.content) == {
        "model": "gpt-4.1", "messages": MESSAGES, "x_custom": [1]}


async def test_when_every_model_fails_the_502_names_each_model_tried(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(500, json={"error": {"message": "boom"}})
    failure = await gateway_error(make_router(mock).complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.type, failure.code) == (502, "upstream_error", "upstream_error")
    assert failure.message == (
        "All models failed: deepseek-v3.2: HTTP 500: boom (after 3 attempts); "
        "gemini-2.5-flash: HTTP 500: boom (after 3 attempts); "
        "gpt-4.1: HTTP 500: boom (after 3 attempts).")
    assert route.call_count == 9


async def test_a_single_model_failing_says_the_upstream_failed(mock: respx.MockRouter) -> None:
    mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    failure = await gateway_error(make_router(mock).complete(
        "claude-sonnet-4.5", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.code) == (502, "upstream_connect")
    assert failure.message == ("The upstream failed: claude-sonnet-4.5: could not connect to the "
                               "upstream (after 3 attempts).")


async def test_all_timeouts_are_a_504(mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    failure = await gateway_error(make_router(mock).complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.type, failure.code) == (
        504, "timeout_error", "upstream_timeout")
    assert failure.message == (
        "The upstream timed out: "
        "deepseek-v3.2: the upstream did not answer in time (after 3 attempts); "
        "gemini-2.5-flash: the upstream did not answer in time (after 3 attempts); "
        "gpt-4.1: the upstream did not answer in time (after 3 attempts).")
    assert route.call_count == 9


async def test_timeouts_mixed_with_other_failures_are_a_502(mock: respx.MockRouter) -> None:
    route = mock.post(URL)
    route.side_effect = [httpx.ReadTimeout("slow"), error(502, "bad gateway")]
    failure = await gateway_error(make_router(mock, GATEWAY_RETRY_ATTEMPTS=2).complete(
        "gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.code) == (502, "upstream_error")
    assert failure.message == (
        "The upstream failed: gpt-4.1: HTTP 502: bad gateway (after 2 attempts).")


# --- circuit breakers -----------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def clocked_router(mock: respx.MockRouter, clock: Clock) -> Router:
    """Breakers on ``clock`` that open at the first failure, with a 15 s cooldown."""
    return make_router(mock, clock, GATEWAY_BREAKER_FAILURES=1)


async def test_open_breakers_for_the_whole_chain_are_a_503_without_an_upstream_call(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(200, json=completion("gpt-4.1"))
    clock = Clock()
    router = clocked_router(mock, clock)
    router.breaker("deepseek-v3.2").record_failure()   # opened at t=500
    clock.now = 502.0
    router.breaker("gemini-2.5-flash").record_failure()  # opened at t=502
    router.breaker("gpt-4.1").record_failure()
    clock.now = 508.25                                    # deepseek's probe is 6.75 s away
    failure = await gateway_error(router.complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.type, failure.code) == (503, "upstream_error", "circuit_open")
    assert failure.headers == {"Retry-After": "7"}
    assert failure.message == (
        "Every model in the chain is temporarily disabled: deepseek-v3.2: circuit open; "
        "gemini-2.5-flash: circuit open; gpt-4.1: circuit open.")
    assert route.call_count == 0
    assert failure.to_response().headers["retry-after"] == "7"


async def test_failures_open_the_breaker_and_the_next_request_is_refused(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(500, json={"error": {"message": "boom"}})
    router = make_router(mock, GATEWAY_BREAKER_FAILURES=2)
    failure = await gateway_error(router.complete("gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert route.call_count == 2   # the third attempt met an open breaker
    assert (failure.status, failure.code) == (502, "upstream_error")
    assert router.breaker_states()["gpt-4.1"] == "open"
    refused = await gateway_error(router.complete("gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert (refused.status, refused.code, refused.headers) == (503, "circuit_open",
                                                               {"Retry-After": "15"})
    assert route.call_count == 2


async def test_a_breaker_opened_by_this_requests_failures_still_reports_them(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(500, json={"error": {"message": "boom"}})
    router = make_router(mock, GATEWAY_BREAKER_FAILURES=2)
    failure = await gateway_error(router.complete("gpt-4.1", {"messages": MESSAGES}, deadline()))
    assert "HTTP 500: boom" in failure.message


@pytest.mark.parametrize(("retry_in", "header"), [(6.75, "7"), (14.0, "14"), (0.2, "1"),
                                                  (0.0, "1")])
async def test_the_circuit_open_retry_after_is_the_cooldown_left_rounded_up(
    mock: respx.MockRouter, retry_in: float, header: str,
) -> None:
    clock = Clock()
    router = clocked_router(mock, clock)
    for name in CHAIN:
        router.breaker(name).record_failure()
    clock.now += 15.0 - retry_in
    if retry_in == 0.0:  # cooldown over: hold each half-open breaker's probe slot
        assert all(router.breaker(name).allow() for name in CHAIN)
    failure = await gateway_error(router.complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert (failure.status, failure.headers) == (503, {"Retry-After": header})


async def test_a_whole_number_of_seconds_left_is_not_rounded_up_further(
    mock: respx.MockRouter,
) -> None:
    clock = Clock()
    router = clocked_router(mock, clock)
    for name in CHAIN:
        router.breaker(name).record_failure()
    failure = await gateway_error(router.complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline()))
    assert failure.headers == {"Retry-After": "15"}


async def test_an_open_breaker_skips_to_the_next_model(mock: respx.MockRouter) -> None:
    seen: list[str] = []
    mock.post(URL).mock(side_effect=by_model({
        "gemini-2.5-flash": lambda: httpx.Response(200, json=completion("gemini-2.5-flash")),
    }, seen))
    clock = Clock()
    router = clocked_router(mock, clock)
    router.breaker("deepseek-v3.2").record_failure()
    served = await router.complete("deepseek-v3.2", {"messages": MESSAGES}, deadline())
    assert seen == ["gemini-2.5-flash"]
    assert (served.name, served.attempts, tried(served)) == (
        "gemini-2.5-flash", 1, ["deepseek-v3.2: circuit open"])


async def test_after_the_cooldown_a_successful_probe_closes_the_breaker(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(200, json=completion("gpt-4.1"))
    clock = Clock()
    router = clocked_router(mock, clock)
    router.breaker("gpt-4.1").record_failure()
    clock.now += 15.0
    assert router.breaker_states()["gpt-4.1"] == "half_open"
    served = await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.name, served.attempts) == ("gpt-4.1", 1)
    assert router.breaker_states()["gpt-4.1"] == "closed"


# --- streams --------------------------------------------------------------------------------

async def test_a_stream_truncated_before_its_first_chunk_falls_back(
    mock: respx.MockRouter,
) -> None:
    seen: list[str] = []
    mock.post(URL).mock(side_effect=by_model({
        "deepseek-v3.2": lambda: httpx.Response(200, content=b""),
        "gemini-2.5-flash": lambda: httpx.Response(200, content=(
            sse_chunk("gemini-2.5-flash", "hi") + sse_chunk("gemini-2.5-flash", "!", "stop")
            + b"data: [DONE]\n\n")),
    }, seen))
    served = await make_router(mock).open_stream(
        "deepseek-v3.2", {"messages": MESSAGES, "stream": True}, deadline())
    assert seen == ["deepseek-v3.2"] * 3 + ["gemini-2.5-flash"]
    assert (served.name, served.attempts) == ("gemini-2.5-flash", 4)
    assert tried(served) == [("deepseek-v3.2: the upstream stream ended before its final chunk "
                              "(after 3 attempts)")]
    texts = [c["choices"][0]["delta"]["content"] async for _, c in served.result]
    assert texts == ["hi", "!"]
    assert (served.result.finish_reason, served.result.model) == ("stop", "gemini-2.5-flash")


async def test_a_stream_refused_with_503_falls_back(mock: respx.MockRouter) -> None:
    seen: list[str] = []
    mock.post(URL).mock(side_effect=by_model({
        "deepseek-v3.2": lambda: error(503),
        "gemini-2.5-flash": lambda: httpx.Response(
            200, content=sse_chunk("gemini-2.5-flash", "ok", "stop")),
    }, seen))
    served = await make_router(mock, GATEWAY_RETRY_ATTEMPTS=1).open_stream(
        "deepseek-v3.2", {"messages": MESSAGES, "stream": True}, deadline())
    assert seen == ["deepseek-v3.2", "gemini-2.5-flash"]
    assert served.name == "gemini-2.5-flash"
    assert [c["choices"][0]["delta"]["content"] async for _, c in served.result] == ["ok"]


async def test_a_stream_failing_after_its_first_chunk_does_not_fall_back(
    mock: respx.MockRouter,
) -> None:
    seen: list[str] = []
    mock.post(URL).mock(side_effect=by_model({
        "deepseek-v3.2": lambda: httpx.Response(200, content=sse_chunk("deepseek-v3.2", "par")),
    }, seen))
    served = await make_router(mock).open_stream(
        "deepseek-v3.2", {"messages": MESSAGES, "stream": True}, deadline())
    assert (served.name, served.attempts, seen) == ("deepseek-v3.2", 1, ["deepseek-v3.2"])
    texts: list[str] = []
    with pytest.raises(UpstreamFailure) as caught:
        async for _, c in served.result:
            texts.append(c["choices"][0]["delta"]["content"])
    assert texts == ["par"]
    assert caught.value.kind == "truncated"


# --- the deadline ---------------------------------------------------------------------------

async def test_a_deadline_already_past_is_a_504_without_an_upstream_call(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(200, json=completion("gpt-4.1"))
    router = make_router(mock, GATEWAY_TIMEOUT=30)
    failure = await gateway_error(router.complete(
        "gpt-4.1", {"messages": MESSAGES}, Deadline(time.monotonic() - 1, 2.5)))
    assert (failure.status, failure.type, failure.code) == (
        504, "timeout_error", "deadline_exceeded")
    assert failure.message == "The request's deadline of 2.5 s ran out."  # not GATEWAY_TIMEOUT
    assert route.call_count == 0
    assert router.breaker_states()["gpt-4.1"] == "closed"


async def test_a_deadline_running_out_during_the_chain_is_a_504_naming_what_was_tried(
    mock: respx.MockRouter,
) -> None:
    asked: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        asked.append(orjson.loads(request.content)["model"])
        await asyncio.sleep(1)
        return httpx.Response(200, json=completion("deepseek-v3.2"))

    mock.post(URL).mock(side_effect=slow)
    started = time.monotonic()
    failure = await gateway_error(make_router(mock, GATEWAY_TIMEOUT=30).complete(
        "deepseek-v3.2", {"messages": MESSAGES}, deadline(0.05)))
    assert time.monotonic() - started < 0.5
    assert (failure.status, failure.code) == (504, "deadline_exceeded")
    assert failure.message == (
        "The request's deadline of 0.05 s ran out. Tried: deepseek-v3.2: the upstream did not "
        "answer in time (after 1 attempt).")
    assert asked == ["deepseek-v3.2"]  # cancelled at the deadline, so respx never logged it


async def test_a_probe_stopped_by_the_deadline_is_released(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, json=completion("gpt-4.1"))
    clock = Clock()
    router = clocked_router(mock, clock)
    router.breaker("gpt-4.1").record_failure()
    clock.now += 15.0
    await gateway_error(router.complete("gpt-4.1", {"messages": MESSAGES},
                                        Deadline(time.monotonic() - 1, 1.0)))
    assert router.breaker("gpt-4.1").allow() is True  # the probe slot was handed back
