"""One request's account: the record every stage's result goes into, the one place a price is
computed (whatever the route and however the answer came: upstream, cache hit, semantic hit,
coalesced, error), and the books that close once from it: ``/health`` counters, metrics, and the
tenancy's settlement, ledger and access log line.

A cached or coalesced answer costs 0 and *saves* what its tokens cost at the price of the model
(and deployment) that first answered; an upstream answer costs its tokens at the price of what
served it. Nothing else in the gateway multiplies tokens by a price.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import GatewayError
from gateway.observability.health import ServiceStats
from gateway.observability.metrics import Metrics
from gateway.plan.schemas import Usage
from gateway.pricing import Price, Tokens, read_tokens, tokens_cost_usd
from gateway.tenants.request import Outcome, RequestTenancy

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Charge:
    """What one answer's tokens came to: ``cost`` paid upstream, ``saved`` by the cache."""

    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    saved: Decimal
    tokens: Tokens | None = None  # the cached, written and reasoning counts among them

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)


class RequestAccount:
    """Opened when a request arrives (with its tenancy, the tenant stage's), filled in by the
    stages as they hand on (``answered_by``, ``charge``), closed exactly once when its last
    byte is sent."""

    __slots__ = ("_charge", "_closed", "_metrics", "_price", "_stats", "attempts", "cache",
                 "cached", "endpoint", "model", "overhead_s", "started", "tenancy", "upstream_s")

    def __init__(self, stats: ServiceStats, metrics: Metrics, endpoint: str,
                 tenancy: RequestTenancy | None = None) -> None:
        self._stats = stats
        self._metrics = metrics
        self.endpoint = endpoint
        self.tenancy = tenancy  # closed with the books: settlement, ledger, access log
        self.started = time.monotonic()
        self.model = ""
        self.upstream_s = 0.0
        self.overhead_s: float | None = None
        self.cached = False
        self.attempts = 0
        self.cache: str | None = None  # what the cache did: hit, miss, semantic, ...
        self._price: Price | None = None
        self._charge: Charge | None = None
        self._closed = False

    def elapsed_ms(self) -> float:
        return round(1000 * (time.monotonic() - self.started), 3)

    def answered_by(self, requested: str, served: str, price: Price, *, upstream_s: float = 0.0,
                    cached: bool = False, attempts: int = 0, cache: str | None = None) -> None:
        """Who answered, at what price, after how many upstream attempts and with what from the
        cache; a fallback is counted when it was not ``requested``."""
        self.model = served
        self._price = price
        self.upstream_s = upstream_s
        self.cached = cached
        self.attempts = attempts
        self.cache = cache
        if served != requested and not cached:
            self._metrics.observe_fallback(requested, served)

    def charge(self, usage: object) -> Charge | None:
        """Price the answer's usage, once (later calls return the same charge): None when the
        usage is missing or unreadable, so the gateway never guesses a price."""
        if self._charge is not None:
            return self._charge
        tokens = read_tokens(usage)
        if tokens is None or self._price is None:
            return None
        prompt, completion = tokens.prompt, tokens.completion
        worth = tokens_cost_usd(self._price, tokens)
        if self.cached:
            self._charge = Charge(prompt, completion, ZERO, worth, tokens)
        else:
            self._charge = Charge(prompt, completion, worth, ZERO, tokens)
        if self._closed:
            self._observe_charge(self._charge)
        return self._charge

    def _observe_charge(self, charge: Charge) -> None:
        """Counted when the account closes (after a complete answer's bytes are written): a
        metric write is among the costliest steps of a request run cold."""
        if self.cached:
            self._metrics.observe_cache_saved(charge.saved)
        else:
            self._metrics.observe_usage(self.model, charge.prompt_tokens,
                                        charge.completion_tokens, charge.cost)

    def first_chunk(self) -> None:
        """For streams the gateway's overhead is what it added before the first byte."""
        ttft = time.monotonic() - self.started
        self._metrics.observe_ttft(self.model, ttft)
        self.overhead_s = max(0.0, ttft - self.upstream_s)

    def close(self, status: int = 200, error: GatewayError | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._charge is not None:
            self._observe_charge(self._charge)
        total = time.monotonic() - self.started
        ok = error is None and status < 400
        self._stats.record_request(total, ok)
        overhead = self.overhead_s if self.overhead_s is not None else total - self.upstream_s
        self._metrics.observe_request(
            self.endpoint, self.model, error.status if error else status, total,
            overhead, error.type if error else None)
        if self.tenancy is not None:
            charge = self._charge
            self.tenancy.close(Outcome(
                status=error.status if error else status,
                error_code=error.code if error else None, latency_ms=1000 * total,
                upstream_ms=1000 * self.upstream_s, served=self.model, attempts=self.attempts,
                cache=self.cache,
                prompt_tokens=charge.prompt_tokens if charge else 0,
                completion_tokens=charge.completion_tokens if charge else 0,
                cost=charge.cost if charge else None,
                saved=charge.saved if charge else ZERO,
                tokens=charge.tokens if charge else None))
