"""Where counts are shared, and where they are not: the configurations the gateway refuses or
warns about at start-up.

Without Redis, rate limits, parallel slots and budgets' spend are counted in each worker
process's memory (budgets' spend seeded from the SQLite ledger at start-up, so a restart keeps
it). Two workers would each admit a key's whole limit, so more than one worker with any limit
or budget configured, and no Redis, is refused. With Redis, counts are shared by every worker
and replica; a Redis that neither appends nor snapshots loses them, and the ledger, when it
restarts, so that gets a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.settings import Settings
from gateway.tenants.keys import KeyRecord
from gateway.tenants.store import stored_records

logger = logging.getLogger("gateway.tenants")


class UnsharedLimits(Exception):
    """A configuration whose limits or budgets would be counted per worker process."""


def worker_count(settings: Settings) -> int:
    if settings.workers == "cpu_count":
        return os.cpu_count() or 1
    return int(settings.workers)


def refuse_unshared_limits(settings: Settings, static_keys: Iterable[KeyRecord]) -> None:
    """Raises ``UnsharedLimits`` for more than one worker, no ``REDIS_URL`` and any limit or
    budget that could apply: a key file's key with one, an admin key (which can make them), or
    an admin-made key with one already in the SQLite key store."""
    workers = worker_count(settings)
    if settings.redis_url or workers <= 1:
        return
    limited = [k.id for k in static_keys if not k.limits.empty]
    stored = [] if limited or settings.admin_key else [
        k.id for k in stored_records(settings.tenants_db)
        if not k.limits.empty and k.revoked_at is None]
    if limited:
        why = f"key {limited[0]!r} in GATEWAY_KEYS_FILE has limits or budgets"
    elif settings.admin_key is not None:
        why = "GATEWAY_ADMIN_KEY is set, so keys with limits and budgets can be made"
    elif stored:
        why = f"admin-made key {stored[0]!r} in {settings.tenants_db} has limits or budgets"
    else:
        return
    raise UnsharedLimits(
        f"GATEWAY_WORKERS={settings.workers} ({workers} worker processes) without REDIS_URL: "
        f"{why}, and without Redis each worker counts rate limits, parallel requests and "
        "budget spend on its own, so every worker would admit a key's whole limit. Set "
        "REDIS_URL to share the counts, or run GATEWAY_WORKERS=1 (scale with replicas that "
        "share a Redis).")


async def persistence_warning(redis: Redis) -> str | None:
    """What to warn about this Redis's persistence, or None if it appends or snapshots."""
    try:
        appendonly = await redis.config_get("appendonly")
        save = await redis.config_get("save")
    except RedisError as exc:  # managed Redis often renames or forbids CONFIG
        logger.info("limits: cannot read Redis's persistence settings (%s); make sure it "
                    "persists (AOF) or the ledger is lost with it", type(exc).__name__)
        return None
    aof = _text(appendonly.get("appendonly", appendonly.get(b"appendonly", "")))
    snapshots = _text(save.get("save", save.get(b"save", "")))
    if aof == "yes" or snapshots.strip():
        return None
    return ("REDIS_URL's Redis does not persist (appendonly no, save \"\"): when it restarts, "
            "the ledger, budgets' spend and admin-made keys are lost. Turn on AOF "
            "(appendonly yes).")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
