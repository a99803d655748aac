"""Tokens to US dollars, exactly: Decimal all the way, rounded to the micro-dollar at the edge.

Providers report cached prompt tokens in three shapes, all read here (``read_tokens``):
OpenAI's ``prompt_tokens_details.cached_tokens``; DeepSeek's ``prompt_cache_hit_tokens`` /
``prompt_cache_miss_tokens``; Anthropic-style ``cache_read_input_tokens`` /
``cache_creation_input_tokens`` (as OpenAI-compatible aggregators relay them; some put writes in
``prompt_tokens_details.cache_write_tokens``). In every shape
``prompt_tokens`` counts all input tokens, cached and written ones included; a cached count larger
than it is cut to it. Reasoning tokens (``completion_tokens_details.reasoning_tokens``) are part
of ``completion_tokens`` and priced as output.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")


class Price(Protocol):
    """A model's (or a deployment's) price per million tokens."""

    @property
    def input_usd_per_mtok(self) -> Decimal: ...
    @property
    def output_usd_per_mtok(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class Tokens:
    """One answer's billed tokens. ``prompt`` counts every input token, ``cached`` (read from
    the provider's prompt cache) and ``written`` (into it) among them; ``completion`` counts
    every output token, ``reasoning`` among them."""

    prompt: int
    completion: int
    cached: int = 0
    written: int = 0
    reasoning: int = 0

    @property
    def uncached(self) -> int:
        """Input tokens billed at the full input price."""
        return self.prompt - self.cached - self.written


def cost_usd(entry: Price, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Exact cost: input and output tokens priced separately, never rounded here."""
    return (
        Decimal(prompt_tokens) * entry.input_usd_per_mtok
        + Decimal(completion_tokens) * entry.output_usd_per_mtok
    ) / MILLION


def tokens_cost_usd(entry: Price, tokens: Tokens) -> Decimal:
    """Exact cost with the cache's prices: cached input at ``cached_input_usd_per_mtok``, cache
    writes at ``cache_write_usd_per_mtok``, each the full input price when the entry has none."""
    full = entry.input_usd_per_mtok
    read = getattr(entry, "cached_input_usd_per_mtok", None)
    write = getattr(entry, "cache_write_usd_per_mtok", None)
    return (
        Decimal(tokens.uncached) * full
        + Decimal(tokens.cached) * (full if read is None else read)
        + Decimal(tokens.written) * (full if write is None else write)
        + Decimal(tokens.completion) * entry.output_usd_per_mtok
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


def _count(source: Any, key: str) -> int:
    value = source.get(key) if isinstance(source, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_tokens(usage: object) -> Tokens | None:
    """Every billed count from an upstream ``usage`` object, whichever provider's shape it has;
    None when it has no readable prompt and completion counts (the gateway never guesses)."""
    counts = read_usage(usage)
    if counts is None:
        return None
    assert isinstance(usage, dict)
    prompt, completion = counts
    details = usage.get("prompt_tokens_details")
    cached = (_count(usage, "cache_read_input_tokens") or _count(usage, "prompt_cache_hit_tokens")
              or _count(details, "cached_tokens"))
    written = (_count(usage, "cache_creation_input_tokens")
               or _count(details, "cache_creation_tokens") or _count(details, "cache_write_tokens"))
    cached = min(cached, prompt)
    written = min(written, prompt - cached)
    reasoning = min(_count(usage.get("completion_tokens_details"), "reasoning_tokens"),
                    completion)
    return Tokens(prompt, completion, cached, written, reasoning)
