"""The upstream client over respx (an unstarted respx router as the httpx transport)."""

from __future__ import annotations

import asyncio
import itertools
import types
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import orjson
import pytest
import respx
import yaml

from gateway.catalog import DEFAULT_CATALOG, Catalog, load_catalog
from gateway.settings import Settings
from gateway.upstream.client import UpstreamClient, Upstreams, UpstreamStream, parse_retry_after
from gateway.upstream.failures import UpstreamFailure
from gateway.upstream.transports import (
    AiohttpTransport,
    HttpxTransport,
    ReqwestTransport,
    choose_proxy,
)

BASE = "http://up.test/v1"
URL = f"{BASE}/chat/completions"
KEY = "sk-upstream-unit-key-42"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "HOLYSHEEP_BASE_URL": BASE, "HOLYSHEEP_API_KEY": KEY,
        "GATEWAY_RETRY_STATUSES": "429,500,502,503,504",
        "GATEWAY_UPSTREAM_TIMEOUT": 5, "GATEWAY_STREAM_IDLE_TIMEOUT": 5,
        **overrides,
    }
    env = {k: str(v) for k, v in values.items() if v is not None}
    return Settings(**env)  # type: ignore[arg-type]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    # Never started: it patches nothing and only answers through the MockTransport below.
    yield respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def client_for(mock: respx.MockRouter, **overrides: object) -> UpstreamClient:
    return UpstreamClient(make_settings(**overrides),
                          transport=httpx.MockTransport(mock.async_handler))


def completion(**extra: object) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4.1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, **extra}


def chunk(text: str | None = None, finish: str | None = None, **extra: object) -> dict[str, object]:
    delta = {} if text is None else {"content": text}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def sse(*events: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


async def pieces(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def failure_of(awaitable: object) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


async def drain(stream: UpstreamStream) -> list[dict[str, object]]:
    await stream.start()
    return [c async for _, c in stream]


# --- requests -------------------------------------------------------------------------------

async def test_the_upstream_key_is_sent_as_a_bearer_token(mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=completion())
    await client_for(mock).post_json("/chat/completions", b"{}", 5)
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert "gzip" in request.headers["accept-encoding"]  # offered and decoded by httpx itself


async def test_without_an_upstream_key_no_authorization_header_is_sent(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(URL).respond(200, json=completion())
    await client_for(mock, HOLYSHEEP_API_KEY=None).post_json("/chat/completions", b"{}", 5)
    assert "authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize("base", [BASE, BASE + "/"])
async def test_the_path_is_appended_to_the_base_url(mock: respx.MockRouter, base: str) -> None:
    route = mock.post(URL).respond(200, json=completion())
    await client_for(mock, HOLYSHEEP_BASE_URL=base).post_json("/chat/completions", b"{}", 5)
    assert str(route.calls.last.request.url) == "http://up.test/v1/chat/completions"


async def test_the_request_body_is_sent_as_given(mock: respx.MockRouter) -> None:
    route = mock.post(URL).respond(200, json=completion())
    body = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"x":1}'
    await client_for(mock).post_json("/chat/completions", body, 5)
    assert route.calls.last.request.content == body
    assert route.calls.last.request.method == "POST"


async def test_the_json_answer_is_parsed_and_its_bytes_kept_as_received(
    mock: respx.MockRouter,
) -> None:
    raw = b'{ "id" : "c1",\n  "choices": [], "vendor_extra": {"x": 1.50} }'
    mock.post(URL).respond(200, content=raw, headers={"content-type": "application/json"})
    reply = await client_for(mock).post_json("/chat/completions", b"{}", 5)
    assert reply.status == 200
    assert reply.body == raw
    assert reply.data == {"id": "c1", "choices": [], "vendor_extra": {"x": 1.5}}


# --- status failures ------------------------------------------------------------------------

async def test_a_4xx_is_a_non_retryable_status_failure_with_the_upstreams_error(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(400, json={"error": {
        "message": "temperature must be <= 2", "type": "invalid_request_error",
        "param": "temperature", "code": "invalid_value"}})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.status, failure.retryable, failure.is_client_error) == (
        "status", 400, False, True)
    assert (failure.message, failure.error_type, failure.error_code) == (
        "temperature must be <= 2", "invalid_request_error", "invalid_value")
    assert failure.retry_after is None
    assert failure.describe() == "HTTP 400: temperature must be <= 2"


async def test_a_numeric_error_code_is_kept_as_text(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(404, json={"error": {"message": "no such model", "code": 404}})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.status, failure.message, failure.error_type, failure.error_code) == (
        404, "no such model", None, "404")


async def test_an_error_given_as_a_string_is_the_message(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(422, json={"error": "unprocessable"})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.status, failure.message) == (422, "unprocessable")


@pytest.mark.parametrize("content", [b"<html>Bad Gateway</html>", b"", b"[1, 2]", b'{"detail": 1}'])
async def test_an_error_body_without_an_openai_error_gets_a_generic_message(
    mock: respx.MockRouter, content: bytes,
) -> None:
    mock.post(URL).respond(403, content=content)
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.status, failure.message, failure.error_type,
            failure.error_code) == ("status", 403, "the upstream answered HTTP 403", None, None)


async def test_a_429_is_retryable_with_retry_after_in_seconds(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(429, headers={"Retry-After": "7"},
                           json={"error": {"message": "slow down", "type": "rate_limit_error"}})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.status, failure.retryable, failure.is_client_error) == (
        "status", 429, True, False)
    assert (failure.retry_after, failure.message, failure.error_type) == (
        7.0, "slow down", "rate_limit_error")


async def test_a_503_is_retryable_with_retry_after_as_an_http_date(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_700_000_000.0
    monkeypatch.setattr("gateway.upstream.client.time", types.SimpleNamespace(time=lambda: now))
    mock.post(URL).respond(503, headers={"Retry-After": formatdate(now + 120, usegmt=True)})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.status, failure.retryable, failure.retry_after) == (503, True, 120.0)
    assert failure.message == "the upstream answered HTTP 503"


async def test_which_statuses_are_retryable_comes_from_the_settings(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(503, json={})
    client = client_for(mock, GATEWAY_RETRY_STATUSES="429")
    failure = await failure_of(client.post_json("/chat/completions", b"{}", 5))
    assert (failure.status, failure.retryable) == (503, False)


async def test_an_upstream_message_quoting_the_key_is_redacted(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(401, json={"error": {
        "message": f"Incorrect API key provided: {KEY}. Check {KEY} again.",
        "type": "authentication_error"}})
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert failure.message == "Incorrect API key provided: [redacted]. Check [redacted] again."
    assert KEY not in failure.describe()


# --- transport failures ---------------------------------------------------------------------

async def test_malformed_json_is_a_protocol_failure(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=b'{"choices": [')
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.message, failure.status, failure.retryable) == (
        "protocol", "the upstream answered with malformed JSON", None, True)


async def test_json_that_is_not_an_object_is_a_protocol_failure(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, json=[completion()])
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.message) == (
        "protocol", "the upstream answered with JSON that is not an object")


@pytest.mark.parametrize(("effect", "kind", "message"), [
    (httpx.ConnectError("refused"), "connect", "could not connect to the upstream"),
    (httpx.ConnectTimeout("slow connect"), "connect", "could not connect to the upstream in time"),
    (httpx.ReadTimeout("slow"), "timeout", "the upstream did not answer in time"),
    (httpx.RemoteProtocolError("closed"), "connect",
     "the upstream closed the connection without answering"),
])
async def test_transport_errors_are_classified(
    mock: respx.MockRouter, effect: Exception, kind: str, message: str,
) -> None:
    mock.post(URL).mock(side_effect=effect)
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.message, failure.retryable, failure.status) == (
        kind, message, True, None)


async def test_an_answer_slower_than_the_budget_is_a_timeout(mock: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, json=completion())

    mock.post(URL).mock(side_effect=slow)
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await failure_of(client_for(mock).post_json("/chat/completions", b"{}", 0.05))
    assert (failure.kind, failure.message) == ("timeout", "the upstream did not answer in time")
    assert loop.time() - started < 0.5


# --- Retry-After ----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("0", 0.0), ("2", 2.0), ("1.5", 1.5), (" 3 ", 3.0), ("0.05", 0.05), ("-4", 0.0),
])
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date_is_seconds_from_now(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_700_000_000.0
    monkeypatch.setattr("gateway.upstream.client.time", types.SimpleNamespace(time=lambda: now))
    assert parse_retry_after(formatdate(now + 30, usegmt=True)) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT") == 30.0
    assert parse_retry_after(formatdate(now - 60, usegmt=True)) == 0.0  # in the past: now


@pytest.mark.parametrize("value", [None, "", "soon", "Tuesday", "12 parsecs"])
def test_an_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


# --- streams --------------------------------------------------------------------------------

async def test_a_stream_yields_each_chunk_and_records_its_totals(mock: respx.MockRouter) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    events = [chunk("Hel"), chunk("lo"), chunk(None, "stop"),
              {"id": "chatcmpl-1", "model": "gpt-4.1", "choices": [], "usage": usage}]
    route = mock.post(URL).respond(200, content=sse(*events),
                                   headers={"content-type": "text/event-stream"})
    stream = await client_for(mock).open_stream("/chat/completions", b'{"stream":true}', 5)
    await stream.start()
    pairs = [(raw, c) async for raw, c in stream]
    assert [c for _, c in pairs] == events
    assert [raw for raw, _ in pairs] == [b"data: " + orjson.dumps(e) for e in events]
    assert (stream.finish_reason, stream.usage, stream.model, stream.done) == (
        "stop", usage, "gpt-4.1", True)
    assert route.calls.last.request.content == b'{"stream":true}'
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"


async def test_events_split_across_network_chunks_are_reassembled(mock: respx.MockRouter) -> None:
    body = sse(chunk("a"), chunk("b", "stop"))
    cut = [0, 3, 17, 40, 41, len(body) - 2, len(body)]
    mock.post(URL).mock(side_effect=lambda request: httpx.Response(
        200, content=pieces(*(body[a:b] for a, b in itertools.pairwise(cut)))))
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    assert [c["choices"][0]["delta"] for c in await drain(stream)] == [  # type: ignore[index]
        {"content": "a"}, {"content": "b"}]
    assert (stream.finish_reason, stream.done) == ("stop", True)


async def test_a_stream_with_a_finish_reason_but_no_done_marker_is_complete(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(200, content=sse(chunk("a"), chunk(None, "length"), done=False))
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    assert len(await drain(stream)) == 2
    assert (stream.finish_reason, stream.done) == ("length", False)


async def test_a_stream_with_neither_finish_reason_nor_done_is_truncated(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(200, content=sse(chunk("a"), chunk("b"), done=False))
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    await stream.start()
    seen: list[object] = []
    with pytest.raises(UpstreamFailure) as caught:
        async for _, c in stream:
            seen.append(c)
    assert seen == [chunk("a"), chunk("b")]
    assert (caught.value.kind, caught.value.message) == (
        "truncated", "the upstream stream ended before its final chunk")


async def test_an_empty_stream_fails_at_start(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=b"")
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    failure = await failure_of(stream.start())
    assert (failure.kind, failure.message) == (
        "truncated", "the upstream stream ended before its final chunk")


async def test_a_stream_cut_inside_an_event_is_truncated(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=sse(chunk("a"), done=False) + b'data: {"id": "chat')
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    failure = await failure_of(drain(stream))
    assert (failure.kind, failure.message) == (
        "truncated", "the upstream stream ended inside an event")


async def test_an_error_event_in_a_stream_raises(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=sse(
        chunk("a"), {"error": {"message": f"overloaded for {KEY}", "type": "server_error"}}))
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    await stream.start()
    seen: list[object] = []
    with pytest.raises(UpstreamFailure) as caught:
        async for _, c in stream:
            seen.append(c)
    assert seen == [chunk("a")]
    assert (caught.value.kind, caught.value.message) == (
        "protocol", "upstream stream error: overloaded for [redacted]")


async def test_an_error_event_as_the_first_event_fails_at_start(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=sse({"error": "quota exhausted"}))
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    failure = await failure_of(stream.start())
    assert (failure.kind, failure.message) == ("protocol", "upstream stream error: quota exhausted")


async def test_a_non_json_event_is_a_protocol_failure(mock: respx.MockRouter) -> None:
    mock.post(URL).respond(200, content=b"data: {not json\n\n")
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    failure = await failure_of(stream.start())
    assert (failure.kind, failure.message) == (
        "protocol", "the upstream sent a malformed stream event")


async def test_a_json_event_that_is_not_an_object_is_a_protocol_failure(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(200, content=b"data: [1, 2]\n\n")
    stream = await client_for(mock).open_stream("/chat/completions", b"{}", 5)
    failure = await failure_of(stream.start())
    assert (failure.kind, failure.message) == (
        "protocol", "the upstream sent a stream event that is not an object")


async def test_a_stalled_stream_is_a_timeout(mock: respx.MockRouter) -> None:
    mock.post(URL).mock(side_effect=lambda request: httpx.Response(
        200, content=pieces(sse(chunk("a"), done=False), sse(chunk("b", "stop")), pause=0.5)))
    stream = await client_for(mock, GATEWAY_STREAM_IDLE_TIMEOUT=0.05).open_stream(
        "/chat/completions", b"{}", 5)
    failure = await failure_of(stream.start())
    assert (failure.kind, failure.message) == (
        "timeout", "the upstream stream stalled for more than 0.05 s")


async def test_a_4xx_on_a_stream_request_raises_the_status_failure(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(400, json={"error": {
        "message": "stream_options needs stream", "type": "invalid_request_error",
        "code": "bad_stream"}})
    failure = await failure_of(client_for(mock).open_stream("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.status, failure.retryable, failure.message,
            failure.error_type, failure.error_code) == (
        "status", 400, False, "stream_options needs stream", "invalid_request_error",
        "bad_stream")


async def test_a_503_on_a_stream_request_is_retryable_with_retry_after(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).respond(503, headers={"Retry-After": "4"}, json={"error": {"message": "busy"}})
    failure = await failure_of(client_for(mock).open_stream("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.status, failure.retryable, failure.retry_after,
            failure.message) == ("status", 503, True, 4.0, "busy")


async def test_a_connection_error_on_a_stream_request_is_a_connect_failure(
    mock: respx.MockRouter,
) -> None:
    mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    failure = await failure_of(client_for(mock).open_stream("/chat/completions", b"{}", 5))
    assert (failure.kind, failure.message) == ("connect", "could not connect to the upstream")


async def test_with_tracing_on_the_current_span_travels_as_traceparent(
    mock: respx.MockRouter
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    route = mock.post(URL).mock(return_value=httpx.Response(200, json={"ok": True}))
    traced = UpstreamClient(make_settings(), transport=httpx.MockTransport(mock.async_handler),
                            propagate_trace=True)
    with TracerProvider().get_tracer("test").start_as_current_span("attempt") as span:
        await traced.post_json("/chat/completions", b"{}", 5)
    context = span.get_span_context()
    assert route.calls.last.request.headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}")
    await client_for(mock).post_json("/chat/completions", b"{}", 5)
    assert "traceparent" not in route.calls.last.request.headers


# --- providers from the catalog -------------------------------------------------------------

def provider_catalog(tmp_path: Path) -> Catalog:
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    raw["providers"] = {"bento": {
        "base_url": "http://bento.test/v1", "api_key_env": "BENTO_TOKEN", "timeout_s": 0.05,
        "headers": {"x-tenant": "team-a"}, "max_connections": 4}}
    raw["models"]["gpt-4.1"]["deployments"] = [{"provider": "bento"}]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_catalog(path, {"BENTO_TOKEN": "bento-secret-9"}.get)


async def test_a_provider_gets_its_base_url_key_and_headers(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    route = mock.post("http://bento.test/v1/chat/completions").respond(200, json=completion())
    upstreams = Upstreams.build(make_settings(), provider_catalog(tmp_path),
                                httpx.MockTransport(mock.async_handler),
                                environ={"BENTO_TOKEN": "bento-secret-9"}.get)
    await upstreams["bento"].post_json("/chat/completions", b"{}", 5)
    sent = route.calls.last.request.headers
    assert (sent["authorization"], sent["x-tenant"]) == ("Bearer bento-secret-9", "team-a")
    assert upstreams["bento"].provider.wire.max_connections == 4
    assert upstreams["holysheep"].provider.wire.headers["authorization"] == f"Bearer {KEY}"


async def test_a_providers_own_read_timeout_applies(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    route = mock.post(url__regex=r"http://(bento|up)\.test/v1/chat/completions").respond(
        200, json=completion())
    upstreams = Upstreams.build(make_settings(), provider_catalog(tmp_path),
                                httpx.MockTransport(mock.async_handler),
                                environ={"BENTO_TOKEN": "bento-secret-9"}.get)
    await upstreams["bento"].post_json("/chat/completions", b"{}", 5)
    assert route.calls.last.request.extensions["timeout"]["read"] == 0.05
    await upstreams["holysheep"].post_json("/chat/completions", b"{}", 5)
    assert route.calls.last.request.extensions["timeout"]["read"] == 5  # GATEWAY_UPSTREAM_TIMEOUT


@pytest.mark.parametrize(("client", "kind"), [("pyreqwest", ReqwestTransport),
                                              ("aiohttp", AiohttpTransport),
                                              ("httpx", HttpxTransport)])
async def test_each_provider_gets_its_own_transport_of_the_configured_kind(
    tmp_path: Path, client: str, kind: type,
) -> None:
    upstreams = Upstreams.build(make_settings(GATEWAY_HTTP_CLIENT=client),
                                provider_catalog(tmp_path),
                                environ={"BENTO_TOKEN": "bento-secret-9"}.get)
    try:
        transports = {c.provider.name: c._transport for c in upstreams}
        assert set(transports) == {"holysheep", "bento"}
        assert all(isinstance(t, kind) for t in transports.values())
        assert transports["holysheep"] is not transports["bento"]
    finally:
        await upstreams.aclose()


@pytest.mark.parametrize(("base", "own", "expected"), [
    ("https://api.example.com/v1", None, "http://secure-proxy:3128"),
    ("http://api.example.com/v1", None, "http://plain-proxy:3128"),
    ("https://llm.internal/v1", None, None),  # NO_PROXY names the domain
    ("https://10.0.0.1:8443/v1", None, None),  # and this address, whatever the port
    ("https://llm.internal/v1", "http://own:8080", "http://own:8080"),  # a provider's own wins
])
def test_the_proxy_follows_https_proxy_http_proxy_and_no_proxy(
    base: str, own: str | None, expected: str | None,
) -> None:
    settings = make_settings(HTTPS_PROXY="http://secure-proxy:3128",
                             HTTP_PROXY="http://plain-proxy:3128",
                             NO_PROXY=".internal,10.0.0.1")
    assert choose_proxy(base, own, settings) == expected


async def test_a_catalog_provider_carries_its_proxy_ca_bundle_and_http2(tmp_path: Path) -> None:
    import trustme

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    raw["providers"] = {"bento": {"base_url": "https://bento.test/v1", "proxy": "http://own:1",
                                  "ca_bundle": str(ca), "http2": True}}
    raw["models"]["gpt-4.1"]["deployments"] = [{"provider": "bento"}]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    upstreams = Upstreams.build(make_settings(HTTPS_PROXY="http://global:2",
                                              HTTP_PROXY="http://global:2"), load_catalog(path))
    try:
        bento, holysheep = upstreams["bento"].provider.wire, upstreams["holysheep"].provider.wire
        assert (bento.proxy, bento.ca_bundle, bento.http2) == ("http://own:1", str(ca), True)
        assert (holysheep.proxy, holysheep.ca_bundle, holysheep.http2) == (
            "http://global:2", None, False)
    finally:
        await upstreams.aclose()
