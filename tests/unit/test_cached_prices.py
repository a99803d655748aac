"""Cached-prompt and reasoning prices end to end: the fake provider answers in each provider's
usage shape (OpenAI, DeepSeek, Anthropic-style), and the cost header, the stream's usage chunk,
the ledger and the Anthropic bridge's cache fields all agree with the price worked out by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from gateway.pricing import Tokens, read_tokens
from gateway.tenants.ledger import GroupBy, UsageQuery
from loadtest.fake_provider import FakeConfig

from .inprocess import CLIENT_KEY, UPSTREAM_KEY, in_process

CATALOG = """
default_model: gpt-cached
models:
  gpt-cached:
    owned_by: openai
    upstream_model: gpt-cached
    input_usd_per_mtok: "2.00"
    cached_input_usd_per_mtok: "0.50"
    output_usd_per_mtok: "8.00"
  deepseek-cached:
    owned_by: deepseek
    upstream_model: deepseek-cached
    input_usd_per_mtok: "0.28"
    cached_input_usd_per_mtok: "0.028"
    output_usd_per_mtok: "0.42"
  claude-cached:
    owned_by: anthropic
    upstream_model: claude-cached
    input_usd_per_mtok: "3.00"
    cached_input_usd_per_mtok: "0.30"
    cache_write_usd_per_mtok: "3.75"
    output_usd_per_mtok: "15.00"
  no-cached-price:
    owned_by: openai
    upstream_model: no-cached-price
    input_usd_per_mtok: "1.00"
    output_usd_per_mtok: "4.00"
"""
SHAPES = {"gpt-cached": "openai", "deepseek-cached": "deepseek", "claude-cached": "anthropic",
          "no-cached-price": "openai"}
# USD per million tokens: (input, cached read, cache write, output), written out again by hand.
PRICES = {"gpt-cached": ("2.00", "0.50", "2.00", "8.00"),
          "deepseek-cached": ("0.28", "0.028", "0.28", "0.42"),
          "claude-cached": ("3.00", "0.30", "3.75", "15.00"),
          "no-cached-price": ("1.00", "1.00", "1.00", "4.00")}
PROMPT = "Summarise the attached quarterly report for the board in three short paragraphs. " * 3
MICRO = Decimal("0.000001")


def by_hand(model: str, prompt: int, completion: int, cached: int, written: int) -> Decimal:
    full, read, write, out = (Decimal(p) for p in PRICES[model])
    cost = ((prompt - cached - written) * full + cached * read + written * write
            + completion * out) / 1_000_000
    return cost.quantize(MICRO)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(CATALOG)
    return path


def env(tmp_path: Path, catalog: Path) -> dict[str, str]:
    return {"GATEWAY_CONFIG": str(catalog), "GATEWAY_KEYS_DB": str(tmp_path / "tenants.db"),
            "GATEWAY_CACHE": "false"}


def fake() -> FakeConfig:
    return FakeConfig(api_key=UPSTREAM_KEY, chunks=4, usage_shapes=dict(SHAPES))


async def ledger_rows(gw: Any) -> dict[str, dict[str, Any]]:
    await gw.gateway.tenants.ledger.buffer.flush()
    today = datetime.now(UTC).date()
    rows = await gw.gateway.tenants.admin.usage(UsageQuery(today, today, group_by=(GroupBy.MODEL,)))
    return {row["model"]: row for row in rows}


def test_each_usage_shape_reads_to_the_same_counts() -> None:
    openai_shape = {"prompt_tokens": 100, "completion_tokens": 40,
                    "prompt_tokens_details": {"cached_tokens": 60},
                    "completion_tokens_details": {"reasoning_tokens": 10}}
    deepseek = {"prompt_tokens": 100, "completion_tokens": 40, "prompt_cache_hit_tokens": 60,
                "prompt_cache_miss_tokens": 40}
    claude = {"prompt_tokens": 100, "completion_tokens": 40, "cache_read_input_tokens": 60,
              "cache_creation_input_tokens": 30}
    assert read_tokens(openai_shape) == Tokens(100, 40, 60, 0, 10)
    assert read_tokens(deepseek) == Tokens(100, 40, 60, 0, 0)
    assert read_tokens(claude) == Tokens(100, 40, 60, 30, 0)
    relayed = {"prompt_tokens": 100, "completion_tokens": 40,  # as some aggregators relay it
               "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}
    assert read_tokens(relayed) == Tokens(100, 40, 60, 30, 0)
    # counts beyond the prompt are cut to it, never a negative uncached count
    assert read_tokens({"prompt_tokens": 10, "completion_tokens": 1,
                        "prompt_tokens_details": {"cached_tokens": 50}}) == Tokens(10, 1, 10)
    assert read_tokens({"completion_tokens": 1}) is None


@pytest.mark.parametrize("model", list(SHAPES))
async def test_chat_cost_header_and_ledger_use_the_cached_price(
        model: str, tmp_path: Path, catalog: Path) -> None:
    async with in_process(fake(), **env(tmp_path, catalog)) as gw:
        response = await gw.http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": PROMPT}]})
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        tokens = read_tokens(usage)
        assert tokens is not None and tokens.cached > 0 and tokens.reasoning > 0
        expected = by_hand(model, tokens.prompt, tokens.completion, tokens.cached, tokens.written)
        assert Decimal(response.headers["x-gateway-cost-usd"]) == expected
        row = (await ledger_rows(gw))[model]
        assert Decimal(row["cost_usd"]) == expected
        assert row["input_tokens"] == tokens.prompt and row["output_tokens"] == tokens.completion
        assert row["cached_tokens"] == tokens.cached
        assert row["cache_write_tokens"] == tokens.written
        assert row["reasoning_tokens"] == tokens.reasoning


async def test_a_model_without_a_cached_price_charges_the_full_input_price(
        tmp_path: Path, catalog: Path) -> None:
    async with in_process(fake(), **env(tmp_path, catalog)) as gw:
        response = await gw.http.post("/v1/chat/completions", json={
            "model": "no-cached-price", "messages": [{"role": "user", "content": PROMPT}]})
        usage = response.json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] > 0
        full = (Decimal(usage["prompt_tokens"]) * 1 + Decimal(usage["completion_tokens"]) * 4
                ) / 1_000_000
        assert Decimal(response.headers["x-gateway-cost-usd"]) == full.quantize(MICRO)


@pytest.mark.parametrize("model", ["gpt-cached", "deepseek-cached", "claude-cached"])
async def test_stream_usage_chunk_and_ledger_use_the_cached_price(
        model: str, tmp_path: Path, catalog: Path) -> None:
    async with in_process(fake(), **env(tmp_path, catalog)) as gw:
        stream = await gw.openai().chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True})
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
        assert usage is not None
        raw = usage.model_dump()
        tokens = read_tokens(raw)
        assert tokens is not None and tokens.cached > 0
        expected = by_hand(model, tokens.prompt, tokens.completion, tokens.cached, tokens.written)
        assert Decimal(str(raw["cost_usd"])) == expected
        row = (await ledger_rows(gw))[model]
        assert Decimal(row["cost_usd"]) == expected
        assert row["cached_tokens"] == tokens.cached and row["reasoning_tokens"] == tokens.reasoning


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_anthropic_bridge_cache_fields_agree_with_the_cost(
        stream: bool, tmp_path: Path, catalog: Path) -> None:
    model = "claude-cached"
    async with in_process(fake(), **env(tmp_path, catalog)) as gw:
        headers: list[httpx2.Headers] = []

        async def record(response: httpx2.Response) -> None:
            headers.append(response.headers)

        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(gw.app),
                                  event_hooks={"response": [record]})
        client = anthropic.AsyncAnthropic(base_url="http://gateway.test", api_key=CLIENT_KEY,
                                          http_client=http, max_retries=0)
        ask: dict[str, Any] = {"model": model, "max_tokens": 200,
                               "messages": [{"role": "user", "content": PROMPT}]}
        if stream:
            async with client.messages.stream(**ask) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(**ask)
        usage = message.usage
        assert usage.cache_read_input_tokens and usage.cache_creation_input_tokens
        prompt = (usage.input_tokens + usage.cache_read_input_tokens
                  + usage.cache_creation_input_tokens)
        expected = by_hand(model, prompt, usage.output_tokens, usage.cache_read_input_tokens,
                           usage.cache_creation_input_tokens)
        if not stream:
            assert Decimal(headers[-1]["x-gateway-cost-usd"]) == expected
        row = (await ledger_rows(gw))[model]
        assert Decimal(row["cost_usd"]) == expected
        assert row["cached_tokens"] == usage.cache_read_input_tokens
        assert row["cache_write_tokens"] == usage.cache_creation_input_tokens
        assert row["input_tokens"] == prompt
        await http.aclose()
