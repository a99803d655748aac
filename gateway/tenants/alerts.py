"""Budget alerts by webhook: when a key or a team passes its soft threshold, and when it is
refused for budget, each configured URL gets one JSON POST (or Slack's incoming-webhook shape).

Never on the request path: ``notify`` only queues; one background task posts, retrying with
exponential backoff while a receiver fails (a connection error, 429 or 5xx). With Redis, one
replica claims each crossing (``SET NX`` until the budget resets) so a fleet sends it once. The
body names the key by id and name, never its secret or hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
import orjson
from redis.asyncio import Redis

from gateway.tenants.buffer import STORE_ERRORS

logger = logging.getLogger("gateway.tenants")

CLAIM = "gw:alert:"
QUEUE_MAX = 1000
ATTEMPTS = 6
Format = Literal["json", "slack"]


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    format: Format = "json"


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """One crossing: ``level`` is ``soft`` (past the soft ratio) or ``refused`` (spent)."""

    level: Literal["soft", "refused"]
    scope: Literal["key", "team"]
    key_id: str | None
    key_name: str | None
    team: str | None
    period: str
    spent_micros: int
    limit_micros: int
    resets_at: datetime
    claim: str  # the crossing's identity: the budget's counter and the level

    def body(self) -> dict[str, Any]:
        return {
            "type": "budget.soft_threshold" if self.level == "soft" else "budget.refused",
            "scope": self.scope,
            "key": {"id": self.key_id, "name": self.key_name} if self.key_id else None,
            "team": self.team,
            "budget": {"period": self.period, "limit_usd": _usd(self.limit_micros)},
            "spent_usd": _usd(self.spent_micros),
            "resets_at": _iso(self.resets_at),
            "time": _iso(datetime.now(UTC)),
        }

    def slack(self) -> dict[str, Any]:
        who = (f"Team *{self.team}*" if self.scope == "team"
               else f"Key *{self.key_name}* (`{self.key_id}`"
               + (f", team {self.team})" if self.team else ")"))
        what = ("has passed the soft threshold of" if self.level == "soft"
                else "is refused: it has spent")
        return {"text": f"{who} {what} its {self.period} budget: "
                        f"${_usd(self.spent_micros)} of ${_usd(self.limit_micros)}; "
                        f"it resets at {_iso(self.resets_at)}."}


def _usd(micros: int) -> str:
    return f"{Decimal(micros).scaleb(-6):f}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_webhooks(csv: str, default: Format) -> list[Webhook]:
    """``GATEWAY_ALERT_WEBHOOKS``: comma-separated URLs; ``slack:`` before one sends it Slack's
    shape whatever ``GATEWAY_ALERT_FORMAT`` says."""
    hooks = []
    for raw in csv.split(","):
        url = raw.strip()
        if not url:
            continue
        fmt: Format = default
        if url.startswith("slack:"):
            url, fmt = url.removeprefix("slack:"), "slack"
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"GATEWAY_ALERT_WEBHOOKS: {url[:40]!r} is not an http(s) URL")
        hooks.append(Webhook(url, fmt))
    return hooks


class AlertSender:
    """Queues alerts and posts them from one background task."""

    def __init__(self, redis: Redis | None, *, retry_base_s: float = 0.5,
                 timeout_s: float = 5.0) -> None:
        self._redis = redis
        self._retry_base_s = retry_base_s
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[tuple[BudgetAlert, tuple[Webhook, ...]]] = asyncio.Queue(
            QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.sent = 0
        self.failed = 0

    def notify(self, alert: BudgetAlert, hooks: tuple[Webhook, ...]) -> None:
        """Queue ``alert`` for ``hooks``; never waits, never raises."""
        if not hooks:
            return
        try:
            self._queue.put_nowait((alert, hooks))
        except asyncio.QueueFull:
            logger.warning("alerts: the queue is full; a %s alert is dropped", alert.level)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            alert, hooks = await self._queue.get()
            try:
                if await self._claimed(alert):
                    await asyncio.gather(*(self._post(alert, hook) for hook in hooks))
            except Exception:  # an alert must never take the sender down
                logger.exception("alerts: an alert could not be sent")
            finally:
                self._queue.task_done()

    async def _claimed(self, alert: BudgetAlert) -> bool:
        """Whether this replica sends the alert: the first to claim it, with Redis."""
        if self._redis is None:
            return True
        ttl = max(60, int((alert.resets_at - datetime.now(UTC)).total_seconds()) + 60)
        try:
            return bool(await self._redis.set(CLAIM + alert.claim, 1, nx=True, ex=ttl))
        except STORE_ERRORS:
            return True  # better twice than never

    async def _post(self, alert: BudgetAlert, hook: Webhook) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        body = orjson.dumps(alert.slack() if hook.format == "slack" else alert.body())
        for attempt in range(ATTEMPTS):
            try:
                answer = await self._client.post(
                    hook.url, content=body, headers={"content-type": "application/json"})
                if answer.status_code < 400:
                    self.sent += 1
                    return
                if answer.status_code != 429 and answer.status_code < 500:
                    break  # the receiver refuses this body: sending it again will not help
            except httpx.HTTPError:
                pass
            await asyncio.sleep(self._retry_base_s * 2 ** attempt)
        self.failed += 1
        logger.warning("alerts: the webhook %s did not take a %s alert",
                       httpx.URL(hook.url).host, alert.level)

    async def drain(self) -> None:
        """Wait until everything queued was sent or given up (tests, shutdown)."""
        await self._queue.join()

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()
