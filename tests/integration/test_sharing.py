"""Limits and budgets without Redis, and Redis's persistence, through real ``bentoml serve``:
several workers with limits and no Redis are refused at start-up; one worker keeps a key's
spent budget across a restart (from the SQLite ledger); a Redis that does not persist gets a
warning at start-up, one with AOF does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.harness import CLIENT_KEY, DurableRedis, FakeProvider, GatewayServer, RedisServer

ADMIN = "gw-admin-SECRET-sharing"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
NOT_PERSISTENT = "does not persist"


@pytest.fixture(scope="module")
def fake(log_dir: Path) -> Iterator[FakeProvider]:
    provider = FakeProvider(log_dir)
    yield provider
    provider.stop()


def chat(gateway: GatewayServer, key: str, content: str) -> httpx.Response:
    return httpx.post(f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gpt-4.1", "messages": [{"role": "user", "content": content}]})


def create_key(gateway: GatewayServer, **spec: Any) -> dict[str, Any]:
    response = httpx.post(f"{gateway.url}/admin/keys", json={"name": "sharing", **spec},
                          headers=ADMIN_AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_two_workers_without_redis_and_an_admin_key_are_refused_at_start_up(
        fake: FakeProvider, log_dir: Path) -> None:
    with pytest.raises(RuntimeError) as failed:
        GatewayServer(log_dir, fake.base_url, env={"GATEWAY_WORKERS": "2",
                                                   "GATEWAY_ADMIN_KEY": ADMIN})
    message = str(failed.value)
    assert "UnsharedLimits" in message
    assert "GATEWAY_WORKERS=2 (2 worker processes) without REDIS_URL" in message
    assert "Set REDIS_URL" in message and ADMIN not in message


def test_two_workers_without_redis_and_no_limits_start(fake: FakeProvider, log_dir: Path) -> None:
    gateway = GatewayServer(log_dir, fake.base_url, env={"GATEWAY_WORKERS": "2"})
    try:
        assert chat(gateway, CLIENT_KEY, "hello").status_code == 200
    finally:
        gateway.stop()


def test_a_spent_daily_budget_stays_spent_across_a_restart_without_redis(
        fake: FakeProvider, log_dir: Path, tmp_path: Path) -> None:
    env = {"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_KEYS_DB": str(tmp_path / "tenants.db")}
    first = GatewayServer(log_dir, fake.base_url, env=env)
    try:
        key = create_key(first, budget_daily_usd="0.003")["key"]
        for i in range(50):
            answer = chat(first, key, f"spend {i} " + "y" * 400)
            if answer.status_code != 200:
                break
        else:
            pytest.fail("the budget never stopped the key")
        assert answer.json()["error"]["code"] == "insufficient_quota"
    finally:
        first.stop()
    second = GatewayServer(log_dir, fake.base_url, env=env)
    try:
        again = chat(second, key, "after the restart")
        assert again.status_code == 429, again.text
        error = again.json()["error"]
        assert error["code"] == "insufficient_quota"
        assert "daily budget of $0.003000" in error["message"]
    finally:
        second.stop()


def test_a_redis_that_does_not_persist_gets_a_warning_at_start_up(
        fake: FakeProvider, log_dir: Path, tmp_path: Path) -> None:
    bare = RedisServer(log_dir)
    durable = DurableRedis(log_dir, tmp_path / "aof")
    try:
        for redis, warned in ((bare, True), (durable, False)):
            gateway = GatewayServer(log_dir, fake.base_url,
                                    env={"REDIS_URL": redis.url, "GATEWAY_ADMIN_KEY": ADMIN})
            try:
                assert (NOT_PERSISTENT in gateway.process.log()) is warned
            finally:
                gateway.stop()
    finally:
        bare.stop()
        durable.stop()
