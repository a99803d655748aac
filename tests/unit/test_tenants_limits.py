"""Keys, limits and budgets against a real ``redis-server`` (and in process), through the same
``Tenants`` object the request path uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import GatewayError
from gateway.observability.metrics import Metrics
from gateway.settings import Settings
from gateway.tenants import Tenants
from gateway.tenants.admission import format_reset, rate_headers
from gateway.tenants.keys import KeyLimits
from gateway.tenants.limits import Kind, Window, WindowState
from loadtest.harness import RedisServer

ADMIN = "admin-secret-1"


def build(tmp_path: Path, redis_url: str | None, **env: object) -> tuple[Tenants, Metrics]:
    settings = Settings(GATEWAY_ADMIN_KEY=ADMIN, REDIS_URL=redis_url,
                        GATEWAY_KEYS_DB=tmp_path / "tenants.db", GATEWAY_ACCESS_LOG=False,
                        **env)
    metrics = Metrics(CollectorRegistry())
    return Tenants.build(settings, metrics), metrics


@pytest.fixture
async def pair(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[Tenants, Tenants]]:
    """Two replicas' worth of Tenants on one Redis (flushed first)."""
    from redis.asyncio import Redis

    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
    a, _ = build(tmp_path, redis_server.url)
    b, _ = build(tmp_path, redis_server.url)
    yield a, b
    await a.aclose()
    await b.aclose()


async def make_key(tenants: Tenants, **limits: object) -> tuple[str, str]:
    record, secret = await tenants.admin.create_key("team-key", "team-a", KeyLimits(**limits),
                                                    None, {})
    return record.id, secret


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def test_two_limiters_on_one_redis_admit_exactly_the_limit(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    _, secret = await make_key(a, rpm=10)
    tenant_a = await a.authenticate(bearer(secret))
    tenant_b = await b.authenticate(bearer(secret))

    async def one(tenants: Tenants, tenant: object) -> str:
        try:
            admission = await tenants.admit(tenant, "gpt-4.1", 10)  # type: ignore[arg-type]
        except GatewayError as error:
            assert error.status == 429 and error.code == "rate_limit_exceeded"
            assert 1 <= int(error.headers["Retry-After"]) <= 60
            return "refused"
        return admission.headers()["x-ratelimit-remaining-requests"]

    results = await asyncio.gather(*(one(a, tenant_a) if i % 2 else one(b, tenant_b)
                                     for i in range(50)))
    admitted = [r for r in results if r != "refused"]
    assert len(admitted) == 10
    assert sorted(int(r) for r in admitted) == list(range(10))  # each saw its own count


async def test_headers_count_down_and_reset_in_openai_format(
        pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    _, secret = await make_key(a, rpm=5, tpm=1000)
    tenant = await a.authenticate(bearer(secret))
    seen = []
    for _ in range(3):
        headers = (await a.admit(tenant, "gpt-4.1", 100)).headers()
        seen.append((headers["x-ratelimit-remaining-requests"],
                     headers["x-ratelimit-remaining-tokens"]))
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert seen == [("4", "900"), ("3", "800"), ("2", "700")]


def test_reset_format_is_openais() -> None:
    assert format_reset(0.02) == "20ms"
    assert format_reset(1) == "1s"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(360) == "6m0s"
    assert format_reset(3723) == "1h2m3s"


async def test_tokens_are_taken_from_the_estimate_and_corrected_from_usage(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    _, secret = await make_key(a, tpm=100)
    tenant = await a.authenticate(bearer(secret))
    first = await a.admit(tenant, "gpt-4.1", 80)
    with pytest.raises(GatewayError) as refused:
        await b.admit(tenant, "gpt-4.1", 80)  # 160 > 100: the estimate counts at once
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "20"
    a.settle(first, prompt_tokens=5, completion_tokens=5, cost=Decimal(0), saved=Decimal(0),
             error=False)
    deadline = time.monotonic() + 5
    while True:  # the correction is written in the background: poll for it
        try:
            admitted = await b.admit(tenant, "gpt-4.1", 80)
            break
        except GatewayError:
            assert time.monotonic() < deadline, "the token correction never landed"
            await asyncio.sleep(0.02)
    assert admitted.headers()["x-ratelimit-remaining-tokens"] == "10"  # 100 - 10 - 80


async def test_a_request_larger_than_the_tpm_limit_says_so(pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    _, secret = await make_key(a, tpm=50)
    tenant = await a.authenticate(bearer(secret))
    with pytest.raises(GatewayError) as refused:
        await a.admit(tenant, "gpt-4.1", 51)
    assert "exceed" in refused.value.message and refused.value.status == 429


async def test_per_model_limits_apply_to_matching_models_only(
        pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    _, secret = await a.admin.create_key("k", None, KeyLimits(
        model_limits={"gpt-*": {"rpm": 1}}), None, {})
    tenant = await a.authenticate(bearer(secret))
    await a.admit(tenant, "gpt-4.1", 1)
    with pytest.raises(GatewayError) as refused:
        await a.admit(tenant, "gpt-4.1", 1)
    assert "'gpt-4.1'" in refused.value.message
    for _ in range(3):
        await a.admit(tenant, "deepseek-v3.2", 1)


async def test_models_outside_the_allowed_globs_are_forbidden(
        pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    _, secret = await make_key(a, models=["deepseek-*"])
    tenant = await a.authenticate(bearer(secret))
    await a.admit(tenant, "deepseek-v3.2", 1)
    with pytest.raises(GatewayError) as refused:
        await a.admit(tenant, "gpt-4.1", 1)
    assert refused.value.status == 403 and refused.value.code == "model_not_allowed"


async def test_max_parallel_frees_a_slot_when_a_request_settles(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    _, secret = await make_key(a, max_parallel=2)
    tenant = await a.authenticate(bearer(secret))
    first = await a.admit(tenant, "gpt-4.1", 1)
    await b.admit(tenant, "gpt-4.1", 1)
    with pytest.raises(GatewayError) as refused:
        await b.admit(tenant, "gpt-4.1", 1)
    assert "in flight" in refused.value.message
    a.settle(first, prompt_tokens=1, completion_tokens=1, cost=Decimal(0), saved=Decimal(0),
             error=False)
    await a.limiter.returns.flush()  # type: ignore[union-attr]
    await b.admit(tenant, "gpt-4.1", 1)


async def test_budget_counts_exact_micro_dollars_and_names_itself_when_spent(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    _, secret = await make_key(a, budget_daily_usd=Decimal("0.000010"))
    tenant = await a.authenticate(bearer(secret))
    for _ in range(2):  # 0.0000049 is billed (and counted) as 0.000005: 2 × 5 µ$ = the budget
        admission = await a.admit(tenant, "gpt-4.1", 1)
        a.settle(admission, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.0000049"),
                 saved=Decimal(0), error=False)
        await a.limiter.returns.flush()  # type: ignore[union-attr]
    with pytest.raises(GatewayError) as refused:
        await b.admit(tenant, "gpt-4.1", 1)
    error = refused.value
    assert (error.status, error.code, error.type) == (429, "insufficient_quota",
                                                      "insufficient_quota")
    assert "daily budget of $0.000010" in error.message and "$0.000010)" in error.message
    assert "resets at" in error.message and "T00:00:00Z" in error.message
    assert int(error.headers["Retry-After"]) <= 86400


async def test_a_budget_one_micro_dollar_short_still_admits(
        pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    _, secret = await make_key(a, budget_monthly_usd=Decimal("0.000011"))
    tenant = await a.authenticate(bearer(secret))
    for _ in range(2):
        admission = await a.admit(tenant, "gpt-4.1", 1)
        a.settle(admission, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.000005"),
                 saved=Decimal(0), error=False)
        await a.limiter.returns.flush()  # type: ignore[union-attr]
    admission = await a.admit(tenant, "gpt-4.1", 1)  # 10 of 11 µ$ spent: one more is served
    a.settle(admission, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.000005"),
             saved=Decimal(0), error=False)
    await a.limiter.returns.flush()  # type: ignore[union-attr]
    with pytest.raises(GatewayError, match="monthly budget"):
        await a.admit(tenant, "gpt-4.1", 1)


async def test_revoked_and_expired_keys_are_refused_and_x_api_key_is_accepted(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    record, secret = await make_key(a)
    assert (await b.authenticate({"x-api-key": secret})).id == record
    await a.admin.revoke_key(record)
    deadline = time.monotonic() + 1.0
    while True:  # replica b may hold the key for at most 0.5 s
        try:
            await b.authenticate(bearer(secret))
        except GatewayError as error:
            assert error.code == "invalid_api_key"
            break
        assert time.monotonic() < deadline, "a revoked key still worked after a second"
        await asyncio.sleep(0.05)
    _, secret2 = await a.admin.create_key("old", None, KeyLimits(),
                                    datetime.now(UTC) - timedelta(seconds=1), {})
    with pytest.raises(GatewayError) as refused:
        await b.authenticate(bearer(secret2))
    assert (refused.value.status, refused.value.code) == (401, "key_expired")


async def test_rotation_stops_the_old_secret_and_starts_the_new(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    key_id, old = await make_key(a)
    _, new = await a.admin.rotate_key(key_id)
    assert (await b.authenticate(bearer(new))).id == key_id
    with pytest.raises(GatewayError):
        await b.authenticate(bearer(old))


async def test_redis_down_fails_open_by_default_and_closed_when_asked(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    open_, metrics = build(tmp_path, server.url)
    closed, _ = build(tmp_path, server.url, GATEWAY_LIMITS_FAIL_CLOSED=True)
    try:
        _, secret = await make_key(open_, rpm=1)
        tenant_open = await open_.authenticate(bearer(secret))
        tenant_closed = await closed.authenticate(bearer(secret))
        await open_.admit(tenant_open, "gpt-4.1", 1)
        server.stop()
        for _ in range(3):  # over the limit, but the limit cannot be checked: admitted
            admission = await open_.admit(tenant_open, "gpt-4.1", 1)
            assert admission.headers() == {}
        failed_open = metrics.limits_unavailable.labels("fail_open")._value.get()
        assert failed_open == 3
        with pytest.raises(GatewayError) as refused:
            await closed.admit(tenant_closed, "gpt-4.1", 1)
        assert refused.value.status == 503 and refused.value.code == "limits_unavailable"
    finally:
        server.stop()
        await open_.aclose()
        await closed.aclose()


async def test_in_process_limits_hold_the_same_rules(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tenants, _ = build(tmp_path, None)
    clock = [1_000_000.0]
    monkeypatch.setattr("gateway.tenants.limits.time.time", lambda: clock[0])
    try:
        _, secret = await make_key(tenants, rpm=3)
        tenant = await tenants.authenticate(bearer(secret))
        for _ in range(3):
            await tenants.admit(tenant, "gpt-4.1", 1)
            clock[0] += 10
        with pytest.raises(GatewayError) as refused:
            await tenants.admit(tenant, "gpt-4.1", 1)
        # The oldest request (at t=0) leaves the 60 s window at t=60; it is now t=30.
        assert refused.value.headers["Retry-After"] == "30"
        clock[0] += 30
        await tenants.admit(tenant, "gpt-4.1", 1)
        with pytest.raises(GatewayError):
            await tenants.admit(tenant, "gpt-4.1", 1)
    finally:
        await tenants.aclose()


async def test_the_soft_threshold_shows_once_in_a_metric_and_a_log_line(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    tenants, metrics = build(tmp_path, redis_server.url)
    try:
        _, secret = await make_key(tenants, budget_daily_usd=Decimal("0.000010"))
        tenant = await tenants.authenticate(bearer(secret))
        admission = await tenants.admit(tenant, "gpt-4.1", 1)
        tenants.settle(admission, prompt_tokens=1, completion_tokens=1,
                       cost=Decimal("0.000008"), saved=Decimal(0), error=False)
        await tenants.limiter.returns.flush()  # type: ignore[union-attr]
        with caplog.at_level("WARNING", logger="gateway.tenants"):
            for _ in range(3):
                await tenants.admit(tenant, "gpt-4.1", 1)
        soft = [r.getMessage() for r in caplog.records if "passed 80%" in r.getMessage()]
        assert len(soft) == 1 and "$0.000008 of $0.000010" in soft[0]
        assert metrics.budget_threshold.labels("daily", "soft")._value.get() == 1
        assert secret not in caplog.text
    finally:
        await tenants.aclose()


async def test_a_busy_key_is_not_looked_up_again_until_some_key_changes(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    record_id, secret = await make_key(a, rpm=1000)
    backend = b.store.backend
    assert backend is not None
    lookups = []
    find = backend.find

    async def counting(key_sha256: str):  # type: ignore[no-untyped-def]
        lookups.append(key_sha256)
        return await find(key_sha256)

    backend.find = counting  # type: ignore[method-assign]
    started = time.monotonic()
    while time.monotonic() - started < 1.2:  # well past the 0.5 s the cache holds a key alone
        tenant = await b.authenticate(bearer(secret))
        await b.admit(tenant, "gpt-4.1", 1)  # each admit tells b the key version is unchanged
        await asyncio.sleep(0.02)
    assert len(lookups) == 1
    await a.admin.revoke_key(record_id)  # any change moves the version: the next admit sees it
    await b.admit(tenant, "gpt-4.1", 1)
    with pytest.raises(GatewayError) as refused:
        await b.authenticate(bearer(secret))
    assert refused.value.code == "invalid_api_key" and len(lookups) == 2


async def test_a_check_overlaps_its_upstream_call_only_with_room_to_spare(
        pair: tuple[Tenants, Tenants], tmp_path: Path) -> None:
    a, _ = pair
    _, secret = await make_key(a, rpm=100, tpm=100_000)
    tenant = await a.authenticate(bearer(secret))
    assert not a.may_overlap(tenant, "gpt-4.1", 10)  # nothing known yet: checked first
    await a.admit(tenant, "gpt-4.1", 10)
    # 100 - 1 used - 10 kept free = 89 requests may overlap before the next decision.
    assert sum(a.may_overlap(tenant, "gpt-4.1", 10) for _ in range(100)) == 89
    assert not a.may_overlap(tenant, "deepseek-v3.2", 10)  # per model: no decision for it yet
    await a.admit(tenant, "gpt-4.1", 10)
    assert not a.may_overlap(tenant, "gpt-4.1", 100_000)  # more tokens than the room left

    _, tight = await make_key(a, rpm=10)
    near = await a.authenticate(bearer(tight))
    for _ in range(9):
        await a.admit(near, "gpt-4.1", 1)
    assert not a.may_overlap(near, "gpt-4.1", 1)  # under a tenth of the limit left

    _, parallel = await make_key(a, rpm=1000, max_parallel=10)
    bounded = await a.authenticate(bearer(parallel))
    await a.admit(bounded, "gpt-4.1", 1)
    assert a.may_overlap(bounded, "gpt-4.1", 1)  # 1 of 10 in flight
    for _ in range(8):
        await a.admit(bounded, "gpt-4.1", 1)
    assert not a.may_overlap(bounded, "gpt-4.1", 1)  # 9 of 10 in flight

    _, budget = await make_key(a, budget_daily_usd=Decimal("0.01"))
    spender = await a.authenticate(bearer(budget))
    admission = await a.admit(spender, "gpt-4.1", 1)
    assert a.may_overlap(spender, "gpt-4.1", 1)
    a.settle(admission, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.0095"),
             saved=Decimal(0), error=False)
    await a.limiter.returns.flush()  # type: ignore[union-attr]
    await a.admit(spender, "gpt-4.1", 1)
    assert not a.may_overlap(spender, "gpt-4.1", 1)  # 5 % of the budget left

    local, _ = build(tmp_path / "local", None)
    _, secret = await make_key(local, rpm=100)
    tenant = await local.authenticate(bearer(secret))
    await local.admit(tenant, "gpt-4.1", 1)
    assert not local.may_overlap(tenant, "gpt-4.1", 1)  # in process: no round trip to hide
    await local.aclose()


async def test_an_overlapped_verdict_that_arrives_with_the_answer_still_gives_its_headers(
        pair: tuple[Tenants, Tenants]) -> None:
    """A verdict and the upstream's answer read in one turn of the loop: the request awaits a
    future already done (which does not yield) before the future's callbacks have run; the
    admission must be taken from the verdict itself, or the answer goes out without its
    x-ratelimit-* headers (seen in CI across two replicas)."""
    a, _ = pair
    _, secret = await make_key(a, rpm=100)
    tenancy = a.tenancy("/v1/chat/completions", bearer(secret))
    await tenancy.authenticate()
    await tenancy.admit("gpt-4.1", {"messages": [{"role": "user", "content": "hi"}]})
    tenancy.admission = None
    begun = await tenancy.admit_or_overlap("gpt-4.1",
                                           {"messages": [{"role": "user", "content": "hi"}]})
    assert begun is not None  # room to spare after the first decision: overlapped
    admission = await begun  # a real overlapped verdict, handed to a future of our own below
    late = asyncio.get_running_loop().create_future()
    late.add_done_callback(tenancy._admitted)
    tenancy.admission = None
    late.set_result(admission)  # done, its callback only queued: the same turn as the answer
    assert await tenancy.verdict(late) is None
    assert tenancy.admission is admission
    assert tenancy.rate_headers()["x-ratelimit-remaining-requests"] == "98"


def test_rate_headers_show_the_tightest_window_of_each_kind() -> None:
    def state(kind: Kind, limit: int, used: int, reset_s: float, model: str | None = None
              ) -> WindowState:
        return WindowState(Window(f"w:{kind}:{model}", kind, limit, 1, model), used, reset_s)

    headers = rate_headers([
        state(Kind.REQUESTS, 100, 10, 30.0),             # the key's: 90 left
        state(Kind.REQUESTS, 20, 15, 1.5, "gpt-4.1"),    # the model's: 5 left, the tightest
        state(Kind.TOKENS, 1000, 1200, 0.02),            # over (a correction): 0 left, not -200
    ])
    assert headers == {
        "x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "1.5s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert rate_headers([]) == {}
    equal = [state(Kind.REQUESTS, 10, 5, 2.0), state(Kind.REQUESTS, 10, 5, 9.0, "m")]
    assert rate_headers(equal)["x-ratelimit-reset-requests"] == "2s"  # a tie: the first


async def test_an_end_users_budget_on_redis_refuses_that_end_user_on_every_replica(
        pair: tuple[Tenants, Tenants]) -> None:
    a, b = pair
    _, secret = await make_key(a, end_user_budget_daily_usd=Decimal("0.000010"))
    ta, tb = (await a.authenticate(bearer(secret))), (await b.authenticate(bearer(secret)))
    first = await a.begin(ta, "gpt-4.1", 1, "alice")
    a.settle(first, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.000010"),
             saved=Decimal(0), error=False)
    await a.limiter.returns.flush()  # type: ignore[union-attr]
    for tenants, tenant in ((a, ta), (b, tb)):
        with pytest.raises(GatewayError) as refused:
            await tenants.begin(tenant, "gpt-4.1", 1, "alice")
        assert "end user 'alice'" in refused.value.message
        await tenants.begin(tenant, "gpt-4.1", 1, "bob")
        await tenants.begin(tenant, "gpt-4.1", 1, "")


async def test_a_key_without_limits_is_admitted_without_a_limits_call(
        pair: tuple[Tenants, Tenants]) -> None:
    a, _ = pair
    calls: list[object] = []
    submit = a.limiter.submit
    a.limiter.submit = lambda plan, done: (calls.append(plan), submit(plan, done))  # type: ignore[method-assign]
    _, plain = await make_key(a)
    _, limited = await make_key(a, rpm=100)
    _, narrow = await make_key(a, models=["gpt-4.1"])
    plain_tenant = await a.authenticate(bearer(plain))
    free = a.unlimited(plain_tenant, "gpt-4.1")
    assert free is not None and free.plan is None
    assert (await a.begin(plain_tenant, "gpt-4.1", 5)).plan is None
    assert calls == []
    limited_tenant = await a.authenticate(bearer(limited))
    assert a.unlimited(limited_tenant, "gpt-4.1") is None
    assert (await a.begin(limited_tenant, "gpt-4.1", 5)).plan is not None
    assert len(calls) == 1
    with pytest.raises(GatewayError) as refused:  # the model check still holds without limits
        a.unlimited(await a.authenticate(bearer(narrow)), "deepseek-v3.2")
    assert refused.value.code == "model_not_allowed"
