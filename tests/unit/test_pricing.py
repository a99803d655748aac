"""Pricing: exact Decimal costs, micro-dollar rounding only at the display edge, usage parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.catalog import ModelEntry, load_catalog
from gateway.pricing import cost_usd, format_usd, read_usage, to_micro

CATALOG = load_catalog()


def entry(input_price: str, output_price: str) -> ModelEntry:
    return ModelEntry(provider="test", upstream_model="test-model",
                      input_usd_per_mtok=Decimal(input_price),
                      output_usd_per_mtok=Decimal(output_price))


def test_input_and_output_tokens_are_priced_at_their_own_prices() -> None:
    model = entry("1.10", "4.40")
    assert cost_usd(model, 1000, 0) == Decimal("0.0011")
    assert cost_usd(model, 0, 1000) == Decimal("0.0044")
    assert cost_usd(model, 1000, 500) == Decimal("0.0033")  # 1000 × 1.10 + 500 × 4.40, per MTok


def test_swapping_prompt_and_completion_counts_changes_the_cost() -> None:
    model = entry("1", "3")
    assert cost_usd(model, 10, 20) == Decimal("0.00007")
    assert cost_usd(model, 20, 10) == Decimal("0.00005")


def test_cost_is_returned_as_an_exact_decimal_without_rounding() -> None:
    one_token = cost_usd(entry("0.42", "0.42"), 1, 0)
    assert isinstance(one_token, Decimal)
    assert one_token == Decimal("0.00000042")
    assert one_token != to_micro(one_token)  # the sub-micro-dollar digits are still there


def test_one_token_at_42_cents_per_million_formats_as_zero_micro_dollars() -> None:
    one_token = cost_usd(entry("0.42", "0.42"), 1, 0)
    assert to_micro(one_token) == Decimal("0.000000")
    assert format_usd(one_token) == "0.000000"


def test_three_tokens_at_42_cents_per_million_round_up_to_one_micro_dollar() -> None:
    three = cost_usd(entry("0.42", "0.42"), 3, 0)
    assert three == Decimal("0.00000126")
    assert to_micro(three) == Decimal("0.000001")
    assert format_usd(three) == "0.000001"


@pytest.mark.parametrize(("amount", "rounded"), [
    ("0.0000005", "0.000001"),   # half-even would give 0.000000
    ("0.0000025", "0.000003"),   # half-even would give 0.000002
    ("0.0000015", "0.000002"),
    ("0.00000049999", "0.000000"),
    ("0.0000035001", "0.000004"),
])
def test_micro_dollar_rounding_is_half_up(amount: str, rounded: str) -> None:
    assert to_micro(Decimal(amount)) == Decimal(rounded)
    assert format_usd(Decimal(amount)) == rounded


def test_format_usd_always_has_six_decimals_and_no_exponent() -> None:
    assert format_usd(Decimal(0)) == "0.000000"
    assert format_usd(cost_usd(entry("0.42", "0.42"), 0, 0)) == "0.000000"
    assert format_usd(Decimal("1234.5")) == "1234.500000"
    assert format_usd(Decimal("1E-7")) == "0.000000"
    assert format_usd(Decimal("2.5E-6")) == "0.000003"


def test_seed_deepseek_100_prompt_and_100_completion_tokens_cost_84_micro_dollars() -> None:
    cost = cost_usd(CATALOG.models["deepseek-v3.2"], 100, 100)
    assert cost == Decimal("0.000084")
    assert format_usd(cost) == "0.000084"


@pytest.mark.parametrize(("model", "expected"), [
    ("deepseek-v3.2", "0.00084"),       # 2,000 tokens × $0.42
    ("gemini-2.5-flash", "0.005"),      # 2,000 tokens × $2.50
    ("gpt-4.1", "0.016"),               # 2,000 tokens × $8.00
    ("claude-sonnet-4.5", "0.03"),      # 2,000 tokens × $15.00
])
def test_seed_catalog_prices_per_model(model: str, expected: str) -> None:
    assert cost_usd(CATALOG.models[model], 1500, 500) == Decimal(expected)


def test_one_gemini_token_costs_two_and_a_half_micro_dollars_and_shows_three() -> None:
    cost = cost_usd(CATALOG.models["gemini-2.5-flash"], 1, 0)
    assert cost == Decimal("0.0000025")
    assert format_usd(cost) == "0.000003"


def test_an_embedding_model_has_no_output_price() -> None:
    model = CATALOG.models["text-embedding-3-small"]
    assert model.output_usd_per_mtok == Decimal(0)
    assert cost_usd(model, 1_000_000, 999) == Decimal("0.02")


def test_read_usage_returns_prompt_and_completion_counts() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
    assert read_usage(usage) == (12, 34)


def test_read_usage_defaults_missing_completion_tokens_to_zero() -> None:
    assert read_usage({"prompt_tokens": 7}) == (7, 0)  # embeddings report no completion tokens


@pytest.mark.parametrize("usage", [
    None,
    "prompt_tokens=3",
    [3, 4],
    {},
    {"completion_tokens": 4},
    {"prompt_tokens": None, "completion_tokens": 4},
    {"prompt_tokens": "3", "completion_tokens": 4},
    {"prompt_tokens": 3.0, "completion_tokens": 4},
    {"prompt_tokens": 3, "completion_tokens": "4"},
    {"prompt_tokens": 3, "completion_tokens": 4.5},
    {"prompt_tokens": 3, "completion_tokens": None},
])
def test_read_usage_rejects_missing_or_non_integer_counts(usage: object) -> None:
    assert read_usage(usage) is None
