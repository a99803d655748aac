"""Cached-prompt prices and end users through the real ``bentoml serve``: the fake provider
answers in each provider's usage shape, and the official SDKs' cost header, stream usage chunk
and Anthropic cache fields agree with the hand-computed price, and with the ledger."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from loadtest.harness import FakeProvider, GatewayServer

ADMIN = "gw-admin-spend-5521"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
MODELS = {
    "gpt-cached": ("openai", {"input_usd_per_mtok": "2.00", "cached_input_usd_per_mtok": "0.50",
                              "output_usd_per_mtok": "8.00"}),
    "deepseek-cached": ("deepseek", {"input_usd_per_mtok": "0.28",
                                     "cached_input_usd_per_mtok": "0.028",
                                     "output_usd_per_mtok": "0.42"}),
    "claude-cached": ("anthropic", {"input_usd_per_mtok": "3.00",
                                    "cached_input_usd_per_mtok": "0.30",
                                    "cache_write_usd_per_mtok": "3.75",
                                    "output_usd_per_mtok": "15.00"}),
}
PROMPT = "Compare the two attached contracts clause by clause and list what differs. " * 3
MICRO = Decimal("0.000001")


def by_hand(model: str, prompt: int, completion: int, cached: int, written: int) -> Decimal:
    price = {k: Decimal(v) for k, v in MODELS[model][1].items()}
    full = price["input_usd_per_mtok"]
    cost = ((prompt - cached - written) * full
            + cached * price.get("cached_input_usd_per_mtok", full)
            + written * price.get("cache_write_usd_per_mtok", full)
            + completion * price["output_usd_per_mtok"]) / 1_000_000
    return cost.quantize(MICRO)


def cache_counts(usage: Any) -> tuple[int, int]:
    """(read, written) from an OpenAI SDK usage object, whichever provider's shape it has."""
    extra = usage.model_extra or {}
    details = usage.prompt_tokens_details
    cached = (extra.get("prompt_cache_hit_tokens") or extra.get("cache_read_input_tokens")
              or (details.cached_tokens if details else 0))
    return cached, extra.get("cache_creation_input_tokens") or 0


@pytest.fixture(scope="module")
def gateway(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    catalog = {"default_model": "gpt-cached", "models": {
        name: {"owned_by": vendor, "upstream_model": name, **prices}
        for name, (vendor, prices) in MODELS.items()}}
    path = log_dir / "spend-models.yaml"
    path.write_text(yaml.safe_dump(catalog))
    server = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_CONFIG": str(path), "GATEWAY_ADMIN_KEY": ADMIN,
        "GATEWAY_END_USER_HEADER": "x-end-user"})
    yield server
    server.stop()


@pytest.fixture
def key(gateway: GatewayServer, fake: FakeProvider) -> dict[str, Any]:
    fake.configure(usage_shapes={name: shape for name, (shape, _) in MODELS.items()})
    made = httpx.post(f"{gateway.url}/admin/keys", json={"name": "spend"}, headers=ADMIN_AUTH)
    assert made.status_code == 201, made.text
    return dict(made.json())


def ledger(gateway: GatewayServer, key_id: str, expected_requests: int,
           group_by: str = "model") -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:  # the ledger is written in the background
        rows: list[dict[str, Any]] = httpx.get(
            f"{gateway.url}/admin/usage", headers=ADMIN_AUTH,
            params={"key": key_id, "group_by": group_by}).json()["data"]
        if sum(r["requests"] for r in rows) == expected_requests:
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def test_every_usage_shape_is_priced_at_its_cached_rate_in_headers_streams_and_the_ledger(
        gateway: GatewayServer, key: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key=key["key"], max_retries=0)
    expected: dict[str, Decimal] = {}
    for model in MODELS:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": PROMPT}])
        usage = raw.parse().usage
        assert usage is not None
        cached, written = cache_counts(usage)
        assert cached > 0
        cost = by_hand(model, usage.prompt_tokens, usage.completion_tokens, cached, written)
        assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT + " (streamed)"}],
            stream=True, stream_options={"include_usage": True})
        final = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
        streamed = by_hand(model, final.prompt_tokens, final.completion_tokens,
                           *cache_counts(final))
        assert Decimal(str(final.model_extra["cost_usd"])) == streamed
        expected[model] = cost + streamed
    rows = ledger(gateway, key["id"], 2 * len(MODELS))
    assert {r["model"]: Decimal(r["cost_usd"]) for r in rows} == expected
    assert all(r["cached_tokens"] > 0 and r["reasoning_tokens"] > 0 for r in rows)


def test_the_anthropic_bridge_reports_cache_reads_and_writes_priced_as_charged(
        gateway: GatewayServer, key: dict[str, Any]) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key["key"], max_retries=0)
    ask: dict[str, Any] = {"model": "claude-cached", "max_tokens": 300,
                           "messages": [{"role": "user", "content": PROMPT}]}
    raw = client.messages.with_raw_response.create(**ask)
    whole = raw.parse().usage
    with client.messages.stream(**ask) as events:
        streamed = events.get_final_message().usage
    total = Decimal(0)
    for usage in (whole, streamed):
        assert usage.cache_read_input_tokens and usage.cache_creation_input_tokens
        prompt = (usage.input_tokens + usage.cache_read_input_tokens
                  + usage.cache_creation_input_tokens)
        total += by_hand("claude-cached", prompt, usage.output_tokens,
                         usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == by_hand(
        "claude-cached", whole.input_tokens + whole.cache_read_input_tokens
        + whole.cache_creation_input_tokens, whole.output_tokens,
        whole.cache_read_input_tokens, whole.cache_creation_input_tokens)
    [row] = ledger(gateway, key["id"], 2)
    assert Decimal(row["cost_usd"]) == total
    assert row["cache_write_tokens"] == (whole.cache_creation_input_tokens
                                         + streamed.cache_creation_input_tokens)


def test_end_users_from_user_metadata_and_the_header_add_up_to_the_key(
        gateway: GatewayServer, key: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {key['key']}"}
    chat = {"model": "gpt-cached", "messages": [{"role": "user", "content": "hello"}]}
    sent = [
        httpx.post(f"{gateway.v1}/chat/completions", headers=auth, json={**chat, "user": "ann"}),
        httpx.post(f"{gateway.v1}/chat/completions", headers={**auth, "x-end-user": "bob"},
                   json=chat),
        httpx.post(f"{gateway.v1}/messages", headers={"x-api-key": key["key"]}, json={
            "model": "gpt-cached", "max_tokens": 50, "metadata": {"user_id": "cy"},
            "messages": [{"role": "user", "content": "hello"}]}),
        httpx.post(f"{gateway.v1}/chat/completions", headers=auth, json=chat),
    ]
    assert [r.status_code for r in sent] == [200] * 4
    rows = ledger(gateway, key["id"], 4, group_by="user")
    own = httpx.get(f"{gateway.v1}/usage", headers=auth, params={"group_by": "user"}).json()
    assert {r["user"] for r in rows} == {"ann", "bob", "cy", ""} == \
        {r["user"] for r in own["data"]}
    [total] = ledger(gateway, key["id"], 4, group_by="key")
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(total["cost_usd"]) > 0
