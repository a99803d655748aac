"""What the dashboard shows, read from the gateway's own sources and nothing else: the spend
ledger (cluster-wide, the same query as ``/admin/usage``), the key store, this worker's access
log ring and recent-traffic buckets, and the router's breakers.

Nothing here runs per request: each function runs when the page asks (every few seconds), and
the ledger read is shared by the panels that need it for ``LEDGER_MEMO_S``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.observability.traffic import Minute, quantiles
from gateway.routing.router import Router
from gateway.tenants.ledger import COUNTS, GroupBy, Row, UsageQuery

if TYPE_CHECKING:
    from gateway.tenants import Tenants
    from gateway.tenants.admin import TenantAdmin
    from gateway.tenants.keys import KeyRecord

SPEND_DAYS = 30
LEDGER_MEMO_S = 2.0
BUDGET_ALERT = 0.8
PER_WORKER = "worker"
CLUSTER = "cluster"
EMPTY_LATENCIES = ("added_p50_ms", "added_p99_ms", "upstream_p50_ms", "upstream_p99_ms")
ALL_GROUPS = (GroupBy.DAY, GroupBy.KEY, GroupBy.TEAM, GroupBy.MODEL)


def _usd(value: Decimal) -> str:
    return f"{value:f}"


def spend_window(today: date) -> tuple[date, date]:
    """The spend chart's days: the last ``SPEND_DAYS`` UTC days, today included."""
    return today - timedelta(days=SPEND_DAYS - 1), today


class LedgerView:
    """One ledger read (day × key × team × model) shared by the panels for a moment."""

    def __init__(self, admin: TenantAdmin) -> None:
        self._admin = admin
        self._memo: tuple[float, date, list[Row]] | None = None

    async def rows(self, today: date) -> tuple[date, list[Row]]:
        """Rows from the earlier of the spend window's first day and the month's first day
        (monthly budgets) to today."""
        start = min(spend_window(today)[0], today.replace(day=1))
        now = time.monotonic()
        memo = self._memo
        if memo is not None and memo[1] == today and now - memo[0] < LEDGER_MEMO_S:
            return start, memo[2]
        rows = await self._admin.usage(UsageQuery(start, today, group_by=ALL_GROUPS))
        self._memo = (now, today, rows)
        return start, rows


def _names(keys: list[KeyRecord]) -> dict[str, dict[str, Any]]:
    """Key id -> what the page may show of it: name, team, display prefix (never a hash)."""
    return {k.id: {"name": k.name, "team": k.team, "prefix": k.prefix} for k in keys}


async def spend(view: LedgerView, admin: TenantAdmin, today: date) -> dict[str, Any]:
    first, last = spend_window(today)
    _, rows = await view.rows(today)
    days = [(first + timedelta(days=i)).isoformat() for i in range(SPEND_DAYS)]
    index = {d: i for i, d in enumerate(days)}
    names = _names(await admin.keys())
    series: dict[str, dict[str, list[Decimal]]] = {"model": {}, "key": {}, "team": {}}
    totals = dict.fromkeys(COUNTS[:4], 0)
    cost = saved = Decimal(0)
    for row in rows:
        i = index.get(str(row["day"]))
        if i is None:
            continue
        amount = Decimal(str(row["cost_usd"]))
        for dim in ("model", "key", "team"):
            label = str(row[dim]) or "(no team)"
            series[dim].setdefault(label, [Decimal(0)] * SPEND_DAYS)[i] += amount
        for name in totals:
            totals[name] += int(str(row[name]))
        cost += amount
        saved += Decimal(str(row["saved_usd"]))

    def stacked(dim: str) -> list[dict[str, Any]]:
        out = []
        for label, values in sorted(series[dim].items(), key=lambda kv: -sum(kv[1])):
            item: dict[str, Any] = {"id": label, "label": label,
                                    "total_usd": _usd(sum(values, Decimal(0))),
                                    "values_usd": [_usd(v) for v in values]}
            if dim == "key":
                shown = names.get(label)
                item["label"] = shown["name"] if shown else label
                item["prefix"] = shown["prefix"] if shown else ""
            out.append(item)
        return out

    return {"scope": CLUSTER, "source": "ledger", "from": first.isoformat(),
            "to": last.isoformat(), "days": days,
            "totals": {**totals, "cost_usd": _usd(cost), "saved_usd": _usd(saved)},
            "by_model": stacked("model"), "by_key": stacked("key"), "by_team": stacked("team")}


def _latencies(added: list[int], upstream: list[int]) -> dict[str, float | None]:
    a50, a99 = quantiles(added, 0.5, 0.99)
    u50, u99 = quantiles(upstream, 0.5, 0.99)
    return {"added_p50_ms": a50, "added_p99_ms": a99, "upstream_p50_ms": u50,
            "upstream_p99_ms": u99}


def _minute(m: Minute, current: int) -> dict[str, Any]:
    """A minute's numbers; a finished minute never changes, so they are computed once."""
    if m.summary is not None:
        return m.summary
    summary = _summarise(m)
    if m.start < current and m.requests:
        m.summary = summary
    return summary


def _summarise(m: Minute) -> dict[str, Any]:
    if not m.requests:
        return {"t": m.start * 60, "requests": 0, "errors": 0, "error_rate": None,
                **dict.fromkeys(EMPTY_LATENCIES)}
    return {"t": m.start * 60, "requests": m.requests, "errors": m.errors,
            "error_rate": round(m.errors / m.requests, 4), **_latencies(m.added, m.upstream)}


def _merge(minutes: list[Minute], attr: str) -> list[int]:
    sketches = [getattr(m, attr) for m in minutes if m.requests]
    return [sum(column) for column in zip(*sketches, strict=True)] if sketches else []


def traffic(tenants: Tenants) -> dict[str, Any]:
    minutes = tenants.access.traffic.minutes()
    requests = sum(m.requests for m in minutes)
    errors = sum(m.errors for m in minutes)
    added, upstream = _merge(minutes, "added"), _merge(minutes, "upstream")
    return {"scope": PER_WORKER, "worker_pid": os.getpid(), "window_minutes": len(minutes),
            "minutes": [_minute(m, minutes[-1].start) for m in minutes],
            "hour": {"requests": requests, "errors": errors,
                     "error_rate": round(errors / requests, 4) if requests else None,
                     **_latencies(added, upstream)}}


async def cache(view: LedgerView, tenants: Tenants, today: date) -> dict[str, Any]:
    minutes = tenants.access.traffic.minutes()
    exact = sum(m.exact_hits for m in minutes)
    semantic = sum(m.semantic_hits for m in minutes)
    coalesced = sum(m.coalesced for m in minutes)
    misses = sum(m.misses for m in minutes)
    lookups = exact + semantic + coalesced + misses
    first, _ = spend_window(today)
    _, rows = await view.rows(today)
    saved_30d = saved_today = Decimal(0)
    for row in rows:
        if str(row["day"]) >= first.isoformat():
            saved_30d += Decimal(str(row["saved_usd"]))
        if row["day"] == today.isoformat():
            saved_today += Decimal(str(row["saved_usd"]))
    return {"hour": {"scope": PER_WORKER, "worker_pid": os.getpid(), "lookups": lookups,
                     "exact_hits": exact, "semantic_hits": semantic, "coalesced": coalesced,
                     "misses": misses,
                     "exact_hit_rate": round(exact / lookups, 4) if lookups else None,
                     "semantic_hit_rate": round(semantic / lookups, 4) if lookups else None},
            "saved": {"scope": CLUSTER, "source": "ledger", "today_usd": _usd(saved_today),
                      "last_30_days_usd": _usd(saved_30d)}}


async def budgets(view: LedgerView, admin: TenantAdmin, today: date) -> dict[str, Any]:
    """Each live key's budgets against its spend in the ledger (today; this month), the
    fullest first, so the ones over 80 % lead."""
    _, rows = await view.rows(today)
    month = today.replace(day=1).isoformat()
    daily: dict[str, Decimal] = {}
    monthly: dict[str, Decimal] = {}
    team_daily: dict[str, Decimal] = {}
    team_monthly: dict[str, Decimal] = {}
    for row in rows:
        key, day, amount = str(row["key"]), str(row["day"]), Decimal(str(row["cost_usd"]))
        team = str(row.get("team") or "")
        if day >= month:
            monthly[key] = monthly.get(key, Decimal(0)) + amount
            team_monthly[team] = team_monthly.get(team, Decimal(0)) + amount
        if day == today.isoformat():
            daily[key] = daily.get(key, Decimal(0)) + amount
            team_daily[team] = team_daily.get(team, Decimal(0)) + amount
    items = []
    for team_record in await admin.team_records():  # the whole team's bar, all its keys
        for period, limit, spent in (("daily", team_record.budget_daily_usd, team_daily),
                                     ("monthly", team_record.budget_monthly_usd, team_monthly)):
            if limit is None:
                continue
            used = spent.get(team_record.name, Decimal(0))
            ratio = float(used / limit) if limit else (1.0 if used else 0.0)
            items.append({"key_id": None, "name": "(whole team)", "team": team_record.name,
                          "prefix": "", "scope": "team", "period": period,
                          "budget_usd": _usd(limit), "spent_usd": _usd(used),
                          "percent_used": round(100 * ratio, 2), "alert": ratio >= BUDGET_ALERT})
    now = datetime.now(UTC)
    for record in await admin.keys():
        if record.revoked_at is not None or (record.expires_at and record.expires_at <= now):
            continue
        for period, limit, spent in (("daily", record.limits.budget_daily_usd, daily),
                                     ("monthly", record.limits.budget_monthly_usd, monthly)):
            if limit is None:
                continue
            used = spent.get(record.id, Decimal(0))
            ratio = float(used / limit) if limit else (1.0 if used else 0.0)
            items.append({"key_id": record.id, "name": record.name, "team": record.team,
                          "prefix": record.prefix, "scope": "key", "period": period,
                          "budget_usd": _usd(limit),
                          "spent_usd": _usd(used), "percent_used": round(100 * ratio, 2),
                          "alert": ratio >= BUDGET_ALERT})
    items.sort(key=lambda b: (-b["percent_used"], b["name"]))
    return {"scope": CLUSTER, "source": "ledger", "alert_ratio": BUDGET_ALERT, "data": items}


def breaker_view(router: Router) -> dict[str, dict[str, Any]]:
    """Breaker states per model and per deployment (provider, weight, calls in flight), as the
    router reports them for ``/health``."""
    return {
        name: {"state": model["state"],
               "deployments": [{"name": deployment, **detail}
                               for deployment, detail in model["deployments"].items()]}
        for name, model in router.deployment_health().items()
    }


def health(tenants: Tenants, router: Router) -> dict[str, Any]:
    models = breaker_view(router)
    events = tenants.access.traffic.models()
    rows = []
    for name in sorted(set(models) | set(events)):
        breaker = models.get(name, {"state": "unknown", "deployments": []})
        seen = events.get(name, {})
        rows.append({"model": name, "state": breaker["state"],
                     "deployments": breaker["deployments"],
                     "fallbacks_last_hour": seen.get("fallbacks_last_hour", 0),
                     "fallbacks_to": seen.get("fallbacks_to", {}),
                     "last_error": seen.get("last_error")})
    rows.sort(key=lambda r: ({"open": 0, "half_open": 1}.get(r["state"], 2),
                             -r["fallbacks_last_hour"], r["model"]))
    return {"scope": PER_WORKER, "worker_pid": os.getpid(), "data": rows}


def recent(tenants: Tenants) -> dict[str, Any]:
    entries = tenants.access.snapshot()
    entries.reverse()
    return {"scope": PER_WORKER, "worker_pid": os.getpid(),
            "capacity": tenants.access.recent.maxlen, "data": entries}
