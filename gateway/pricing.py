"""Tokens to US dollars, exactly: Decimal all the way, rounded to the micro-dollar at the edge."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")


class Price(Protocol):
    """A model's (or a deployment's) price per million tokens."""

    @property
    def input_usd_per_mtok(self) -> Decimal: ...
    @property
    def output_usd_per_mtok(self) -> Decimal: ...


def cost_usd(entry: Price, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Exact cost: input and output tokens priced separately, never rounded here."""
    return (
        Decimal(prompt_tokens) * entry.input_usd_per_mtok
        + Decimal(completion_tokens) * entry.output_usd_per_mtok
    ) / MILLION


def to_micro(amount: Decimal) -> Decimal:
    """Round to the micro-dollar (half up), for display only."""
    return amount.quantize(MICRO, rounding=ROUND_HALF_UP)


def format_usd(amount: Decimal) -> str:
    """The micro-dollar string used in headers, e.g. ``0.000168``."""
    return str(to_micro(amount))


def read_usage(usage: object) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from an upstream ``usage`` object, if it has one."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    for count in (prompt, completion):
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return None
    return prompt, completion
