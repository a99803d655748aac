"""Nearest earlier request, per scope: an exact search over unit vectors in process, kept in
step with Redis (when the cache lives there) so every replica can find what any replica stored.

Plain Redis 7 has no vector search, and an exact dot product over 10k × 384 float32 rows costs
about a millisecond, so each replica keeps the vectors in memory. Redis holds them as one
append-only stream (``gw:semantic``, packed float32, trimmed to the cache's size): a replica
loads it once at start and then reads only what was added since, at most every 100 ms.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from redis.exceptions import RedisError

from gateway.redis_client import open_redis

STREAM = "gw:semantic"


@dataclass
class _Scope:
    keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    expires: list[float] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    matrix: np.ndarray | None = None


@dataclass(slots=True)
class Neighbour:
    key: str
    text: str
    similarity: float


class VectorIndex:
    def __init__(self, max_entries: int) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._order: deque[tuple[str, str]] = deque()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._order)

    def add(self, scope: str, key: str, vector: np.ndarray, text: str, expires: float) -> None:
        entries = self._scopes.setdefault(scope, _Scope())
        if key in entries.keys:
            return
        entries.keys.append(key)
        entries.texts.append(text)
        entries.expires.append(expires)
        entries.rows.append(vector.astype(np.float32, copy=False))
        entries.matrix = None
        self._order.append((scope, key))
        while len(self._order) > self._max_entries:
            self.discard(*self._order[0])

    def discard(self, scope: str, key: str) -> None:
        entries = self._scopes.get(scope)
        if entries is not None and key in entries.keys:
            i = entries.keys.index(key)
            for column in (entries.keys, entries.texts, entries.expires, entries.rows):
                del column[i]
            entries.matrix = None
            if not entries.keys:
                del self._scopes[scope]
        try:
            self._order.remove((scope, key))
        except ValueError:
            pass

    def nearest(self, scope: str, vector: np.ndarray) -> Neighbour | None:
        entries = self._scopes.get(scope)
        if entries is None:
            return None
        now = time.time()
        for key in [k for k, e in zip(entries.keys, entries.expires, strict=True) if e < now]:
            self.discard(scope, key)
        entries = self._scopes.get(scope)
        if entries is None:
            return None
        if entries.matrix is None:
            entries.matrix = np.vstack(entries.rows)
        scores = entries.matrix @ vector
        best = int(np.argmax(scores))
        return Neighbour(entries.keys[best], entries.texts[best], float(scores[best]))


class RedisVectorLog:
    """The shared side of the index; fails open like the store (a failure = no semantic hit)."""

    def __init__(self, url: str, max_entries: int, *, timeout_s: float = 0.1,
                 on_error: Callable[[], None] | None = None, pull_every_s: float = 0.1) -> None:
        self._redis = open_redis(url, timeout_s)
        self._max_entries = max_entries
        self._on_error = on_error
        self._pull_every_s = pull_every_s
        self._last_id = "0-0"
        self._pulled_at = 0.0
        self._down_until = 0.0

    async def append(self, scope: str, key: str, vector: np.ndarray, text: str,
                     expires: float) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            await self._redis.xadd(STREAM, {"s": scope, "k": key, "t": text, "e": repr(expires),
                                            "v": vector.astype(np.float32).tobytes()},
                                   maxlen=self._max_entries, approximate=True)
        except (RedisError, OSError, TimeoutError):
            self._failed()

    async def pull(self, index: VectorIndex) -> None:
        """Add to ``index`` whatever any replica appended since the last pull."""
        now = time.monotonic()
        if now - self._pulled_at < self._pull_every_s or now < self._down_until:
            return
        self._pulled_at = now
        try:
            while True:
                batch = await self._redis.xread({STREAM: self._last_id}, count=1000)
                if not batch:
                    return
                _, entries = batch[0]
                for entry_id, fields in entries:
                    self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    expires = float(fields[b"e"])
                    if expires > time.time():
                        index.add(fields[b"s"].decode(), fields[b"k"].decode(),
                                  np.frombuffer(fields[b"v"], dtype=np.float32),
                                  fields[b"t"].decode(), expires)
                if len(entries) < 1000:
                    return
        except (RedisError, OSError, TimeoutError, KeyError, ValueError):
            self._failed()

    def _failed(self) -> None:
        self._down_until = time.monotonic() + 1.0
        if self._on_error is not None:
            self._on_error()

    async def aclose(self) -> None:
        await self._redis.aclose()
