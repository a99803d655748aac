"""Which configurations share counts: several workers with limits and no Redis are refused,
budgets' spend is seeded from the SQLite ledger, a Redis that does not persist is named."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.tenants.keys import KeyLimits, KeyRecord, hash_secret
from gateway.tenants.ledger import SqliteLedger
from gateway.tenants.limits import PREFIX, MemoryLimiter, budget_periods, ledger_day
from gateway.tenants.sharing import UnsharedLimits, persistence_warning, refuse_unshared_limits
from gateway.tenants.spend import seed_spend, spend_key
from gateway.tenants.store import SqliteKeys
from loadtest.harness import DurableRedis, RedisServer


def settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def key(**limits: object) -> KeyRecord:
    return KeyRecord(id="k1", name="k1", key_sha256=hash_secret("s"),
                     limits=KeyLimits.model_validate(limits))


@pytest.mark.parametrize("env", [
    {"GATEWAY_WORKERS": "1", "GATEWAY_ADMIN_KEY": "a"},
    {"GATEWAY_WORKERS": "2", "REDIS_URL": "redis://127.0.0.1:1/0", "GATEWAY_ADMIN_KEY": "a"},
    {"GATEWAY_WORKERS": "2", "GATEWAY_API_KEYS": "plain"},
])
def test_one_worker_or_redis_or_no_limits_start(env: dict[str, str]) -> None:
    refuse_unshared_limits(settings(**env), [key()])


def test_a_limited_key_file_key_with_two_workers_and_no_redis_is_refused_by_name() -> None:
    with pytest.raises(UnsharedLimits, match="key 'k1' in GATEWAY_KEYS_FILE has limits"):
        refuse_unshared_limits(settings(GATEWAY_WORKERS="2"), [key(rpm=10)])


def test_an_admin_key_with_cpu_count_workers_and_no_redis_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    with pytest.raises(UnsharedLimits, match=r"GATEWAY_WORKERS=cpu_count \(4 worker processes\)"):
        refuse_unshared_limits(settings(GATEWAY_WORKERS="cpu_count", GATEWAY_ADMIN_KEY="a"), [])


def test_spend_is_seeded_from_the_ledger_for_today_and_this_month(tmp_path: Path) -> None:
    async def run() -> MemoryLimiter:
        ledger = SqliteLedger(tmp_path / "t.db")
        today = ledger_day()
        first = date.fromisoformat(today).replace(day=1).isoformat()
        zeros = [0, 0, 0]
        ledger.add((today, "k1", "t1", "m1", "alice"), [1, 0, 1, 1, 700, 0, *zeros])
        ledger.add((today, "k1", "t1", "m2", ""), [1, 0, 1, 1, 300, 0, *zeros])
        ledger.add((today, "k2", "t1", "m1", ""), [1, 0, 1, 1, 50, 0, *zeros])
        if first != today:
            ledger.add((first, "k1", "t1", "m1", ""), [1, 0, 1, 1, 5000, 0, *zeros])
        ledger.add(("1999-01-01", "k1", "t1", "m1", ""), [1, 0, 1, 1, 99, 0, *zeros])
        await ledger.buffer.flush()
        limiter = MemoryLimiter()
        seed_spend(limiter, ledger)
        await ledger.aclose()
        return limiter

    limiter = asyncio.run(run())
    day, _, month, _ = budget_periods()
    counters = limiter._counters  # noqa: SLF001 - the in-memory counters are what admission reads
    assert counters[spend_key("k1", f"d:{day}")] == 1000
    month_spent = counters[spend_key("k1", f"m:{month}")]
    assert month_spent in (1000, 6000) and (month_spent == 1000) == day.endswith("01")
    assert counters[f"{PREFIX}team:t1:spend:d:{day}"] == 1050  # the team's keys together
    assert counters[f"{PREFIX}spend:k1:u:alice:d:{day}"] == 700  # one end user of k1


def test_a_redis_without_aof_or_snapshots_is_named_and_one_with_aof_is_not(
        redis_server: RedisServer, tmp_path: Path) -> None:
    async def warning(url: str) -> str | None:
        redis = Redis.from_url(url)
        try:
            return await persistence_warning(redis)
        finally:
            await redis.aclose()

    durable_server = DurableRedis(tmp_path, tmp_path / "aof")
    try:
        durable = asyncio.run(warning(durable_server.url))
    finally:
        durable_server.stop()
    bare = asyncio.run(warning(redis_server.url))
    assert bare is not None and "appendonly yes" in bare and durable is None


def test_a_redis_that_cannot_be_asked_gives_no_warning() -> None:
    async def run() -> str | None:
        redis = Redis(port=1, socket_connect_timeout=0.2)
        try:
            return await persistence_warning(redis)
        finally:
            await redis.aclose()

    assert asyncio.run(run()) is None


def test_a_limited_admin_made_key_already_stored_is_refused_without_an_admin_key(
        tmp_path: Path) -> None:
    db = tmp_path / "tenants.db"
    store = SqliteKeys(db)
    asyncio.run(store.save(key(budget_daily_usd="1")))
    asyncio.run(store.aclose())
    with pytest.raises(UnsharedLimits, match="admin-made key 'k1' in .*tenants.db has limits"):
        refuse_unshared_limits(settings(GATEWAY_WORKERS="2", GATEWAY_KEYS_DB=str(db)), [])
    refuse_unshared_limits(settings(GATEWAY_WORKERS="2", GATEWAY_KEYS_DB=str(tmp_path / "no.db")),
                           [])
    assert not (tmp_path / "no.db").exists()  # a check never makes the file
