"""Spend per end user: named by OpenAI's ``user``, Anthropic's ``metadata.user_id`` or the
header the operator names; summed exactly in the ledger and the usage APIs; held to the key's
per-end-user budget and RPM one end user at a time."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.tenants.ledger import OTHER_END_USERS, GroupBy, RedisLedger, SqliteLedger
from loadtest.harness import RedisServer

from .inprocess import in_process

ADMIN = "admin-end-users"
USERS = [f"customer-{i:02d}" for i in range(50)]


def env(tmp_path: Path) -> dict[str, str]:
    return {"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_KEYS_DB": str(tmp_path / "tenants.db"),
            "GATEWAY_CACHE": "false", "GATEWAY_END_USER_HEADER": "x-end-user",
            "GATEWAY_ACCESS_LOG": "false"}


async def new_key(http: httpx.AsyncClient, **limits: Any) -> tuple[str, dict[str, str]]:
    made = await http.post("/admin/keys", json={"name": "product", **limits},
                           headers={"authorization": f"Bearer {ADMIN}"})
    assert made.status_code == 201, made.text
    return made.json()["id"], {"authorization": f"Bearer {made.json()['key']}"}


async def usage(http: httpx.AsyncClient, headers: dict[str, str], path: str,
                group_by: str) -> list[dict[str, Any]]:
    await asyncio.sleep(0)
    answer = await http.get(path, params={"group_by": group_by}, headers=headers)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


def chat(user: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4.1",
                            "messages": [{"role": "user", "content": "How are my orders?"}]}
    if user is not None:
        body["user"] = user
    return body


async def test_a_thousand_requests_from_fifty_end_users_sum_to_the_key_to_the_micro_dollar(
        tmp_path: Path) -> None:
    async with in_process(**env(tmp_path)) as gw:
        key_id, key = await new_key(gw.http, end_user_budget_daily_usd="0.025")
        semaphore = asyncio.Semaphore(20)

        async def ask(i: int) -> int:
            user = USERS[i % len(USERS)]
            async with semaphore:
                if i % 10 == 1:  # Anthropic's metadata.user_id, through the Messages bridge
                    answer = await gw.http.post("/v1/messages", headers=key, json={
                        "model": "gpt-4.1", "max_tokens": 200, "metadata": {"user_id": user},
                        "messages": [{"role": "user", "content": "How are my orders?"}]})
                elif i % 10 == 2:  # the operator's header, over a body without ``user``
                    answer = await gw.http.post("/v1/chat/completions", json=chat(None),
                                                headers={**key, "x-end-user": user})
                else:
                    answer = await gw.http.post("/v1/chat/completions", json=chat(user),
                                                headers=key)
            return answer.status_code

        statuses = await asyncio.gather(*(ask(i) for i in range(1000)))
        assert set(statuses) == {200}

        # One end user spends to the per-end-user budget; only that end user is refused.
        spent_by_heavy = 0
        while True:
            answer = await gw.http.post("/v1/chat/completions", json=chat("heavy"), headers=key)
            if answer.status_code != 200:
                break
            spent_by_heavy += 1
            assert spent_by_heavy < 100
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert error["code"] == "insufficient_quota"
        assert "end user 'heavy'" in error["message"] and "$0.025" in error["message"]
        assert spent_by_heavy > 20  # it got the whole budget, not less
        for other in (USERS[0], USERS[49]):
            assert (await gw.http.post("/v1/chat/completions", json=chat(other),
                                       headers=key)).status_code == 200
        assert (await gw.http.post("/v1/chat/completions", json=chat(None),
                                   headers=key)).status_code == 200

        await gw.gateway.tenants.ledger.buffer.flush()
        admin = {"authorization": f"Bearer {ADMIN}"}
        by_user = await usage(gw.http, admin, "/admin/usage", "key,user")
        by_key = await usage(gw.http, admin, "/admin/usage", "key")
        total = next(r for r in by_key if r["key"] == key_id)
        mine = [r for r in by_user if r["key"] == key_id]
        assert {r["user"] for r in mine} == {*USERS, "heavy", ""}
        assert sum(Decimal(r["cost_usd"]) for r in mine) == Decimal(total["cost_usd"]) > 0
        assert sum(r["requests"] for r in mine) == total["requests"] == 1000 + spent_by_heavy + 3
        for row in mine:
            if row["user"] in USERS:
                expected = 20 + (row["user"] in (USERS[0], USERS[49]))
                assert row["requests"] == expected, row

        # The key sees its own end users, and only its own.
        own = await usage(gw.http, key, "/v1/usage", "user")
        assert {r["user"]: r["cost_usd"] for r in own} == {r["user"]: r["cost_usd"] for r in mine}
        one = await gw.http.get("/v1/usage", params={"group_by": "user", "user": "heavy"},
                                headers=key)
        assert [r["requests"] for r in one.json()["data"]] == [spent_by_heavy]


async def test_per_end_user_rpm_holds_each_end_user_apart(tmp_path: Path) -> None:
    async with in_process(**env(tmp_path)) as gw:
        _, key = await new_key(gw.http, end_user_rpm=2)
        for _ in range(2):
            assert (await gw.http.post("/v1/chat/completions", json=chat("a"),
                                       headers=key)).status_code == 200
        refused = await gw.http.post("/v1/chat/completions", json=chat("a"), headers=key)
        assert refused.status_code == 429
        assert "end user 'a'" in refused.json()["error"]["message"]
        assert (await gw.http.post("/v1/chat/completions", json=chat("b"),
                                   headers=key)).status_code == 200


async def check_bound(ledger: RedisLedger | SqliteLedger) -> None:
    from datetime import date

    from gateway.tenants.ledger import UsageQuery

    day = "2026-12-01"
    for i in range(8):  # a new ``user`` on every request
        ledger.add((day, "k1", "", "m", f"u{i}"), [1, 0, 1, 1, 7, 0, 0, 0, 0])
        await ledger.buffer.flush()
    ledger.add((day, "k1", "", "m", "u0"), [1, 0, 1, 1, 7, 0, 0, 0, 0])  # a known one still counts
    ledger.add((day, "k2", "", "m", "u7"), [1, 0, 1, 1, 7, 0, 0, 0, 0])  # another key: its own
    await ledger.buffer.flush()
    query = UsageQuery(date.fromisoformat(day), date.fromisoformat(day),
                       group_by=(GroupBy.KEY, GroupBy.USER))
    rows = {(r["key"], r["user"]): r for r in await ledger.query(query)}
    assert set(rows) == {("k1", "u0"), ("k1", "u1"), ("k1", "u2"), ("k1", OTHER_END_USERS),
                         ("k2", "u7")}
    assert rows[("k1", "u0")]["requests"] == 2
    assert rows[("k1", OTHER_END_USERS)]["requests"] == 5
    assert sum(Decimal(r["cost_usd"]) for (k, _), r in rows.items() if k == "k1") == \
        Decimal("0.000063")


async def test_the_ledger_keeps_at_most_its_bound_of_end_users_a_key_in_sqlite(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "bound.db", max_end_users=3)
    await check_bound(ledger)
    await ledger.aclose()


@pytest.mark.usefixtures("redis_server")
async def test_the_ledger_keeps_at_most_its_bound_of_end_users_a_key_in_redis(
        redis_server: RedisServer) -> None:
    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
        ledger = RedisLedger(redis, max_end_users=3)
        await check_bound(ledger)
        await ledger.aclose()
