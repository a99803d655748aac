"""The other transports (GATEWAY_HTTP_CLIENT=httpx, pyreqwest) behave like the default aiohttp
one, which every other integration test runs on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.settings import Settings
from gateway.upstream.transports import make_transport
from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY, FakeProvider, GatewayServer

MESSAGES = [{"role": "user", "content": "over another transport"}]


@pytest.fixture(scope="module", params=["httpx", "pyreqwest"])
def other_gateway(fake: FakeProvider, log_dir: Path,
                  request: pytest.FixtureRequest) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_HTTP_CLIENT": request.param, "GATEWAY_UPSTREAM_TIMEOUT": "0.5"})
    yield server
    server.stop()


def test_completions_and_streams_work(other_gateway: GatewayServer) -> None:
    sdk = openai.OpenAI(base_url=other_gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    whole = sdk.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    streamed = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
        model="gpt-4.1", messages=MESSAGES, stream=True) if c.choices)
    assert streamed == whole.choices[0].message.content


def test_a_drop_mid_stream_is_an_error_event(
    other_gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="gpt-4.1", kind="drop", after_chunks=2)
    with httpx.stream("POST", f"{other_gateway.v1}/chat/completions",
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "gpt-4.1", "messages": MESSAGES, "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_truncated"


def test_a_hang_falls_back(other_gateway: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="deepseek-v3.2", kind="hang")
    response = httpx.post(f"{other_gateway.v1}/chat/completions",
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10,
                          json={"model": "deepseek-v3.2", "messages": MESSAGES})
    assert response.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fake.calls("deepseek-v3.2") == 3


@pytest.mark.parametrize("client", ["pyreqwest", "aiohttp", "httpx"])
async def test_upstream_cookies_are_not_kept_between_requests(fake: FakeProvider,
                                                              client: str) -> None:
    # By name, not IP: cookie jars ignore cookies from bare IP addresses, real upstreams have names.
    base = fake.base_url.replace("127.0.0.1", "localhost")
    settings = Settings(HOLYSHEEP_BASE_URL=base, HOLYSHEEP_API_KEY=UPSTREAM_KEY,
                        GATEWAY_HTTP_CLIENT=client)  # type: ignore[call-arg]
    transport = make_transport(settings)
    fake.fault(model="gpt-4.1", kind="status", status=422, times=1)  # its answer sets a cookie
    body = json.dumps({"model": "gpt-4.1", "messages": MESSAGES}).encode()
    try:
        assert (await transport.post("/chat/completions", body, 5))[0] == 422
        assert (await transport.post("/chat/completions", body, 5))[0] == 200
    finally:
        await transport.aclose()
    assert fake.stats()["cookies_received"] == 0  # one client's upstream session is not another's


def arrivals(gateway: GatewayServer, fake: FakeProvider) -> list[float]:
    """Seconds from the request to each event, the upstream sending one every 300 ms."""
    fake.configure(chunk_delay_ms=300)  # reset (so undone) before the next test
    started = time.monotonic()
    seen = []
    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=10,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "gpt-4.1", "messages": MESSAGES, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(time.monotonic() - started)
    return seen


def test_stream_chunks_reach_the_client_as_the_upstream_sends_them(
    gateway: GatewayServer, other_gateway: GatewayServer, fake: FakeProvider,
) -> None:
    for server in (gateway, other_gateway):
        seen = arrivals(server, fake)
        assert seen[0] < 0.25 and seen[-1] > 1.0  # the first at once, not with the last


def test_a_client_disconnect_cancels_the_upstream_call(
    other_gateway: GatewayServer, fake: FakeProvider, request: pytest.FixtureRequest,
) -> None:
    if "pyreqwest" in request.node.callspec.id:
        request.node.add_marker(pytest.mark.xfail(
            strict=True, reason="pyreqwest 0.15 does not abort a call whose task is cancelled: "
                                "why it is not the default (docs/connections.md)"))
    fake.fault(model="deepseek-v3.2", kind="hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{other_gateway.v1}/chat/completions", timeout=0.2,  # before its 0.5 s
                   headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "deepseek-v3.2", "messages": MESSAGES})
    deadline = time.monotonic() + 2.0
    while (stats := fake.stats())["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats["cancelled"] >= 1 and stats["in_flight"] == 0
    assert fake.calls("deepseek-v3.2") == 1
