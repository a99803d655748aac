"""Teams and their money: who a client is, what it may do, what it spent.

``Tenants`` is what the request path calls: ``authenticate`` (the key), ``admit`` (every limit
and budget in one Redis round trip), ``settle`` (never blocks: corrects tokens, adds spend,
writes the ledger, frees the parallel slot). Beside it: ``auth`` (the key to its tenant; bound
as ``tenants.authenticate``), ``admin`` (key and team administration, usage queries;
``tenants.admin``), ``request`` (one request's tenancy), ``spend`` (budgets' counters and
micro-dollars).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from redis.asyncio import Redis

from gateway.errors import ErrorCode, GatewayError
from gateway.eventloop import running_loop
from gateway.observability.accesslog import AccessLog
from gateway.observability.metrics import Metrics
from gateway.pricing import Tokens
from gateway.redis_client import open_redis
from gateway.settings import Settings
from gateway.tenants.admin import TenantAdmin
from gateway.tenants.admission import (
    ANONYMOUS,
    Admission,
    Tenant,
    rate_headers,
    retry_after,
)
from gateway.tenants.alerts import AlertSender, BudgetAlert, Webhook, parse_webhooks
from gateway.tenants.auth import Authenticator
from gateway.tenants.buffer import STORE_ERRORS
from gateway.tenants.keys import (
    KeyLimits,
    env_keys,
    load_key_file,
)
from gateway.tenants.ledger import (
    Ledger,
    RedisLedger,
    SqliteLedger,
)
from gateway.tenants.limits import (
    LUA,
    PREFIX,
    WINDOW_S,
    Budget,
    Decision,
    GiveBack,
    Kind,
    LimitPlan,
    LimitsScript,
    MemoryLimiter,
    RedisLimiter,
    Refusal,
    Window,
    ledger_day,
    window_key,
)
from gateway.tenants.request import RequestTenancy
from gateway.tenants.sharing import persistence_warning
from gateway.tenants.spend import as_micros, period_budgets, seed_spend, spent_of
from gateway.tenants.store import KeyStore, RedisKeys, SqliteKeys
from gateway.tenants.teams import (
    RedisTeams,
    SqliteTeams,
    TeamRecord,
    TeamStore,
    load_team_file,
)

__all__ = ["Tenants"]

logger = logging.getLogger("gateway.tenants")

RETRY_STORE_S = 1.0
OVERLAP_FRESH_S = 5.0  # how long a decision's headroom may be trusted
OVERLAP_MARGIN = 0.1  # the share of every limit that must stay free to overlap


@dataclass(slots=True)
class Headroom:
    """What a key could still take, by its last decision, before coming near a limit."""

    until: float
    requests: float
    tokens: float

    def take(self, estimated_tokens: int) -> bool:
        if time.monotonic() >= self.until or self.requests < 1 or self.tokens < estimated_tokens:
            return False
        self.requests -= 1
        self.tokens -= estimated_tokens
        return True


def headroom(plan: LimitPlan, decision: Decision) -> Headroom | None:
    """None if any budget has less than ``OVERLAP_MARGIN`` of itself left."""
    for budget in (*plan.budgets, *plan.shared_budgets):
        spent = spent_of(budget, decision)
        if budget.limit_micros - spent < OVERLAP_MARGIN * budget.limit_micros:
            return None
    left = {Kind.REQUESTS: float("inf"), Kind.TOKENS: float("inf")}
    if plan.max_parallel is not None:
        left[Kind.REQUESTS] = (plan.max_parallel - decision.in_flight
                               - OVERLAP_MARGIN * plan.max_parallel)
    for state in decision.states:
        limit = state.window.limit
        free = limit - state.used - OVERLAP_MARGIN * limit
        left[state.window.kind] = min(left[state.window.kind], free)
    return Headroom(time.monotonic() + OVERLAP_FRESH_S, left[Kind.REQUESTS], left[Kind.TOKENS])


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a key's limits make of a model's requests on one UTC day, but the token estimate."""

    limits: KeyLimits
    day: int
    windows: tuple[Window, ...]  # token windows' cost is the request's estimate
    parallel_key: str | None
    max_parallel: int | None
    parallel_ttl_s: int
    budgets: list[Budget]
    spend: list[Budget]  # both periods' spend counters, budget or not (the team's too)
    shared: list[Budget]  # the team's budgets
    team: TeamRecord | None = None


def _fulfil(future: asyncio.Future[Admission], admission: Admission | None = None, *,
            error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(admission)  # type: ignore[arg-type]


def _money(micros: int) -> str:
    return f"${Decimal(micros).scaleb(-6):f}"


class Tenants:
    def __init__(self, settings: Settings, metrics: Metrics, store: KeyStore,
                 limiter: RedisLimiter | MemoryLimiter, ledger: Ledger, access: AccessLog,
                 redis: Redis | None, teams: TeamStore | None = None) -> None:
        self.settings = settings
        self.teams = teams or TeamStore([], None)
        self.metrics = metrics
        self.store = store
        self.limiter = limiter
        self.ledger = ledger
        self.access = access
        self._redis = redis
        self._down_until = 0.0
        self._outage = False
        self._warned: set[tuple[str, str, str]] = set()
        self.overlap = settings.limits_overlap and isinstance(limiter, RedisLimiter)
        self._headroom: dict[tuple[str, str], Headroom] = {}
        self._shapes: dict[tuple[str, str], _Shape] = {}
        self.webhooks = tuple(parse_webhooks(settings.alert_webhooks_csv, settings.alert_format))
        self.alerts = AlertSender(redis, retry_base_s=settings.alert_retry_base_s)
        self.admin = TenantAdmin(settings, store, self.teams, ledger)
        self.auth = Authenticator(store, self.teams, settings.auth_required)
        self.authenticate = self.auth.authenticate  # bound once: no extra call frame per request

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics) -> Tenants:
        """Raises ``KeyFileError`` for a bad ``GATEWAY_KEYS_FILE`` (start-up stops)."""
        static = env_keys(settings.api_keys)
        static_teams: list[TeamRecord] = []
        if settings.keys_file:
            static += load_key_file(settings.keys_file)
            static_teams = load_team_file(settings.keys_file)
        drop_ledger = metrics.child(metrics.tenant_writes_dropped, "ledger").inc
        drop_limits = metrics.child(metrics.tenant_writes_dropped, "limits").inc
        redis: Redis | None = None
        limiter: RedisLimiter | MemoryLimiter
        ledger: Ledger
        if settings.redis_url:
            timeout = settings.limits_redis_timeout_s
            redis = open_redis(settings.redis_url, timeout)
            store = KeyStore(static, RedisKeys(redis))
            limiter = RedisLimiter(LimitsScript(redis, LUA), on_drop=drop_limits)
            ledger = RedisLedger(redis, on_drop=drop_ledger, max_end_users=settings.max_end_users)
            teams = TeamStore(static_teams, RedisTeams(redis))
        else:
            store = KeyStore(static, SqliteKeys(settings.tenants_db))
            memory = limiter = MemoryLimiter()
            ledger = SqliteLedger(settings.tenants_db, on_drop=drop_ledger,
                                  max_end_users=settings.max_end_users)
            teams = TeamStore(static_teams, SqliteTeams(settings.tenants_db))
            seed_spend(memory, ledger)
        return cls(settings, metrics, store, limiter, ledger, AccessLog(settings.access_log),
                   redis, teams)

    async def check_store(self) -> None:
        """At start-up: warn when the Redis holding the ledger would lose it on a restart."""
        if self._redis is not None:
            warning = await persistence_warning(self._redis)
            if warning is not None:
                logger.warning("%s", warning)

    # The request path

    async def admit(self, tenant: Tenant, model: str, estimated_tokens: int) -> Admission:
        return await self.begin(tenant, model, estimated_tokens)

    def unlimited(self, tenant: Tenant, model: str, end_user: str = "") -> Admission | None:
        """The admission of a request with nothing to check, made at once: the anonymous
        tenant's, or a key's whose key, team and end users have no window, parallel cap or
        budget (a model either may not use is refused here). None when there are limits to
        check (``begin``). Such an admission is settled without a limits call too: only the
        ledger and the spend counters are written when the request closes."""
        admission = Admission(tenant, model, 0, end_user=end_user)
        if tenant.anonymous:
            return admission
        limits = tenant.limits
        if not limits.allows(model):
            self.metrics.child(self.metrics.tenant_refusals, "model").inc()
            raise GatewayError(ErrorCode.MODEL_NOT_ALLOWED,
                               f"This API key may not use the model {model!r}.", param="model")
        shape = self._shape_for(tenant, model)
        team = shape.team
        if team is not None and not team.allows(model):
            self.metrics.child(self.metrics.tenant_refusals, "model").inc()
            raise GatewayError(ErrorCode.MODEL_NOT_ALLOWED,
                               f"Team {team.name!r} may not use the model {model!r}.",
                               param="model")
        if shape.windows or shape.max_parallel is not None or shape.budgets or shape.shared \
                or (end_user and limits.end_user_limited):
            return None
        return admission

    def begin(self, tenant: Tenant, model: str, estimated_tokens: int,
              end_user: str = "") -> asyncio.Future[Admission]:
        """An admission's start, done before this returns: a model the key may not use is
        refused here, and the limits check is on its way to Redis (so an overlapped check
        leaves before the upstream call). The future holds the admission or its refusal."""
        future: asyncio.Future[Admission] = running_loop().create_future()
        free = self.unlimited(tenant, model, end_user)
        if free is not None:
            future.set_result(free)
            return future
        admission = Admission(tenant, model, estimated_tokens, end_user=end_user)
        plan = self._plan(tenant, model, estimated_tokens, end_user)
        if plan.empty:
            future.set_result(admission)
            return future
        admission.plan = plan
        if time.monotonic() < self._down_until:
            future.set_result(self._without_store(admission, None))
            return future
        self.limiter.submit(plan, functools.partial(self._conclude, admission, plan, future))
        return future

    def _conclude(self, admission: Admission, plan: LimitPlan, future: asyncio.Future[Admission],
                  outcome: Decision | BaseException) -> None:
        """The limiter's answer, turned into the admission (or its refusal) in ``future``."""
        tenant, model = admission.tenant, admission.model
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, STORE_ERRORS):
                _fulfil(future, error=outcome)
                return
            self._down_until = time.monotonic() + RETRY_STORE_S
            try:
                _fulfil(future, self._without_store(admission, outcome))
            except GatewayError as refused:
                _fulfil(future, error=refused)
            return
        decision = outcome
        if self._outage:
            self._outage = False
            logger.warning("limits: the store is reachable again; limits and budgets apply")
        admission.decision = decision
        if self.overlap:
            room = headroom(plan, decision) if decision.refusal is None else None
            if room is None:
                self._headroom.pop((tenant.id, model), None)
            else:
                if len(self._headroom) > 10_000:
                    self._headroom.clear()
                self._headroom[(tenant.id, model)] = room
        if decision.key_version is not None:
            self.store.saw_version(decision.key_version)
        self._watch_budgets(tenant, plan, decision)
        if future.done():  # its request was cancelled while the check was out
            if decision.refusal is None and plan.parallel_key:
                self.limiter.give_back(plan.parallel_key, None, -1, plan.parallel_ttl_s)
            return
        if decision.refusal is not None:
            _fulfil(future, error=self._refused(tenant, decision))
        else:
            _fulfil(future, admission)

    def may_overlap(self, tenant: Tenant, model: str, estimated_tokens: int,
                    end_user: str = "") -> bool:
        """Whether this request's limits may be checked while its upstream call is already on
        its way: only with Redis (a round trip worth hiding), and only for a key whose last
        decision, under five seconds old, left every window and budget at least a tenth free after
        what this worker has overlapped since. The check itself is the same one."""
        if not self.overlap or tenant.anonymous or not tenant.limits.allows(model):
            return False
        team = self.teams.get(tenant.team)
        if team is not None and not team.allows(model):
            return False
        if end_user and tenant.limits.end_user_limited:
            return False
        room = self._headroom.get((tenant.id, model))
        return room is not None and room.take(estimated_tokens)

    def settle(self, admission: Admission, *, prompt_tokens: int, completion_tokens: int,
               cost: Decimal, saved: Decimal, error: bool, model: str | None = None,
               tokens: Tokens | None = None) -> None:
        """``model``: the one that answered, if not the one admitted (fallbacks)."""
        if admission.settled:
            return
        admission.settled = True
        tenant = admission.tenant
        micros = as_micros(cost)
        plan, decision = admission.plan, admission.decision
        returns: list[GiveBack] = []
        if plan is not None and decision is not None and decision.refusal is None:
            actual = prompt_tokens + completion_tokens
            for w in plan.windows:
                if w.kind is Kind.TOKENS:
                    returns.append((w.key, str(decision.second), actual - w.cost, WINDOW_S + 1))
            if plan.parallel_key:
                returns.append((plan.parallel_key, None, -1, plan.parallel_ttl_s))
        if not tenant.anonymous and micros:
            for budget in self._shape_for(tenant, admission.model).spend:
                returns.append((budget.key, None, micros, budget.ttl_s))
            for budget in self._end_user_budgets(tenant, admission.end_user):
                returns.append((budget.key, None, micros, budget.ttl_s))
        if returns:
            self.limiter.give_back_all(returns)
        day = ledger_day()
        self.ledger.add((day, tenant.id, tenant.team or "", model or admission.model,
                         admission.end_user),
                        [1, int(error), prompt_tokens, completion_tokens, micros,
                         as_micros(saved), tokens.cached if tokens else 0,
                         tokens.written if tokens else 0, tokens.reasoning if tokens else 0])

    async def aclose(self) -> None:
        self.access.flush()
        await self.alerts.aclose()
        await self.teams.aclose()
        await self.limiter.aclose()
        await self.ledger.aclose()
        await self.store.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    def tenancy(self, route: str, headers: Mapping[str, str],
                tenant: Tenant = ANONYMOUS) -> RequestTenancy:
        """A request's tenancy, opened before anything can fail so that every request, refused
        ones included, gets its access log line; anonymous until authenticated."""
        return RequestTenancy(self, tenant, route, headers)

    # Limits

    def _plan(self, tenant: Tenant, model: str, estimated_tokens: int,
              end_user: str = "") -> LimitPlan:
        """The key's limits for this request: its windows and budgets are worked out once per
        key, model and UTC day (then only the token estimate changes); the end user's, when the
        key limits its end users, are added for each request."""
        shape = self._shape_for(tenant, model)
        windows = [w if w.kind is Kind.REQUESTS else Window(w.key, w.kind, w.limit,
                                                            estimated_tokens, w.model, w.owner)
                   for w in shape.windows]
        shared = shape.shared
        limits = tenant.limits
        if end_user and limits.end_user_limited:
            owner = f"end user {end_user!r}"
            if limits.end_user_rpm is not None:
                windows.append(Window(f"{PREFIX}rl:{tenant.id}:u:{end_user}:requests",
                                      Kind.REQUESTS, limits.end_user_rpm, 1, None, owner))
            shared = [*shared, *self._end_user_budgets(tenant, end_user)]
        return LimitPlan(windows, shape.parallel_key, shape.max_parallel,
                         shape.parallel_ttl_s, shape.budgets, shared)

    def _end_user_budgets(self, tenant: Tenant, end_user: str) -> list[Budget]:
        """The end user's budgets on this key: counted only for the periods the key sets, so a
        client sending a new ``user`` per request adds no Redis keys on a key without them,
        and on a key with them one small counter per end user and period (expiring with it)."""
        limits = tenant.limits
        if not end_user or (limits.end_user_budget_daily_usd is None
                            and limits.end_user_budget_monthly_usd is None):
            return []
        return [b for b in period_budgets(f"{PREFIX}spend:{tenant.id}:u:{end_user}",
                                          limits.end_user_budget_daily_usd,
                                          limits.end_user_budget_monthly_usd,
                                          owner=f"end user {end_user!r}", scope="end_user")
                if b.limit_micros >= 0]

    def _shape_for(self, tenant: Tenant, model: str) -> _Shape:
        """The key's shape for ``model`` today, worked out again when its limits or the day
        change."""
        day = int(time.time() // 86400)
        shape = self._shapes.get((tenant.id, model))
        team = self.teams.get(tenant.team)
        if shape is None or shape.limits is not tenant.limits or shape.day != day or \
                shape.team is not team:
            if len(self._shapes) > 10_000:
                self._shapes.clear()
            shape = self._shapes[(tenant.id, model)] = self._shape(tenant, model, day)
        return shape

    def _shape(self, tenant: Tenant, model: str, day: int) -> _Shape:
        limits = tenant.limits
        windows: list[Window] = []
        if limits.rpm is not None:
            windows.append(Window(window_key(tenant.id, Kind.REQUESTS), Kind.REQUESTS,
                                  limits.rpm, 1))
        if limits.tpm is not None:
            windows.append(Window(window_key(tenant.id, Kind.TOKENS), Kind.TOKENS, limits.tpm,
                                  0))
        per_model = limits.for_model(model)
        if per_model is not None:
            if per_model.rpm is not None:
                windows.append(Window(window_key(tenant.id, Kind.REQUESTS, model), Kind.REQUESTS,
                                      per_model.rpm, 1, model))
            if per_model.tpm is not None:
                windows.append(Window(window_key(tenant.id, Kind.TOKENS, model), Kind.TOKENS,
                                      per_model.tpm, 0, model))
        team = self.teams.get(tenant.team)
        team_budgets: list[Budget] = []
        if tenant.team:
            owner = f"team {tenant.team!r}"
            team_budgets = period_budgets(
                f"{PREFIX}team:{tenant.team}:spend",
                team.budget_daily_usd if team else None,
                team.budget_monthly_usd if team else None, owner=owner, scope="team")
            if team is not None and team.rpm is not None:
                windows.append(Window(f"{PREFIX}team:{tenant.team}:rl:requests", Kind.REQUESTS,
                                      team.rpm, 1, None, owner))
            if team is not None and team.tpm is not None:
                windows.append(Window(f"{PREFIX}team:{tenant.team}:rl:tokens", Kind.TOKENS,
                                      team.tpm, 0, None, owner))
        parallel = limits.max_parallel is not None
        return _Shape(limits, day, tuple(windows),
                      f"{PREFIX}par:{tenant.id}" if parallel else None, limits.max_parallel,
                      int(self.settings.timeout_s) + 60, self._budgets(tenant),
                      [*self._budgets(tenant, spend_only=True), *team_budgets],
                      [b for b in team_budgets if b.limit_micros >= 0], team)

    def _budgets(self, tenant: Tenant, *, spend_only: bool = False) -> list[Budget]:
        """The key's budgets now (``spend_only``: both periods' counters, budget or not, so a
        budget set later starts from the real spend)."""
        limits = tenant.limits
        found = period_budgets(f"{PREFIX}spend:{tenant.id}", limits.budget_daily_usd,
                               limits.budget_monthly_usd)
        return found if spend_only else [b for b in found if b.limit_micros >= 0]

    def _without_store(self, admission: Admission, exc: BaseException | None) -> Admission:
        closed = self.settings.limits_fail_closed
        self.metrics.child(self.metrics.limits_unavailable,
                           "fail_closed" if closed else "fail_open").inc()
        if not self._outage:
            self._outage = True
            logger.warning("limits: the store is unreachable (%s); %s until it is back",
                           type(exc).__name__ if exc else "down",
                           "refusing limited keys (503)" if closed
                           else "admitting without limits or budgets")
        if closed:
            raise GatewayError(ErrorCode.LIMITS_UNAVAILABLE,
                               "Rate limits cannot be checked right now; retry shortly.",
                               headers={"Retry-After": "1"})
        return admission

    def _watch_budgets(self, tenant: Tenant, plan: LimitPlan, decision: Decision) -> None:
        """The key's and its team's budgets past the soft ratio, or spent: once per crossing,
        a metric, a log line and an alert to the webhooks (queued, sent in the background)."""
        ratio = self.settings.budget_soft_ratio
        for budget in (*plan.budgets, *plan.shared_budgets):
            if budget.scope == "end_user":
                continue
            spent = spent_of(budget, decision)
            level = ("exhausted" if spent >= budget.limit_micros
                     else "soft" if spent >= ratio * budget.limit_micros else None)
            if level is None:
                continue
            mark = (budget.key, level)
            if mark in self._warned:
                continue
            if len(self._warned) > 100_000:
                self._warned.clear()
            self._warned.add(mark)
            self.metrics.child(self.metrics.budget_threshold, budget.period, level).inc()
            who = (f"team {tenant.team}" if budget.scope == "team"
                   else f"key {tenant.id} (team {tenant.team or '-'})")
            logger.warning("budget: %s has %s its %s budget: %s of %s", who,
                           "spent" if level == "exhausted" else f"passed {ratio:.0%} of",
                           budget.period, _money(spent), _money(budget.limit_micros))
            self.alerts.notify(BudgetAlert(
                "refused" if level == "exhausted" else "soft",
                "team" if budget.scope == "team" else "key",
                None if budget.scope == "team" else tenant.id,
                None if budget.scope == "team" else tenant.name, tenant.team, budget.period,
                spent, budget.limit_micros, budget.resets_at, f"{budget.key}:{level}"),
                self._webhooks_for(tenant))

    def _webhooks_for(self, tenant: Tenant) -> tuple[Webhook, ...]:
        """``GATEWAY_ALERT_WEBHOOKS`` and the team's own."""
        team = self.teams.get(tenant.team)
        if team is None or not team.alert_webhooks:
            return self.webhooks
        return (*self.webhooks, *parse_webhooks(",".join(team.alert_webhooks),
                                                self.settings.alert_format))

    def _refused(self, tenant: Tenant, decision: Decision) -> GatewayError:
        reason = decision.refusal
        assert reason is not None
        self.metrics.child(self.metrics.tenant_refusals, reason.value).inc()
        headers = rate_headers(decision.states)
        headers["Retry-After"] = retry_after(decision.retry_after_s)
        if decision.refused_budget is not None:
            budget = decision.refused_budget
            spent = spent_of(budget, decision)
            whose = budget.owner or f"key {tenant.name!r}"
            return GatewayError(
                ErrorCode.INSUFFICIENT_QUOTA,
                f"The {budget.period} budget of {_money(budget.limit_micros)} for {whose} "
                f"is spent ({_money(spent)}); "
                f"it resets at {budget.resets_at.isoformat().replace('+00:00', 'Z')}.",
                headers=headers)
        if reason is Refusal.PARALLEL:
            return GatewayError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"Key {tenant.name!r} already has its maximum of {tenant.limits.max_parallel} "
                "requests in flight.", headers=headers)
        window = decision.refused_window
        assert window is not None
        unit = "requests" if window.kind is Kind.REQUESTS else "tokens"
        scope = f" for model {window.model!r}" if window.model else ""
        whose = window.owner or f"key {tenant.name!r}"
        if window.cost > window.limit:
            message = (f"This request's estimated {window.cost} tokens exceed {whose}'s "
                       f"limit of {window.limit} tokens per minute{scope}.")
        else:
            message = (f"Rate limit reached for {whose}{scope}: {window.limit} "
                       f"{unit} per minute. Retry in {headers['Retry-After']}s.")
        return GatewayError(ErrorCode.RATE_LIMIT_EXCEEDED, message, headers=headers)
