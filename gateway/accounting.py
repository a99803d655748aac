"""One request's books: tokens to dollars, the ``/health`` counters and the metrics, in one place."""

from __future__ import annotations

import time
from decimal import Decimal

from .errors import GatewayError
from .health import ServiceStats
from .metrics import Metrics
from .pricing import cost_usd, read_usage
from .router import Served
from .schemas import Usage
from .tenants import RequestTenancy


class RequestBook:
    """Opened when a request arrives, closed exactly once when its last byte is sent."""

    __slots__ = (
        "_closed",
        "_metrics",
        "_stats",
        "endpoint",
        "model",
        "overhead_s",
        "started",
        "tenancy",
        "upstream_s",
    )

    def __init__(self, stats: ServiceStats, metrics: Metrics, endpoint: str) -> None:
        self._stats = stats
        self._metrics = metrics
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.model = ""
        self.upstream_s = 0.0
        self.overhead_s: float | None = None
        self._closed = False
        self.tenancy: RequestTenancy | None = None

    def elapsed_ms(self) -> float:
        return round(1000 * (time.monotonic() - self.started), 3)

    def served(self, requested: str, served: Served) -> None:
        self.model = served.name
        self.upstream_s = served.upstream_s
        if self.tenancy is not None:
            self.tenancy.attempts = served.attempts
        if served.name != requested:
            self._metrics.observe_fallback(requested, served.name)

    def charge(self, served: Served, usage: object) -> tuple[Usage, Decimal | None]:
        """Price the upstream's usage (input and output separately) and count it; an answer
        from the cache cost nothing upstream."""
        tokens = read_usage(usage)
        if tokens is None:
            return Usage(), None
        prompt, completion = tokens
        if served.cached:
            cost = Decimal(0)
        else:
            cost = cost_usd(served.entry, prompt, completion)
            self._metrics.observe_usage(served.name, prompt, completion, cost)
        if self.tenancy is not None:
            self.tenancy.charged(prompt, completion, cost,
                                 cost_usd(served.entry, prompt, completion) if served.cached
                                 else Decimal(0))
        return Usage(prompt_tokens=prompt, completion_tokens=completion,
                     total_tokens=prompt + completion), cost

    def first_chunk(self) -> None:
        """For streams the gateway's overhead is what it added before the first byte."""
        ttft = time.monotonic() - self.started
        self._metrics.observe_ttft(self.model, ttft)
        self.overhead_s = max(0.0, ttft - self.upstream_s)

    def close(self, status: int = 200, error: GatewayError | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        total = time.monotonic() - self.started
        ok = error is None and status < 400
        self._stats.record_request(total, ok)
        overhead = self.overhead_s if self.overhead_s is not None else total - self.upstream_s
        self._metrics.observe_request(
            self.endpoint, self.model, error.status if error else status, total,
            overhead, error.type if error else None)
        if self.tenancy is not None:
            self.tenancy.close(status=error.status if error else status,
                               error_code=error.code if error else None, latency_ms=1000 * total,
                               upstream_ms=1000 * self.upstream_s, served=self.model)
