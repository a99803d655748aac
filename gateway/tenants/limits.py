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

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.eventloop import running_loop
from gateway.tenants.buffer import MergeBuffer
from gateway.tenants.store import REDIS_VERSION as KEY_VERSION

WINDOW_S = 60
PREFIX = "gw:tenant:"
NONE_KEY = f"{PREFIX}none"  # stands for a limit the key does not have


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
    owner: str | None = None  # whose limit, when not the key's own: "team 'red'", "end user 'u1'"


@dataclass(frozen=True, slots=True)
class Budget:
    period: str  # daily | monthly
    key: str
    limit_micros: int
    resets_at: datetime
    ttl_s: int
    owner: str | None = None  # whose budget, when not the key's own (see ``Window.owner``)
    scope: str = "key"  # key | team | end_user


@dataclass(slots=True)
class LimitPlan:
    windows: list[Window]
    parallel_key: str | None = None
    max_parallel: int | None = None
    parallel_ttl_s: int = 600
    budgets: list[Budget] = field(default_factory=list)
    shared_budgets: list[Budget] = field(default_factory=list)  # the team's, the end user's

    @property
    def empty(self) -> bool:
        return (not self.windows and self.max_parallel is None and not self.budgets
                and not self.shared_budgets)


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
    in_flight: int  # the key's requests in flight, this one included if admitted (max_parallel)
    refused_window: Window | None = None
    refused_budget: Budget | None = None
    shared_spent: dict[str, int] = field(default_factory=dict)  # shared budget's key -> spend


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


# One call carries a batch: what ended requests give back, then every waiting request's check.
# KEYS[1]: the key store's version. ARGV[1]: JSON {"r": [[key, hash field or "", delta, ttl]],
# "q": [[parallel key, max parallel, parallel TTL, daily key, daily limit, monthly key, monthly
# limit, [[window key, limit, cost]], [[shared budget key, limit]]]]}; a limit of -1 means "no
# such limit"; shared budgets are the team's and the end user's, checked with the key's own
# (windows are windows, whoever they belong to). ARGV[2]: the
# window in seconds. (The keys travel in the JSON, so a batch costs one small command to encode:
# fine on one Redis node, not on a cluster.) Returns JSON: per request, [status, refused index,
# retry ms, second, daily spend, monthly spend, key version, requests in flight, (used, reset
# ms) per window, spend per shared budget];
# status 0 admitted, 1 window, 2 parallel, 3 daily, 4 monthly, 5 shared budget (refused index).
#
# A window is a hash: one field per second that took something, plus its running total "t",
# oldest second "o" and newest second "n", so a check reads three fields; the buckets are only
# read when the oldest has left the window (at most once a second a key) or to say when a
# refused request may retry.
LUA = """
local win = tonumber(ARGV[2])
local function rescan(key, sec)
  local flat = redis.call('HGETALL', key)
  local total, oldest, newest, buckets = 0, 0, 0, {}
  for j = 1, #flat, 2 do
    local f = flat[j]
    if f ~= 't' and f ~= 'o' and f ~= 'n' then
      local s = tonumber(f)
      if s <= sec - win then
        redis.call('HDEL', key, f)
      else
        local c = tonumber(flat[j + 1])
        total = total + c
        if oldest == 0 or s < oldest then oldest = s end
        if s > newest then newest = s end
        buckets[#buckets + 1] = {s, c}
      end
    end
  end
  redis.call('HSET', key, 't', total, 'o', oldest, 'n', newest)
  return total, oldest, newest, buckets
end

local p = cjson.decode(ARGV[1])
for _, r in ipairs(p.r) do
  local delta = string.format('%d', r[3])
  if r[2] == '' then
    redis.call('INCRBY', r[1], delta)
    redis.call('EXPIRE', r[1], r[4])
  elseif redis.call('HEXISTS', r[1], r[2]) == 1 then
    redis.call('HINCRBY', r[1], r[2], delta)
    redis.call('HINCRBY', r[1], 't', delta)
  end
end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for qi, q in ipairs(p.q) do
  local max_par, par_ttl, day_limit, month_limit = q[2], q[3], q[5], q[7]
  local windows = q[8]
  local n = #windows
  local shared = q[9] or {}
  local names = {q[4], q[6], q[1]}
  for i = 1, #shared do names[3 + i] = shared[i][1] end
  local counters = redis.call('MGET', unpack(names))
  local day_spent = tonumber(counters[1] or '0')
  local month_spent = tonumber(counters[2] or '0')
  local status, refused, retry_ms = 0, 0, 0
  if day_limit >= 0 and day_spent >= day_limit then
    status = 3
  elseif month_limit >= 0 and month_spent >= month_limit then
    status = 4
  end
  local shared_spent = {}
  for i = 1, #shared do
    local spent = tonumber(counters[3 + i] or '0')
    shared_spent[i] = spent
    if status == 0 and spent >= shared[i][2] then
      status = 5
      refused = i
    end
  end
  local parallel = 0
  if status == 0 and max_par >= 0 then
    parallel = tonumber(counters[3] or '0')
    if parallel < 0 then parallel = 0 end
    if parallel >= max_par then status = 2; retry_ms = 1000 end
  end
  local used, oldest, newest, current = {}, {}, {}, {}
  for i = 1, n do
    local key, limit, cost = windows[i][1], windows[i][2], windows[i][3]
    local m = redis.call('HMGET', key, 't', 'o', 'n', sec)
    local total, old, top = tonumber(m[1] or '0'), tonumber(m[2] or '0'), tonumber(m[3] or '0')
    if (old > 0 and old <= sec - win) or (not m[1] and redis.call('EXISTS', key) == 1) then
      total, old, top = rescan(key, sec)
    end
    used[i], oldest[i], newest[i], current[i] = total, old, top, tonumber(m[4] or '0')
    if status == 0 and total + cost > limit then
      status = 1
      refused = i
      retry_ms = win * 1000
      if cost <= limit then
        local _, _, _, buckets = rescan(key, sec)
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
      local key, cost = windows[i][1], windows[i][3]
      local total = string.format('%d', used[i] + cost)
      local bucket = string.format('%d', current[i] + cost)
      if oldest[i] == 0 then
        redis.call('HSET', key, sec, bucket, 't', total, 'o', sec, 'n', sec)
      elseif newest[i] < sec then
        redis.call('HSET', key, sec, bucket, 't', total, 'n', sec)
      else
        redis.call('HSET', key, sec, bucket, 't', total)
      end
      if newest[i] < sec then  -- at most once a second: nothing older than the window counts
        redis.call('EXPIRE', key, win + 1)
      end
      used[i] = used[i] + cost
      newest[i] = sec
    end
    if max_par >= 0 then
      parallel = parallel + 1
      redis.call('SET', q[1], parallel, 'EX', par_ttl)
    end
  end
  local row = {status, refused, retry_ms, sec, day_spent, month_spent, version, parallel}
  for i = 1, n do
    row[#row + 1] = used[i]
    local reset = 0
    if newest[i] > 0 then reset = (newest[i] + win) * 1000 - now_ms end
    row[#row + 1] = reset
  end
  for i = 1, #shared do row[#row + 1] = shared_spent[i] end
  out[qi] = row
end
return cjson.encode(out)
"""


def _decision(plan: LimitPlan, raw: list[int]) -> Decision:
    status, refused, retry_ms, second, day, month, version, parallel = map(int, raw[:8])
    states = [WindowState(w, int(raw[8 + 2 * i]), max(0, int(raw[9 + 2 * i])) / 1000)
              for i, w in enumerate(plan.windows)]
    budgets = {b.period: b for b in plan.budgets}
    refusal: Refusal | None = None
    refused_window = refused_budget = None
    if status == 1:
        refused_window = plan.windows[refused - 1]
        refusal = Refusal.RPM if refused_window.kind is Kind.REQUESTS else Refusal.TPM
    elif status == 2:
        refusal = Refusal.PARALLEL
    elif status in (3, 4, 5):
        refused_budget = (budgets["daily" if status == 3 else "monthly"] if status != 5
                          else plan.shared_budgets[refused - 1])
        refusal = (Refusal.BUDGET_DAILY if refused_budget.period == "daily"
                   else Refusal.BUDGET_MONTHLY)
        retry_ms = int(1000 * (refused_budget.resets_at - datetime.now(UTC)).total_seconds())
    at = 8 + 2 * len(plan.windows)
    shared = {b.key: int(v) for b, v in zip(plan.shared_budgets, raw[at:], strict=False)}
    return Decision(refusal, max(0, retry_ms) / 1000, second, states,
                    {"daily": day, "monthly": month}, version if version >= 0 else None, parallel,
                    refused_window, refused_budget, shared)


def _request(plan: LimitPlan) -> list[object]:
    """One request's check as the script reads it."""
    by_period = {b.period: b for b in plan.budgets}
    day, month = by_period.get("daily"), by_period.get("monthly")
    return [plan.parallel_key or NONE_KEY,
            plan.max_parallel if plan.max_parallel is not None else -1, plan.parallel_ttl_s,
            day.key if day else NONE_KEY, day.limit_micros if day else -1,
            month.key if month else NONE_KEY, month.limit_micros if month else -1,
            [[w.key, w.limit, w.cost] for w in plan.windows],
            [[b.key, b.limit_micros] for b in plan.shared_budgets]]


Return = tuple[str, str | None, int]
GiveBack = tuple[str, str | None, int, int]  # (key, field or None, delta, TTL in seconds)


Decided = Callable[[Decision | BaseException], None]


class LimitsScript:
    """The limits script on the gateway's one Redis client (redis-py, hiredis parsing): EVALSHA,
    and the script itself once when Redis answers ``NOSCRIPT`` (redis-py's ``Script`` does
    that). Failures are redis-py's own exceptions; the client's socket timeout bounds a call."""

    def __init__(self, redis: Redis, script: str) -> None:
        self._script = redis.register_script(script)
        self._running: set[asyncio.Task[bytes]] = set()

    def submit(self, keys: list[object], args: list[object]) -> asyncio.Task[bytes]:
        """The script's text, as a task: written to Redis on the loop's next turn."""
        task: asyncio.Task[bytes] = running_loop().create_task(
            self._script(keys=keys, args=args))  # type: ignore[arg-type]
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def call(self, keys: list[object], args: list[object],
             done: Callable[[bytes | BaseException], None]) -> None:
        """``done`` gets the script's text or the Redis error, once, after this returns."""
        self.submit(keys, args).add_done_callback(functools.partial(_deliver, done))

    async def aclose(self) -> None:
        """The client is shared and closed by its owner; calls still out are let finish."""
        if self._running:
            await asyncio.wait(self._running)


def _deliver(done: Callable[[bytes | BaseException], None], task: asyncio.Task[bytes]) -> None:
    if task.cancelled():
        done(ResponseError("the limits call was cancelled"))
    elif (error := task.exception()) is not None:
        done(error)
    else:
        done(task.result())


class RedisLimiter:
    """Checks and takes every limit of a request in one script call, and batches: the checks
    that arrive while a call is out (and what ended requests give back, kept in a MergeBuffer)
    go together in the next one, so under load one round trip and one small command serve many
    requests. With nothing out, a check goes to Redis on the event loop's next turn."""

    def __init__(self, wire: LimitsScript, *, on_drop: object = None) -> None:
        self._wire = wire
        self.returns: MergeBuffer[Return] = MergeBuffer(
            self._write, name="limits", on_drop=on_drop)  # type: ignore[arg-type]
        self._waiting: list[tuple[LimitPlan, Decided]] = []
        self._out = False  # a batch of checks is on its way

    def submit(self, plan: LimitPlan, decided: Decided) -> None:
        """``decided`` gets the decision or a Redis error, once, after this returns."""
        self._waiting.append((plan, decided))
        if not self._out:
            self._flush()

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        returns = self.returns.take()
        self._out = True
        payload = _payload(returns, [_request(plan) for plan, _ in batch])
        self._wire.call([KEY_VERSION], [payload, WINDOW_S],
                        functools.partial(self._answered, batch, returns))

    def _answered(self, batch: list[tuple[LimitPlan, Decided]],
                  returns: dict[Return, list[int]], reply: bytes | BaseException) -> None:
        self._out = False
        error = reply if isinstance(reply, BaseException) else None
        outcomes: list[Decision | BaseException] = []
        if error is None:
            try:
                rows = orjson.loads(reply)
                outcomes = [_decision(plan, row)
                            for (plan, _), row in zip(batch, rows, strict=True)]
            except (ValueError, TypeError, IndexError) as exc:
                error = ResponseError(f"the limits script's reply is malformed ({exc})")
        if error is not None:
            self.returns.restore(returns)
            outcomes = [error] * len(batch)
        for (_, decided), outcome in zip(batch, outcomes, strict=True):
            try:
                decided(outcome)
            except Exception as exc:  # one request's failure must not strand the others
                running_loop().call_exception_handler(
                    {"message": "a limits decision's handler failed", "exception": exc})
        if self._waiting:
            self._flush()

    def give_back(self, key: str, field_: str | None, delta: int, ttl_s: int) -> None:
        self.give_back_all([(key, field_, delta, ttl_s)])

    def give_back_all(self, returns: list[GiveBack]) -> None:
        """What a request returns when it ends, merged in one go (see ``give_back``)."""
        self.returns.add_all([((key, field_, ttl_s), (delta,))
                              for key, field_, delta, ttl_s in returns if delta])

    async def _write(self, batch: dict[Return, list[int]]) -> None:
        await self._wire.submit([KEY_VERSION], [_payload(batch, []), WINDOW_S])

    async def aclose(self) -> None:
        await self.returns.aclose()
        await self._wire.aclose()


def _payload(returns: dict[Return, list[int]], requests: list[list[object]]) -> bytes:
    return orjson.dumps({"r": [[key, field_ or "", delta, ttl_s]
                               for (key, field_, ttl_s), (delta,) in returns.items()],
                         "q": requests})


class MemoryLimiter:
    """The same rules in this process only (no Redis): per worker, lost on restart."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}
        self._counters: dict[str, int] = {}

    def submit(self, plan: LimitPlan, decided: Decided) -> None:
        """Decided before this returns."""
        decided(self._check(plan))

    def _check(self, plan: LimitPlan) -> Decision:
        now = time.time()
        sec = int(now)
        spent = {b.period: self._counters.get(b.key, 0) for b in plan.budgets}
        raw: list[int] = [0, 0, 0, sec, spent.get("daily", 0), spent.get("monthly", 0), -1, 0]
        for b in plan.budgets:
            if raw[0] == 0 and spent[b.period] >= b.limit_micros:
                raw[0] = 3 if b.period == "daily" else 4
        shared = [self._counters.get(b.key, 0) for b in plan.shared_budgets]
        for i, b in enumerate(plan.shared_budgets, start=1):
            if raw[0] == 0 and shared[i - 1] >= b.limit_micros:
                raw[0], raw[1] = 5, i
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
                parallel += 1
                self._counters[plan.parallel_key] = parallel
        raw[7] = parallel
        for total, newest in totals:
            raw += [total, int((newest + WINDOW_S - now) * 1000) if newest else 0]
        return _decision(plan, raw + shared)

    def give_back_all(self, returns: list[GiveBack]) -> None:
        for key, field_, delta, ttl_s in returns:
            self.give_back(key, field_, delta, ttl_s)

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
