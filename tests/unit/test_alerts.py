"""Budget alerts: a webhook receiver started by the test (a real HTTP server on loopback) gets
one call per threshold crossing, retried when it first answers 500, and never sees a key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.tenants import Tenants
from gateway.tenants.keys import KeyLimits
from loadtest.harness import RedisServer

from .inprocess import in_process

ADMIN = "admin-alerts"


@dataclass
class Receiver:
    """Records every call; answers 500 to the first ``fail_first`` of them."""

    fail_first: int = 1
    calls: list[tuple[str, dict[str, str], dict[str, Any], int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        status = 500 if len(self.calls) < self.fail_first else 200
        self.calls.append((request.path, {str(k): v for k, v in request.headers.items()}, body,
                           status))
        return web.Response(status=status, text="ok" if status == 200 else "boom")

    def taken(self, path: str) -> list[dict[str, Any]]:
        return [body for p, _, body, status in self.calls if p == path and status == 200]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}"
    yield found
    await runner.cleanup()


async def eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_call_per_crossing_retried_after_a_500_and_never_a_key(
        tmp_path: Path, receiver: Receiver) -> None:
    hooks = f"{receiver.url}/json,slack:{receiver.url}/slack"
    async with in_process(GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_KEYS_DB=str(tmp_path / "t.db"),
                          GATEWAY_CACHE="false", GATEWAY_ACCESS_LOG="false",
                          GATEWAY_ALERT_WEBHOOKS=hooks, GATEWAY_ALERT_RETRY_BASE="0.01") as gw:
        made = await gw.http.post("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"},
                                  json={"name": "checkout", "team": "shop",
                                        "budget_daily_usd": "0.003"})
        record = made.json()
        secret = record["key"]
        key = {"authorization": f"Bearer {secret}"}
        statuses = []
        for _ in range(8):  # $0.000864 each: soft (80%) after 3, refused after 4
            answer = await gw.http.post("/v1/chat/completions", headers=key, json={
                "model": "gpt-4.1",
                "messages": [{"role": "user", "content": "How are my orders?"}]})
            statuses.append(answer.status_code)
        assert statuses == [200] * 4 + [429] * 4
        await gw.gateway.tenants.alerts.drain()

        json_calls = [c for c in receiver.calls if c[0] == "/json"]
        assert [c[3] for c in json_calls] == [500, 200, 200]  # the first retried, then one more
        soft, refused = receiver.taken("/json")
        assert json_calls[0][2] == soft  # the retry carried the same alert
        assert soft["type"] == "budget.soft_threshold" and refused["type"] == "budget.refused"
        for alert in (soft, refused):
            assert alert["scope"] == "key" and alert["team"] == "shop"
            assert alert["key"] == {"id": record["id"], "name": "checkout"}
            assert alert["budget"] == {"period": "daily", "limit_usd": "0.003000"}
            assert alert["resets_at"].endswith("T00:00:00Z")
        assert soft["spent_usd"] == "0.002592"  # three answers' cost
        assert refused["spent_usd"] == "0.003456"
        slack = receiver.taken("/slack")
        assert len(slack) == 2 and all(set(b) == {"text"} for b in slack)
        assert "checkout" in slack[0]["text"] and "$0.002592 of $0.003000" in slack[0]["text"]
        wire = orjson.dumps([c[1:3] for c in receiver.calls]).decode()
        assert secret not in wire and secret[:12] not in wire
        stored = await gw.gateway.tenants.store.get(record["id"])
        assert stored is not None and stored.key_sha256 not in wire


def build(tmp_path: Path, redis_url: str, hooks: str) -> Tenants:
    from gateway.observability.metrics import Metrics

    settings = Settings(GATEWAY_ADMIN_KEY=ADMIN, REDIS_URL=redis_url,
                        GATEWAY_KEYS_DB=tmp_path / "tenants.db", GATEWAY_ACCESS_LOG=False,
                        GATEWAY_ALERT_WEBHOOKS=hooks, GATEWAY_ALERT_RETRY_BASE=0.01)
    return Tenants.build(settings, Metrics(CollectorRegistry()))


async def test_two_replicas_send_a_crossing_once(tmp_path: Path, receiver: Receiver,
                                                 redis_server: RedisServer) -> None:
    receiver.fail_first = 0
    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
    a = build(tmp_path, redis_server.url, f"{receiver.url}/hook")
    b = build(tmp_path, redis_server.url, f"{receiver.url}/hook")
    try:
        record, secret = await a.admin.create_key("k", None, KeyLimits(
            budget_daily_usd=Decimal("0.000010")), None, {})
        headers = {"authorization": f"Bearer {secret}"}
        first = await a.admit(await a.authenticate(headers), "gpt-4.1", 1)
        a.settle(first, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.000009"),
                 saved=Decimal(0), error=False)
        await a.limiter.returns.flush()  # type: ignore[union-attr]
        for tenants in (a, b, a, b):
            await tenants.admit(await tenants.authenticate(headers), "gpt-4.1", 1)
        await a.alerts.drain()
        await b.alerts.drain()
        await eventually(lambda: len(receiver.calls) >= 1)
        await asyncio.sleep(0.05)
        assert [body["type"] for _, _, body, _ in receiver.calls] == ["budget.soft_threshold"]
        assert receiver.calls[0][2]["key"]["id"] == record.id
    finally:
        await a.aclose()
        await b.aclose()


def test_a_webhook_that_is_not_an_http_url_stops_start_up() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="http\\(s\\) URL"):
        Settings(GATEWAY_ALERT_WEBHOOKS="https://ok.example/hook,ftp://files.example/x")
    assert Settings(GATEWAY_ALERT_WEBHOOKS="slack:https://hooks.example/T1").alert_webhooks_csv
