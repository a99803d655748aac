"""The exact cache through real ``bentoml serve``: in process, and shared through a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.catalog import load_catalog
from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer, RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_KEY = "gw-client-key-2"
CATALOG = load_catalog()


def ask(
    base: str,
    content: str = "what is a cache?",
    *,
    key: str = CLIENT_KEY,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> httpx.Response:
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
        **extra,
    }
    return httpx.post(
        f"{base}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def stream_text(base: str, content: str) -> tuple[httpx.Response, list[str]]:
    body = {
        "model": "gpt-4.1",
        "stream": True,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    }
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=30
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, events


def joined(events: list[str]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, events[:-1])
        if c["choices"]
    )


@pytest.fixture(scope="module")
def cached(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(
        log_dir,
        fake.base_url,
        env={
            "GATEWAY_CACHE": "true",
            "GATEWAY_API_KEYS": f"{CLIENT_KEY},{OTHER_KEY}",
            "GATEWAY_MAX_CONCURRENCY": "200",
        },
    )
    yield server
    server.stop()


def test_an_identical_request_is_a_free_hit_with_the_same_bytes(
    cached: GatewayServer, fake: FakeProvider
) -> None:
    first = ask(cached.url, "hit me")
    second = ask(cached.url, "hit me")
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["x-gateway-cost-usd"] == "0.000000"
    assert second.headers["x-gateway-saved-usd"] == first.headers["x-gateway-cost-usd"]
    assert fake.calls("gpt-4.1") == 1


def test_call_reports_the_hit_and_what_it_saved(cached: GatewayServer, fake: FakeProvider) -> None:
    body = {"model": "claude-sonnet-4.5", "messages": [{"role": "user", "content": "seed hit"}]}
    first = httpx.post(f"{cached.url}/call", json=body, headers=AUTH).json()
    second = httpx.post(f"{cached.url}/call", json=body, headers=AUTH).json()
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert second["content"] == first["content"]
    assert second["cost_usd"] == 0
    assert second["saved_usd"] == first["cost_usd"] > 0
    assert fake.calls("claude-sonnet-4.5") == 1


def test_tenants_parameters_and_system_prompts_do_not_share_entries(
    cached: GatewayServer, fake: FakeProvider
) -> None:
    ask(cached.url, "scoped")
    assert ask(cached.url, "scoped", key=OTHER_KEY).headers["x-gateway-cache"] == "miss"
    assert ask(cached.url, "scoped", temperature=0.1).headers["x-gateway-cache"] == "miss"
    other_system = httpx.post(
        f"{cached.url}/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "be verbose"},
                {"role": "user", "content": "scoped"},
            ],
        },
    )
    assert other_system.headers["x-gateway-cache"] == "miss"
    assert fake.calls("gpt-4.1") == 4


def test_cache_control_no_cache_and_no_store(cached: GatewayServer, fake: FakeProvider) -> None:
    ask(cached.url, "directives")
    fresh = ask(cached.url, "directives", headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-gateway-cache"] == "miss"
    assert fake.calls("gpt-4.1") == 2
    ask(cached.url, "not kept", headers={"Cache-Control": "no-store"})
    assert ask(cached.url, "not kept").headers["x-gateway-cache"] == "miss"
    assert fake.calls("gpt-4.1") == 4


def test_errors_truncations_and_length_cut_answers_are_never_stored(
    cached: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model="gpt-4.1", kind="status", status=400, times=1)
    assert ask(cached.url, "error first").status_code == 400
    assert ask(cached.url, "error first").headers["x-gateway-cache"] == "miss"

    fake.fault(model="gpt-4.1", kind="truncate", after_chunks=2, times=1)
    _, events = stream_text(cached.url, "cut stream")
    assert "[DONE]" not in events
    response, events = stream_text(cached.url, "cut stream")
    assert response.headers["x-gateway-cache"] == "miss" and events[-1] == "[DONE]"

    ask(cached.url, "short", max_tokens=3)
    assert ask(cached.url, "short", max_tokens=3).headers["x-gateway-cache"] == "miss"


def test_a_finished_stream_is_stored_and_replayed_as_sse(
    cached: GatewayServer, fake: FakeProvider
) -> None:
    first, events = stream_text(cached.url, "stream me")
    assert first.headers["x-gateway-cache"] == "miss"
    time.sleep(0.1)  # the store is written in the background
    again, replayed = stream_text(cached.url, "stream me")
    assert again.headers["x-gateway-cache"] == "hit"
    assert replayed[-1] == "[DONE]"
    assert joined(replayed) == joined(events)
    as_json = ask(cached.url, "stream me").json()  # the same entry serves a non-stream request
    assert as_json["choices"][0]["message"]["content"] == joined(events)
    assert fake.calls("gpt-4.1") == 1


def test_identical_requests_in_flight_make_one_upstream_call(
    cached: GatewayServer, fake: FakeProvider
) -> None:
    fake.configure(latency_ms=300)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cached.url, headers=AUTH, timeout=30) as client:
            body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "stampede"}]}
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(100))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 100
    assert len({r.content for r in responses}) == 1
    assert fake.calls("gpt-4.1") == 1
    assert sorted({r.headers["x-gateway-cache"] for r in responses}) in (
        ["coalesced", "miss"],
        ["coalesced", "hit", "miss"],
    )


@pytest.fixture
def redis(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    yield server
    server.stop()


def redis_gateway(log_dir: Path, fake: FakeProvider, redis: RedisServer) -> GatewayServer:
    return GatewayServer(
        log_dir, fake.base_url, env={"GATEWAY_CACHE": "true", "REDIS_URL": redis.url}
    )


def test_two_gateways_share_entries_through_redis_and_a_restart_keeps_them(
    fake: FakeProvider, redis: RedisServer, log_dir: Path
) -> None:
    a = redis_gateway(log_dir, fake, redis)
    b = redis_gateway(log_dir, fake, redis)
    try:
        first = ask(a.url, "shared")
        time.sleep(0.1)
        second = ask(b.url, "shared")
        assert second.headers["x-gateway-cache"] == "hit"
        assert second.content == first.content
    finally:
        a.stop()
        b.stop()
    restarted = redis_gateway(log_dir, fake, redis)
    try:
        assert ask(restarted.url, "shared").headers["x-gateway-cache"] == "hit"
    finally:
        restarted.stop()
    assert fake.calls("gpt-4.1") == 1


def test_the_cache_fails_open_when_redis_dies_and_recovers_by_itself(
    fake: FakeProvider, redis: RedisServer, log_dir: Path
) -> None:
    gateway = redis_gateway(log_dir, fake, redis)
    try:
        ask(gateway.url, "before")
        redis.stop()
        started = time.monotonic()
        answers = [ask(gateway.url, f"while down {i}") for i in range(20)]
        assert [r.status_code for r in answers] == [200] * 20
        assert all(r.headers["x-gateway-cache"] == "miss" for r in answers)
        assert time.monotonic() - started < 3.0  # a dead Redis costs a miss, not a hang
        metrics = httpx.get(f"{gateway.url}/metrics").text
        errors = [
            line
            for line in metrics.splitlines()
            if line.startswith("gateway_cache_store_errors_total")
        ]
        assert errors and float(errors[0].split()[-1]) >= 1
        assert gateway.process.log().count("cache: Redis unavailable") == 1  # rate-limited

        revived = RedisServer(log_dir, port=redis.port)
        try:
            time.sleep(1.2)  # the store retries after a second
            ask(gateway.url, "after")
            time.sleep(0.1)
            assert ask(gateway.url, "after").headers["x-gateway-cache"] == "hit"
        finally:
            revived.stop()
    finally:
        gateway.stop()
