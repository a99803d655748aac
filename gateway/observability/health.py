"""What ``GET /health`` reports: requests served, mean latency, uptime, upstream as last seen.

Counts are per worker process: a load balancer probes one worker at a time anyway.
"""

from __future__ import annotations

import time
from typing import Any


class ServiceStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.errors = 0
        self.latency_total_s = 0.0
        self.upstream_ok: bool | None = None
        self.upstream_seen_at: float | None = None
        self.upstream_error: str | None = None

    def record_request(self, seconds: float, ok: bool) -> None:
        self.requests += 1
        self.latency_total_s += seconds
        if not ok:
            self.errors += 1

    def record_upstream(self, ok: bool, error: str | None = None) -> None:
        """Called after every upstream exchange; a refused request still proves reachability."""
        self.upstream_ok = ok
        self.upstream_seen_at = time.time()
        if not ok:
            self.upstream_error = error

    def problems(self, breakers: dict[str, str], default_chain: list[str]) -> list[str]:
        """Why the gateway cannot answer now, if it cannot."""
        problems = []
        if default_chain and all(breakers.get(name) == "open" for name in default_chain):
            problems.append("every circuit breaker of the default model's chain is open: "
                            + ", ".join(default_chain))
        if self.upstream_ok is False:
            problems.append(f"the last upstream call failed: {self.upstream_error}")
        return problems

    def snapshot(self, breakers: dict[str, str], default_chain: list[str]) -> dict[str, Any]:
        """``status`` is ``degraded`` (still HTTP 200: a load balancer must not pull every
        replica because the provider is down) with the ``problems`` when nothing can answer."""
        mean_ms = 1000 * self.latency_total_s / self.requests if self.requests else 0.0
        problems = self.problems(breakers, default_chain)
        return {
            "status": "degraded" if problems else "healthy",
            "problems": problems,
            "requests_served": self.requests,
            "errors": self.errors,
            "mean_latency_ms": round(mean_ms, 3),
            "uptime_s": round(time.time() - self.started, 3),
            "upstream": {
                "reachable": self.upstream_ok,
                "last_seen": self.upstream_seen_at,
                "last_error": self.upstream_error,
            },
            "breakers": breakers,
        }
