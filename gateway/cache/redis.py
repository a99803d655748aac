"""The shared store: entries live in Redis with a TTL, so every replica sees them and a restart
keeps them. Works with plain Redis 7 (no modules).

Redis is a cache here, never a dependency: every call has a short timeout, a failure makes the
cache miss (fail open), bumps a metric, logs at most one line per ``log_every_s``, and skips
Redis for ``retry_s`` before trying again, so a dead Redis costs requests nothing but a miss.
redis-py reconnects by itself on the next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from gateway.redis_client import open_redis

logger = logging.getLogger("gateway.cache")

PREFIX = "gw:cache:"


class RedisStore:
    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        timeout_s: float = 0.1,
        retry_s: float = 1.0,
        log_every_s: float = 30.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._redis = open_redis(url, timeout_s)
        self._ttl_ms = int(ttl_s * 1000)
        self._retry_s = retry_s
        self._log_every_s = log_every_s
        self._on_error = on_error
        self._down_until = 0.0
        self._logged_at = 0.0

    def entries(self) -> int | None:
        """Unknown without a round trip; Redis's own INFO keyspace has it."""
        return None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            value = await self._redis.get(PREFIX + key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> None:
        if not self.available:
            return
        try:
            await self._redis.set(PREFIX + key, value, px=self._ttl_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    async def delete(self, key: str) -> None:
        if not self.available:
            return
        try:
            await self._redis.delete(PREFIX + key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self._retry_s
        if self._on_error is not None:
            self._on_error()
        if now - self._logged_at >= self._log_every_s:
            self._logged_at = now
            logger.warning("cache: Redis unavailable (%s); serving without it, retrying in %.0f s",
                           type(exc).__name__, self._retry_s)

    async def aclose(self) -> None:
        await self._redis.aclose()
