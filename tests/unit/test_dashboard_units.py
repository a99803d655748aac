"""The dashboard's pieces one at a time: the recent-traffic buckets, the session cookies, and
reading breaker states from whatever shape the router offers."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from gateway.dashboard.data import breaker_view
from gateway.dashboard.sessions import Sessions
from gateway.observability.metrics import Metrics
from gateway.observability.traffic import BOUNDS, MAX_MODELS, RecentTraffic, quantile


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def add(traffic: RecentTraffic, status: int = 200, latency: float = 12.0,
        upstream: float = 10.0, cache: str | None = "miss", requested: str | None = "m",
        served: str | None = "m", error_code: str | None = None) -> None:
    traffic.add(status=status, latency_ms=latency, upstream_ms=upstream, cache=cache,
                requested=requested, served=served, error_code=error_code)


def test_requests_land_in_their_minute_and_age_out_after_an_hour() -> None:
    clock = Clock()
    traffic = RecentTraffic(clock)
    add(traffic)
    add(traffic, status=502, error_code="upstream_error")
    clock.now += 60
    add(traffic, cache="hit")
    minutes = traffic.minutes()
    assert len(minutes) == 60
    assert [m.requests for m in minutes[-2:]] == [2, 1]
    assert [m.errors for m in minutes[-2:]] == [1, 0]
    assert minutes[-1].exact_hits == 1 and minutes[-2].misses == 2
    clock.now += 59 * 60  # the first minute is now 60 minutes old: out of the window
    assert sum(m.requests for m in traffic.minutes()) == 1
    clock.now += 60
    assert sum(m.requests for m in traffic.minutes()) == 0


def test_a_reused_slot_starts_from_zero() -> None:
    clock = Clock()
    traffic = RecentTraffic(clock)
    add(traffic)
    clock.now += 60 * 60  # same slot, an hour later
    add(traffic)
    assert traffic.minutes()[-1].requests == 1


def test_added_and_upstream_latency_quantiles_are_within_one_bucket() -> None:
    traffic = RecentTraffic(Clock())
    for i in range(1, 101):
        add(traffic, latency=100.0 + i, upstream=100.0)  # added: 1..100 ms
    minute = traffic.minutes()[-1]
    p50, p99 = quantile(minute.added, 0.5), quantile(minute.added, 0.99)
    assert p50 is not None and 50 <= p50 <= 50 * 1.13
    assert p99 is not None and 99 <= p99 <= 99 * 1.13
    upstream = quantile(minute.upstream, 0.5)
    assert upstream is not None and 100 <= upstream <= 113
    assert quantile([0] * (len(BOUNDS) + 1), 0.5) is None


def test_fallbacks_and_last_errors_are_kept_per_requested_model_for_an_hour() -> None:
    clock = Clock()
    traffic = RecentTraffic(clock)
    add(traffic, requested="a", served="b")
    add(traffic, requested="a", served="b")
    add(traffic, requested="a", served="c")
    add(traffic, requested="a", served=None, status=429, error_code="rate_limit_exceeded")
    add(traffic, requested="d", served="d", status=504, error_code="timeout")
    seen = traffic.models()
    assert seen["a"]["fallbacks_last_hour"] == 3
    assert seen["a"]["fallbacks_to"] == {"b": 2, "c": 1}
    assert seen["a"]["last_error"] is None  # a 4xx is the client's, not the upstream's
    assert seen["d"]["last_error"]["status"] == 504
    clock.now += 3601
    assert traffic.models()["a"]["fallbacks_last_hour"] == 0


def test_the_model_table_is_bounded() -> None:
    traffic = RecentTraffic(Clock())
    for i in range(MAX_MODELS + 50):
        add(traffic, requested=f"m{i}", served="x")
    assert len(traffic.models()) == MAX_MODELS


def test_a_session_cookie_is_signed_expires_and_can_be_revoked() -> None:
    async def run() -> None:
        clock = Clock()
        sessions = Sessions(b"admin-SECRET", ttl_s=600, clock=clock)
        cookie, expires = await sessions.open()
        assert "admin-SECRET" not in cookie
        assert await sessions.valid(cookie) == expires == int(clock.now) + 600
        sid, exp, mac = cookie.split(".")
        assert await sessions.valid(f"{sid}.{int(exp) + 3600}.{mac}") is None  # longer life
        assert await sessions.valid(f"{sid}x.{exp}.{mac}") is None
        assert await sessions.valid("") is None and await sessions.valid("a.b.c") is None
        other = Sessions(b"another-admin-key", ttl_s=600, clock=clock)
        assert await other.valid(cookie) is None  # a new admin key ends every session
        second, _ = await sessions.open()
        await sessions.revoke(cookie)
        assert await sessions.valid(cookie) is None
        assert await sessions.valid(second) is not None
        clock.now += 601
        assert await sessions.valid(second) is None
        assert Sessions(b"", 600).admin_matches("") is False

    asyncio.run(run())


def test_breaker_states_come_from_the_routers_deployment_view() -> None:
    from gateway.catalog import load_catalog
    from gateway.observability.health import ServiceStats
    from gateway.routing.router import Router
    from gateway.settings import Settings
    from gateway.upstream.client import Upstreams

    settings = Settings(HOLYSHEEP_BASE_URL="http://up.test/v1")  # type: ignore[call-arg]
    catalog = load_catalog()
    router = Router(settings, catalog, Upstreams.build(settings, catalog), ServiceStats(),
                    Metrics(CollectorRegistry()))
    breaker = router.breaker("deepseek-v3.2")
    for _ in range(settings.breaker_failures):
        breaker.record_failure()
    view = breaker_view(router)
    assert view["deepseek-v3.2"]["state"] == "open"
    (deployment,) = view["deepseek-v3.2"]["deployments"]
    assert deployment["state"] == "open" and deployment["provider"] == "holysheep"
    assert view["gpt-4.1"]["state"] == "closed"
