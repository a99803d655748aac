"""Requests and tokens per minute, parallel requests and budgets: checked and taken together, in
ONE Redis round trip (a Lua script, so replicas cannot interleave), or in process without Redis.

Rate limits are sliding windows of 60 s at one-second resolution: a limit counts what was taken
in the last 60 whole seconds (per-second buckets in a Redis hash, summed by the script), so "60
requests a minute" admits exactly 60 in any minute, however the requests spread over replicas.
Time is Redis's own clock (``TIME``), so replicas' clocks do not matter. Tokens are taken from
an estimate when a request is admitted and corrected with the real usage when it ends.

Budgets are UTC calendar periods: the day from 00:00 UTC, the month from the 1st, 00:00 UTC.
Spend is counted in integer micro-dollars (the cost each client was told, rounded half up). A
request is admitted while the spend is below the budget, so the request that crosses it is the
last one served; overshoot is bounded by what was already in flight when it crossed.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from redis.asyncio import Redis

from .buffer import MergeBuffer
from .store import REDIS_VERSION as KEY_VERSION  # bumped by the key store on every change

WINDOW_S = 60
PREFIX = "gw:tenant:"


class Kind(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"


class Refusal(StrEnum):
    RPM = "rpm"
    TPM = "tpm"
    PARALLEL = "parallel"
    BUDGET_DAILY = "budget_daily"
    BUDGET_MONTHLY = "budget_monthly"


@dataclass(frozen=True, slots=True)
class Window:
    """One sliding-window limit and what this request takes from it."""

    key: str
    kind: Kind
    limit: int
    cost: int
    model: str | None = None  # set for a per-model limit


@dataclass(frozen=True, slots=True)
class Budget:
    period: str  # daily | monthly
    key: str
    limit_micros: int
    resets_at: datetime
    ttl_s: int


@dataclass(slots=True)
class LimitPlan:
    windows: list[Window]
    parallel_key: str | None = None
    max_parallel: int | None = None
    parallel_ttl_s: int = 600
    budgets: list[Budget] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.windows and self.max_parallel is None and not self.budgets


@dataclass(slots=True)
class WindowState:
    window: Window
    used: int
    reset_s: float


@dataclass(slots=True)
class Decision:
    refusal: Refusal | None
    retry_after_s: float
    second: int  # the bucket this request was counted in
    states: list[WindowState]
    spent_micros: dict[str, int]  # period -> spend so far
    key_version: int | None  # the key store's version (Redis), for the key cache
    refused_window: Window | None = None
    refused_budget: Budget | None = None


@functools.lru_cache(maxsize=4)
def _periods_of_day(epoch_day: int) -> tuple[str, datetime, str, datetime]:
    return _periods(datetime.fromtimestamp(epoch_day * 86400, UTC))


def budget_periods(now: datetime | None = None) -> tuple[str, datetime, str, datetime]:
    """(day tag, next UTC midnight, month tag, first of next month), all UTC; worked out once
    a day (it is on every request's path)."""
    if now is None:
        return _periods_of_day(int(time.time() // 86400))
    return _periods(now)


@functools.lru_cache(maxsize=4)
def _iso_day(epoch_day: int) -> str:
    return datetime.fromtimestamp(epoch_day * 86400, UTC).date().isoformat()


def ledger_day() -> str:
    """Today (UTC) as the ledger writes it, e.g. ``2026-11-25``."""
    return _iso_day(int(time.time() // 86400))


def _periods(now: datetime) -> tuple[str, datetime, str, datetime]:
    day = now.strftime("%Y%m%d")
    next_day = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    month = now.strftime("%Y%m")
    next_month = (datetime(now.year + 1, 1, 1, tzinfo=UTC) if now.month == 12
                  else datetime(now.year, now.month + 1, 1, tzinfo=UTC))
    return day, next_day, month, next_month


def window_key(tenant_id: str, kind: Kind, model: str | None = None) -> str:
    suffix = f":{model}" if model else ""
    return f"{PREFIX}rl:{tenant_id}:{kind.value}{suffix}"


# KEYS: n window hashes, then the parallel counter, the daily and monthly spend (always
# present; a limit of -1 means "no such limit") and the key store's version. ARGV: n, window
# seconds, max parallel, parallel TTL, daily and monthly budgets in micro-dollars, then
# (limit, cost) per window. Returns {status, refused index, retry ms, second, daily spend,
# monthly spend, key version, (used, reset ms) per window}; status 0 admitted, 1 window,
# 2 parallel, 3 daily, 4 monthly.
LUA = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local max_par = tonumber(ARGV[3])
local par_ttl = tonumber(ARGV[4])
local day_limit = tonumber(ARGV[5])
local month_limit = tonumber(ARGV[6])
local day_spent = tonumber(redis.call('GET', KEYS[n + 2]) or '0')
local month_spent = tonumber(redis.call('GET', KEYS[n + 3]) or '0')
local status, refused, retry_ms = 0, 0, 0
if day_limit >= 0 and day_spent >= day_limit then
  status = 3
elseif month_limit >= 0 and month_spent >= month_limit then
  status = 4
end
local parallel = 0
if status == 0 and max_par >= 0 then
  parallel = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
  if parallel < 0 then parallel = 0 end
  if parallel >= max_par then status = 2; retry_ms = 1000 end
end
local used = {}
local newest = {}
for i = 1, n do
  local key = KEYS[i]
  local limit = tonumber(ARGV[5 + 2 * i])
  local cost = tonumber(ARGV[6 + 2 * i])
  local flat = redis.call('HGETALL', key)
  local total, top = 0, 0
  local buckets = {}
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if s <= sec - win then
      redis.call('HDEL', key, flat[j])
    else
      local c = tonumber(flat[j + 1])
      total = total + c
      if s > top then top = s end
      buckets[#buckets + 1] = {s, c}
    end
  end
  used[i] = total
  newest[i] = top
  if status == 0 and total + cost > limit then
    status = 1
    refused = i
    retry_ms = win * 1000
    if cost <= limit then
      table.sort(buckets, function(a, b) return a[1] < b[1] end)
      local need, freed = total + cost - limit, 0
      for _, b in ipairs(buckets) do
        freed = freed + b[2]
        if freed >= need then retry_ms = (b[1] + win) * 1000 - now_ms; break end
      end
    end
  end
end
if status == 0 then
  for i = 1, n do
    local cost = tonumber(ARGV[6 + 2 * i])
    redis.call('HINCRBY', KEYS[i], sec, cost)
    redis.call('EXPIRE', KEYS[i], win + 1)
    used[i] = used[i] + cost
    newest[i] = sec
  end
  if max_par >= 0 then
    redis.call('SET', KEYS[n + 1], parallel + 1, 'EX', par_ttl)
  end
end
local version = tonumber(redis.call('GET', KEYS[n + 4]) or '0')
local out = {status, refused, retry_ms, sec, day_spent, month_spent, version}
for i = 1, n do
  out[#out + 1] = used[i]
  local reset = 0
  if newest[i] > 0 then reset = (newest[i] + win) * 1000 - now_ms end
  out[#out + 1] = reset
end
return out
"""


# What requests give back when they end, many at once: KEYS are counters, ARGV holds
# (hash field or '' for a plain counter, delta, TTL) per key. One command, one reply.
RETURNS_LUA = """
for i = 1, #KEYS do
  local field, delta, ttl = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  if field == '' then
    redis.call('INCRBY', KEYS[i], delta)
  else
    redis.call('HINCRBY', KEYS[i], field, delta)
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""


def _decision(plan: LimitPlan, raw: list[int]) -> Decision:
    status, refused, retry_ms, second, day, month, version = (int(v) for v in raw[:7])
    states = [WindowState(w, int(raw[7 + 2 * i]), max(0, int(raw[8 + 2 * i])) / 1000)
              for i, w in enumerate(plan.windows)]
    budgets = {b.period: b for b in plan.budgets}
    refusal: Refusal | None = None
    refused_window = refused_budget = None
    if status == 1:
        refused_window = plan.windows[refused - 1]
        refusal = Refusal.RPM if refused_window.kind is Kind.REQUESTS else Refusal.TPM
    elif status == 2:
        refusal = Refusal.PARALLEL
    elif status in (3, 4):
        refused_budget = budgets["daily" if status == 3 else "monthly"]
        refusal = Refusal.BUDGET_DAILY if status == 3 else Refusal.BUDGET_MONTHLY
        retry_ms = int(1000 * (refused_budget.resets_at - datetime.now(UTC)).total_seconds())
    return Decision(refusal, max(0, retry_ms) / 1000, second, states,
                    {"daily": day, "monthly": month}, version if version >= 0 else None,
                    refused_window, refused_budget)


def _budget_args(plan: LimitPlan) -> tuple[list[str], list[int]]:
    by_period = {b.period: b for b in plan.budgets}
    keys, limits = [], []
    for period in ("daily", "monthly"):
        budget = by_period.get(period)
        keys.append(budget.key if budget else f"{PREFIX}none")
        limits.append(budget.limit_micros if budget else -1)
    return keys, limits


class RedisLimiter:
    """Checks and takes every limit of a request in one script call; what a request gives back
    when it ends (unused tokens, its parallel slot, its spend) goes through a MergeBuffer."""

    def __init__(self, redis: Redis, *, on_drop: object = None) -> None:
        self._redis = redis
        self._script = redis.register_script(LUA)
        self._returns = redis.register_script(RETURNS_LUA)
        self.returns: MergeBuffer[tuple[str, str | None, int]] = MergeBuffer(
            self._write, name="limits", on_drop=on_drop)  # type: ignore[arg-type]

    async def check(self, plan: LimitPlan) -> Decision:
        budget_keys, budget_limits = _budget_args(plan)
        keys = [w.key for w in plan.windows] + [plan.parallel_key or f"{PREFIX}none",
                                                *budget_keys, KEY_VERSION]
        args: list[int] = [len(plan.windows), WINDOW_S,
                           plan.max_parallel if plan.max_parallel is not None else -1,
                           plan.parallel_ttl_s, *budget_limits]
        for w in plan.windows:
            args += [w.limit, w.cost]
        raw = await self._script(keys=keys, args=args)
        return _decision(plan, raw)

    def give_back(self, key: str, field_: str | None, delta: int, ttl_s: int) -> None:
        if delta:
            self.returns.add((key, field_, ttl_s), (delta,))

    async def _write(self, batch: dict[tuple[str, str | None, int], list[int]]) -> None:
        keys: list[str] = []
        args: list[str | int] = []
        for (key, field_, ttl_s), (delta,) in batch.items():
            keys.append(key)
            args += [field_ or "", delta, ttl_s]
        await self._returns(keys=keys, args=args)

    async def aclose(self) -> None:
        await self.returns.aclose()


class MemoryLimiter:
    """The same rules in this process only (no Redis): per worker, lost on restart."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}
        self._counters: dict[str, int] = {}

    async def check(self, plan: LimitPlan) -> Decision:
        now = time.time()
        sec = int(now)
        spent = {b.period: self._counters.get(b.key, 0) for b in plan.budgets}
        raw: list[int] = [0, 0, 0, sec, spent.get("daily", 0), spent.get("monthly", 0), -1]
        for b in plan.budgets:
            if raw[0] == 0 and spent[b.period] >= b.limit_micros:
                raw[0] = 3 if b.period == "daily" else 4
        parallel = max(0, self._counters.get(plan.parallel_key or "", 0))
        if raw[0] == 0 and plan.max_parallel is not None and parallel >= plan.max_parallel:
            raw[0], raw[2] = 2, 1000
        totals: list[tuple[int, int]] = []
        for i, w in enumerate(plan.windows, start=1):
            buckets = self._buckets.setdefault(w.key, {})
            for s in [s for s in buckets if s <= sec - WINDOW_S]:
                del buckets[s]
            total = sum(buckets.values())
            totals.append((total, max(buckets, default=0)))
            if raw[0] == 0 and total + w.cost > w.limit:
                raw[0], raw[1], raw[2] = 1, i, WINDOW_S * 1000
                if w.cost <= w.limit:
                    need, freed = total + w.cost - w.limit, 0
                    for s in sorted(buckets):
                        freed += buckets[s]
                        if freed >= need:
                            raw[2] = int((s + WINDOW_S - now) * 1000)
                            break
        if raw[0] == 0:
            for i, w in enumerate(plan.windows):
                buckets = self._buckets[w.key]
                buckets[sec] = buckets.get(sec, 0) + w.cost
                totals[i] = (totals[i][0] + w.cost, sec)
            if plan.max_parallel is not None and plan.parallel_key:
                self._counters[plan.parallel_key] = parallel + 1
        for total, newest in totals:
            raw += [total, int((newest + WINDOW_S - now) * 1000) if newest else 0]
        return _decision(plan, raw)

    def give_back(self, key: str, field_: str | None, delta: int, ttl_s: int) -> None:
        if field_ is None:
            self._counters[key] = self._counters.get(key, 0) + delta
        else:
            buckets = self._buckets.get(key)
            second = int(field_)
            if buckets is not None and second in buckets:
                buckets[second] += delta

    async def aclose(self) -> None:
        return None
