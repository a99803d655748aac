"""Budgets' money: the spend counters' names and periods, dollars as micro-dollars, and the
counters' seeding from the ledger at start-up.

Apart from ``Tenants`` because both the request path (admission plans, settlement) and start-up
(``seed_spend``) use them, and they are plain functions of their arguments.
"""

from __future__ import annotations

from decimal import Decimal

from gateway.pricing import to_micro
from gateway.tenants.ledger import OTHER_END_USERS, SqliteLedger
from gateway.tenants.limits import (
    PREFIX,
    Budget,
    Decision,
    MemoryLimiter,
    budget_periods,
    ledger_day,
)


def as_micros(amount: Decimal) -> int:
    """Dollars to integer micro-dollars, rounded half up as the client's cost header is."""
    return int(to_micro(amount) * 1_000_000)


def spent_of(budget: Budget, decision: Decision) -> int:
    """What a decision says was spent against one of its plan's budgets."""
    if budget.scope == "key":
        return decision.spent_micros.get(budget.period, 0)
    return decision.shared_spent.get(budget.key, 0)


def seed_spend(limiter: MemoryLimiter, ledger: SqliteLedger) -> None:
    """Budgets' spend so far today and this month, from the ledger: without Redis the counters
    live in memory, and a restart must not hand every key, team or end user its budget again.
    (An end user the ledger filed under ``(other)`` starts again from zero.)"""
    day, _, month, _ = budget_periods()
    today = ledger_day()
    month_start = today[:8] + "01"
    counters: list[tuple[str, tuple[int, int]]] = []
    for (key_id,), spent in ledger.spend(today, month_start).items():
        counters.append((f"{PREFIX}spend:{key_id}", spent))
    for (team,), spent in ledger.spend(today, month_start, by="team").items():
        if team:
            counters.append((f"{PREFIX}team:{team}:spend", spent))
    for (key_id, user), spent in ledger.spend(today, month_start, by="key_id, end_user").items():
        if user and user != OTHER_END_USERS:
            counters.append((f"{PREFIX}spend:{key_id}:u:{user}", spent))
    for prefix, (spent_today, spent_month) in counters:
        limiter.give_back(f"{prefix}:d:{day}", None, spent_today, 0)
        limiter.give_back(f"{prefix}:m:{month}", None, spent_month, 0)


def spend_key(key_id: str, tag: str) -> str:
    """A budget period's spend counter (``tag``: ``d:YYYYMMDD`` or ``m:YYYYMM``)."""
    return f"{PREFIX}spend:{key_id}:{tag}"


def period_budgets(prefix: str, daily: Decimal | None, monthly: Decimal | None, *,
                   owner: str | None = None, scope: str = "key") -> list[Budget]:
    """Both periods' budgets under ``prefix`` (a limit of -1 where there is none)."""
    day, next_day, month, next_month = budget_periods()
    return [Budget(period, f"{prefix}:{tag}", as_micros(amount) if amount is not None else -1,
                   resets, ttl, owner, scope)
            for period, tag, resets, amount, ttl in (
                ("daily", f"d:{day}", next_day, daily, 2 * 86400),
                ("monthly", f"m:{month}", next_month, monthly, 32 * 86400))]
