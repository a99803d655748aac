"""Deployments across providers: the balancer, per-deployment breakers, fallback only when every
deployment is unusable, each provider's own key, the deployment's price. Real router, real
balancer, real clients; the providers are respx routes by host."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import yaml
from prometheus_client import CollectorRegistry

from gateway.catalog import Catalog, load_catalog
from gateway.errors import GatewayError
from gateway.observability.health import ServiceStats
from gateway.observability.metrics import Metrics
from gateway.routing.breaker import State
from gateway.routing.deadline import Deadline
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.upstream.client import Upstreams
from gateway.upstream.failures import Attempt, FailureKind

KEYS = {"HOLYSHEEP_API_KEY": "sk-holy-1111", "ALPHA_KEY": "sk-alpha-2222",
        "BETA_KEY": "sk-beta-3333"}
MESSAGES = [{"role": "user", "content": "hi"}]


def catalog_yaml(balancer: str = "weighted") -> dict[str, Any]:
    return {
        "default_model": "gpt-4.1",
        "providers": {
            "alpha": {"base_url": "http://alpha.test/v1", "api_key_env": "ALPHA_KEY"},
            "beta": {"base_url": "http://beta.test/v1", "api_key_env": "BETA_KEY",
                     "completions": True},
        },
        "models": {
            "gpt-4.1": {"owned_by": "openai", "upstream_model": "gpt-4.1",
                        "input_usd_per_mtok": "8", "output_usd_per_mtok": "8",
                        "balancer": balancer,
                        "deployments": [
                            {"provider": "alpha", "weight": 3},
                            {"provider": "beta", "upstream_model": "gpt-4.1-beta",
                             "input_usd_per_mtok": "2"}]},
            "claude-sonnet-4.5": {"owned_by": "anthropic", "upstream_model": "claude",
                                  "input_usd_per_mtok": "15"},
            "embed": {"owned_by": "openai", "upstream_model": "embed-small", "kind": "embedding",
                      "input_usd_per_mtok": "0.02", "deployments": [{"provider": "beta"}]},
        },
        "fallbacks": {"gpt-4.1": ["claude-sonnet-4.5"]},
    }


def load(tmp_path: Path, raw: dict[str, Any]) -> Catalog:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_catalog(path, KEYS.get)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "HOLYSHEEP_BASE_URL": "http://holy.test/v1", "HOLYSHEEP_API_KEY": KEYS["HOLYSHEEP_API_KEY"],
        "GATEWAY_RETRY_ATTEMPTS": 3, "GATEWAY_RETRY_BASE": 0.001, "GATEWAY_RETRY_MAX_WAIT": 0.002,
        "GATEWAY_BREAKER_FAILURES": 100, "GATEWAY_BREAKER_MIN_CALLS": 100,
        "GATEWAY_BREAKER_COOLDOWN": 15, **overrides}
    return Settings(**{k: str(v) for k, v in values.items()})  # type: ignore[arg-type]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    yield respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def make_router(mock: respx.MockRouter, catalog: Catalog, seed: int = 7,
                clock: Callable[[], float] = time.monotonic, **overrides: object) -> Router:
    config = settings(**overrides)
    upstreams = Upstreams.build(config, catalog, httpx.MockTransport(mock.async_handler),
                                environ=KEYS.get)
    return Router(config, catalog, upstreams, ServiceStats(), Metrics(CollectorRegistry()),
                  clock=clock, rng=random.Random(seed))


def completion(model: str) -> dict[str, object]:
    return {"id": "c-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=completion(orjson.loads(request.content)["model"]))


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def down(status: int = 503) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json={"error": {"message": "down"}})


def hosts(mock: respx.MockRouter, **answers: Callable[[httpx.Request], Any]) -> list[str]:
    """Route each provider host to its answer; returns the host of every call, in order."""
    seen: list[str] = []
    for host, answer in answers.items():
        def record(request: httpx.Request, answer: Any = answer) -> Any:
            seen.append(request.url.host.split(".")[0])
            return answer(request)
        mock.route(host=f"{host}.test").mock(side_effect=record)
    return seen


def deadline() -> Deadline:
    return Deadline.after(10)


# --- the balancer ---------------------------------------------------------------------------

async def test_weights_3_to_1_give_three_quarters_of_2000_requests_to_the_first(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    seen = hosts(mock, alpha=ok, beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml("weighted")))
    for _ in range(2000):
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    share = Counter(seen)["alpha"] / len(seen)
    assert len(seen) == 2000
    assert 0.70 <= share <= 0.80, share


async def latencies_with(strategy: str, mock: respx.MockRouter, tmp_path: Path,
                         ) -> tuple[float, float]:
    """200 requests, 20 at a time, over a deployment made 200 ms slow and a fast one (equal
    weights): the slow one's share and the mean latency."""
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return ok(request)

    async def fast(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.005)
        return ok(request)

    raw = catalog_yaml(strategy)
    raw["models"]["gpt-4.1"]["deployments"][0]["weight"] = 1
    seen = hosts(mock, alpha=slow, beta=fast)
    router = make_router(mock, load(tmp_path, raw))
    gate = asyncio.Semaphore(20)
    took: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.monotonic()
            await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
            took.append(time.monotonic() - started)

    await asyncio.gather(*(one() for _ in range(200)))
    return Counter(seen)["alpha"] / len(seen), statistics.mean(took)


async def test_least_in_flight_sends_less_to_a_slow_deployment_and_is_faster_than_weighted(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    """Why least-in-flight is the default: with one of two equal deployments 200 ms slow,
    weighted keeps sending it half the traffic; least-in-flight sends it a small share and the
    mean latency drops by half or more. (The bound on the means is 3/4, not 1/2: on a loaded
    machine every request waits for the event loop as well, which adds to both means alike.)"""
    slow_share_lif, mean_lif = await latencies_with("least_in_flight", mock, tmp_path)
    other = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    slow_share_w, mean_w = await latencies_with("weighted", other, tmp_path)
    assert slow_share_lif < 0.25
    assert slow_share_w > 0.35
    assert mean_lif < 0.75 * mean_w


def test_least_in_flight_is_the_default_balancer() -> None:
    assert settings().balancer == "least_in_flight"


# --- retries, breakers, fallback ------------------------------------------------------------

async def test_a_retry_goes_to_the_other_deployment_at_once(
    mock: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(asyncio, "sleep", lambda delay, *a: slept.append(delay))
    seen = hosts(mock, alpha=down(503), beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    for _ in range(20):
        served = await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
        assert (served.name, served.provider, served.deployment) == ("gpt-4.1", "beta", "beta")
        assert served.failures in ([], [Attempt("gpt-4.1", "alpha", FailureKind.STATUS, 1, 503,
                                                "down")])
    assert "alpha" in seen
    assert slept == []  # another deployment was waiting: no backoff


async def test_one_providers_outage_opens_its_breaker_only(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    seen = hosts(mock, alpha=refused, beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()), GATEWAY_BREAKER_FAILURES=2)
    for _ in range(30):
        served = await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
        assert served.deployment == "beta"
    assert Counter(seen)["alpha"] == 2  # then skipped: its breaker is open
    assert router.breaker("gpt-4.1", "alpha").state is State.OPEN
    assert router.breaker("gpt-4.1", "beta").state is State.CLOSED
    health = router.deployment_health()["gpt-4.1"]
    assert health["state"] == "closed"
    assert {name: d["state"] for name, d in health["deployments"].items()} == {
        "alpha": "open", "beta": "closed"}
    assert router.breaker_states()["gpt-4.1"] == "closed"


async def test_traffic_comes_back_after_the_cooldown_when_the_provider_recovers(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    now = [100.0]
    alpha_answer: list[Callable[[httpx.Request], Any]] = [refused]
    seen = hosts(mock, alpha=lambda r: alpha_answer[0](r), beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()), clock=lambda: now[0],
                         GATEWAY_BREAKER_FAILURES=1)
    for _ in range(10):
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert router.breaker("gpt-4.1", "alpha").state is State.OPEN
    alpha_answer[0] = ok
    now[0] += 15
    seen.clear()
    for _ in range(40):
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert router.breaker("gpt-4.1", "alpha").state is State.CLOSED
    assert Counter(seen)["alpha"] > 20  # weight 3 of 4 again


async def test_the_next_model_is_tried_only_when_every_deployment_failed(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    def alpha(request: httpx.Request) -> httpx.Response:
        model = orjson.loads(request.content)["model"]
        return ok(request) if model == "claude" else down(503)(request)

    seen = hosts(mock, alpha=alpha, beta=down(502), holy=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    served = await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.name, served.provider, served.attempts) == ("claude-sonnet-4.5", "holysheep", 4)
    assert sorted(seen[:2]) == ["alpha", "beta"] and len(seen) == 4
    assert {(a.deployment, a.kind) for a in served.failures} == {
        ("alpha", FailureKind.STATUS), ("beta", FailureKind.STATUS)}
    assert sum(a.tries for a in served.failures) == 3


async def test_when_every_deployment_fails_the_error_names_each(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    raw = catalog_yaml()
    raw["fallbacks"] = {}
    hosts(mock, alpha=down(503), beta=refused)
    router = make_router(mock, load(tmp_path, raw), GATEWAY_RETRY_ATTEMPTS=2)
    with pytest.raises(GatewayError) as caught:
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    message = caught.value.message
    assert message.startswith("Every deployment failed: ")
    assert "gpt-4.1 via alpha: HTTP 503: down (after 1 attempt)" in message
    assert "gpt-4.1 via beta: could not connect to the upstream (after 1 attempt)" in message


async def test_every_breaker_open_is_a_503_naming_each_deployment(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    raw = catalog_yaml()
    raw["fallbacks"] = {}
    seen = hosts(mock, alpha=ok, beta=ok)
    router = make_router(mock, load(tmp_path, raw), GATEWAY_BREAKER_FAILURES=1)
    router.breaker("gpt-4.1", "alpha").record_failure()
    router.breaker("gpt-4.1", "beta").record_failure()
    with pytest.raises(GatewayError) as caught:
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (caught.value.status, caught.value.code) == (503, "circuit_open")
    assert caught.value.message == ("Every model in the chain is temporarily disabled: "
                                    "gpt-4.1 via alpha: circuit open; "
                                    "gpt-4.1 via beta: circuit open.")
    assert seen == []


# --- keys, prices, routes -------------------------------------------------------------------

async def test_each_provider_receives_only_its_own_key(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    keys: dict[str, set[str]] = {}

    def record(request: httpx.Request) -> httpx.Response:
        keys.setdefault(request.url.host, set()).add(request.headers["authorization"])
        return ok(request)

    hosts(mock, alpha=record, beta=record, holy=record)
    raw = catalog_yaml()
    router = make_router(mock, load(tmp_path, raw))
    for _ in range(40):
        await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    await router.complete("claude-sonnet-4.5", {"messages": MESSAGES}, deadline())
    assert keys == {"alpha.test": {"Bearer sk-alpha-2222"}, "beta.test": {"Bearer sk-beta-3333"},
                    "holy.test": {"Bearer sk-holy-1111"}}


async def test_a_provider_quoting_another_providers_key_is_redacted(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    def quoting(request: httpx.Request) -> httpx.Response:
        message = f"bad: {KEYS['ALPHA_KEY']} {KEYS['HOLYSHEEP_API_KEY']} {KEYS['BETA_KEY']}"
        return httpx.Response(400, json={"error": {"message": message}})

    hosts(mock, beta=quoting)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    with pytest.raises(GatewayError) as caught:
        await router.embed("embed", {"input": "x"}, deadline())
    assert caught.value.message == "bad: [redacted] [redacted] [redacted]"


async def test_the_served_price_is_the_deployments_own_when_it_has_one(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    hosts(mock, alpha=down(503), beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    served = await router.complete("gpt-4.1", {"messages": MESSAGES}, deadline())
    assert (served.price.input_usd_per_mtok, served.price.output_usd_per_mtok) == (
        Decimal(2), Decimal(8))
    assert served.result.data["model"] == "gpt-4.1-beta"  # the deployment's own model id


async def test_streams_and_embeddings_route_to_deployments(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    chunk = orjson.dumps({"id": "c", "model": "gpt-4.1-beta", "choices": [
        {"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    embedding = {"object": "list", "model": "embed-small", "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    def beta(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(200, json=embedding)
        return httpx.Response(200, content=b"data: " + chunk + b"\n\ndata: [DONE]\n\n")

    seen = hosts(mock, alpha=refused, beta=beta)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    stream = await router.open_stream("gpt-4.1", {"messages": MESSAGES, "stream": True},
                                      deadline())
    assert stream.deployment == "beta"
    assert [c["choices"][0]["delta"]["content"] async for _, c in stream.result] == ["hi"]
    served = await router.embed("embed", {"input": "x"}, deadline())
    assert (served.provider, served.result.data["model"]) == ("beta", "embed-small")
    assert seen[-1] == "beta"


async def test_legacy_completions_go_only_to_providers_that_serve_them(
    mock: respx.MockRouter, tmp_path: Path,
) -> None:
    seen = hosts(mock, alpha=ok, beta=ok)
    router = make_router(mock, load(tmp_path, catalog_yaml()))
    assert router.serves_completions("gpt-4.1")
    assert not router.serves_completions("claude-sonnet-4.5")
    for _ in range(10):
        served = await router.complete("gpt-4.1", {"prompt": "hi"}, deadline(), "/completions")
        assert served.deployment == "beta"
    assert set(seen) == {"beta"}
    assert str(mock.calls.last.request.url) == "http://beta.test/v1/completions"
    with pytest.raises(GatewayError) as caught:
        await router.complete("claude-sonnet-4.5", {"prompt": "hi"}, deadline(), "/completions")
    assert caught.value.code == "model_not_supported"
