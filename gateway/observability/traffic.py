"""This worker's recent traffic in minute buckets for the last hour, fed where the access log
line is written: counts, errors, cache results, fallbacks and two latency sketches (added by the
gateway, spent upstream).

Bounded by construction (60 buckets, each a few fixed-size integer lists) and cheap on the hot
path: one ``bisect`` per sketch and a few integer increments, no allocation once a minute's
bucket exists. Per worker: each worker sees only the requests it served.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

MINUTES = 60
MAX_MODELS = 200  # model names come from the catalog, but a bound costs nothing
# Sketch bucket upper bounds in ms, ~12 % apart from 0.05 ms to ~5 min; the quantile read
# back is the bucket's upper bound, so it is at most ~12 % high.
BOUNDS: tuple[float, ...] = tuple(0.05 * 1.12 ** i for i in range(160))


class CacheResult:
    EXACT = "hit"
    SEMANTIC = "semantic-hit"
    COALESCED = "coalesced"
    MISS = "miss"


def quantiles(counts: list[int], *qs: float) -> list[float | None]:
    """The ``qs`` quantiles of a sketch, each as its bucket's upper bound in ms (None if
    empty). One cumulative sum and a bisect per quantile, both in C: the page asks for
    hundreds of these every few seconds."""
    running = list(accumulate(counts))
    total = running[-1] if running else 0
    if not total:
        return [None] * len(qs)
    top = len(BOUNDS) - 1
    return [round(BOUNDS[min(bisect_left(running, q * total), top)], 3) for q in qs]


def quantile(counts: list[int], q: float) -> float | None:
    return quantiles(counts, q)[0]


@dataclass(slots=True)
class Minute:
    start: int  # epoch minute
    requests: int = 0
    errors: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    coalesced: int = 0
    misses: int = 0
    added: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    upstream: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    summary: dict[str, Any] | None = None  # set by the reader once the minute is over


@dataclass(slots=True)
class ModelEvents:
    """What the access log saw of one model: fallbacks away from it, its last error."""

    fallbacks: list[tuple[float, str]] = field(default_factory=list)  # (time, served model)
    last_error: tuple[float, int, str] | None = None  # (time, status, error code)


class RecentTraffic:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minutes: list[Minute | None] = [None] * MINUTES
        self._models: dict[str, ModelEvents] = {}

    def add(self, *, status: int, latency_ms: float, upstream_ms: float, cache: str | None,
            requested: str | None, served: str | None, error_code: str | None) -> None:
        now = self._clock()
        minute = int(now // 60)
        slot = minute % MINUTES
        bucket = self._minutes[slot]
        if bucket is None or bucket.start != minute:
            bucket = self._minutes[slot] = Minute(minute)
        bucket.requests += 1
        if status >= 400:
            bucket.errors += 1
        if cache == CacheResult.EXACT:
            bucket.exact_hits += 1
        elif cache == CacheResult.SEMANTIC:
            bucket.semantic_hits += 1
        elif cache == CacheResult.COALESCED:
            bucket.coalesced += 1
        elif cache == CacheResult.MISS:
            bucket.misses += 1
        bucket.added[bisect_left(BOUNDS, max(0.0, latency_ms - upstream_ms))] += 1
        if upstream_ms > 0:
            bucket.upstream[bisect_left(BOUNDS, upstream_ms)] += 1
        fell_back = bool(served) and served != requested
        failed = status >= 500 and error_code is not None
        if requested is None or not (fell_back or failed):
            return
        events = self._models.get(requested)
        if events is None:
            if len(self._models) >= MAX_MODELS:
                return
            events = self._models[requested] = ModelEvents()
        if fell_back:
            events.fallbacks.append((now, served or ""))
            if len(events.fallbacks) > 1000:
                del events.fallbacks[:500]
        if failed:
            events.last_error = (now, status, error_code or "")

    def minutes(self) -> list[Minute]:
        """The last hour's buckets, oldest first, with empty minutes filled in."""
        current = int(self._clock() // 60)
        found = {b.start: b for b in self._minutes if b is not None}
        return [found.get(m) or Minute(m) for m in range(current - MINUTES + 1, current + 1)]

    def models(self) -> dict[str, dict[str, Any]]:
        """Per requested model: fallbacks in the last hour (to which models) and the last
        error the gateway answered with for it."""
        horizon = self._clock() - 60 * MINUTES
        out: dict[str, dict[str, Any]] = {}
        for name, events in self._models.items():
            recent = [served for at, served in events.fallbacks if at >= horizon]
            to: dict[str, int] = {}
            for served in recent:
                to[served] = to.get(served, 0) + 1
            error = None
            if events.last_error is not None:
                at, status, code = events.last_error
                error = {"at": at, "status": status, "code": code}
            out[name] = {"fallbacks_last_hour": len(recent), "fallbacks_to": to,
                         "last_error": error}
        return out
