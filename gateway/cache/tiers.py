"""The response cache in front of the router: exact lookup, the optional semantic tier,
coalescing of identical requests in flight, and storing only complete, successful answers.

Cache-Control from the client: ``no-cache`` skips the lookup (and coalescing), ``no-store``
keeps the answer out of the cache. Never stored: errors, truncated streams, and
``finish_reason: length`` unless ``GATEWAY_CACHE_STORE_LENGTH`` says otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from ..metrics import Metrics
from .entry import CachedAnswer
from .index import RedisVectorLog, VectorIndex
from .semantic import SemanticMatcher

T = TypeVar("T")


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    def entries(self) -> int | None: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True, frozen=True)
class Directives:
    lookup: bool
    store: bool

    @classmethod
    def parse(cls, header: str | None) -> Directives:
        tokens = {t.strip().lower() for t in (header or "").split(",")}
        return cls(lookup="no-cache" not in tokens, store="no-store" not in tokens)


class ResponseCache:
    def __init__(self, store: Store, metrics: Metrics, *, store_length: bool) -> None:
        self._store = store
        self._metrics = metrics
        self._store_length = store_length
        self._inflight: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def lookup(self, key: str) -> CachedAnswer | None:
        """The stored answer under ``key``, if any (results are counted by ``count``)."""
        started = time.perf_counter()
        raw = await self._store.get(key)
        self._metrics.cache_lookup.observe(time.perf_counter() - started)
        if raw is None:
            return None
        try:
            return CachedAnswer.loads(raw)
        except (ValueError, KeyError, TypeError):
            self._metrics.observe_cache_result("error")
            return None

    def count(self, result: str, answer: CachedAnswer | None = None) -> None:
        """One result per request: hit, semantic_hit, coalesced or miss."""
        self._metrics.observe_cache_result(result)
        if answer is not None and result != "coalesced":
            self._metrics.cache_saved.inc(float(answer.cost_usd))

    def storable(self, finish_reasons: list[str | None]) -> bool:
        if not finish_reasons or any(r is None for r in finish_reasons):
            return False
        return self._store_length or "length" not in finish_reasons

    def save(self, key: str, answer: CachedAnswer) -> None:
        """Write in the background: the client never waits on the store."""
        task = asyncio.ensure_future(self._write(key, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, answer: CachedAnswer) -> None:
        await self._store.set(key, answer.dumps())
        entries = self._store.entries()
        if entries is not None:
            self._metrics.cache_entries.set(entries)

    async def coalesced(
        self, key: str, compute: Callable[[], Awaitable[T]], share: Callable[[T], CachedAnswer]
    ) -> T | CachedAnswer:
        """Run ``compute`` once for every identical request in flight at the same moment.

        The leader gets its own result; each follower gets the leader's answer as a
        ``CachedAnswer``. If the leader fails, its followers get the same error; if the
        leader's client went away, each follower makes its own call.
        """
        leader = self._inflight.get(key)
        if leader is not None:
            answer = await asyncio.shield(leader)
            if answer is None:
                return await compute()
            return answer
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.set_result(None)
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: followers re-raise it, nobody else must log it
            raise
        else:
            future.set_result(share(result))
            return result
        finally:
            del self._inflight[key]

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._store.aclose()


@dataclass(slots=True)
class SemanticMatch:
    """What the semantic tier found for a request, and the vector to file it under later."""

    vector: np.ndarray
    key: str | None = None
    similarity: float = 0.0


class SemanticTier:
    """Embeds the conversation (in batches: a burst of requests costs one forward pass), finds
    the nearest earlier request in the same scope and lets the matcher decide."""

    def __init__(self, embed: Callable[[list[str]], Awaitable[list[np.ndarray]]],
                 index: VectorIndex, matcher: SemanticMatcher, metrics: Metrics, ttl_s: float,
                 log: RedisVectorLog | None = None) -> None:
        self._embed = embed
        self._index = index
        self._matcher = matcher
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._log = log
        self._writes: set[asyncio.Task[None]] = set()

    async def lookup(self, scope: str, text: str) -> SemanticMatch:
        (vector,) = await self._embed([text])
        if self._log is not None:
            await self._log.pull(self._index)
        match = SemanticMatch(vector)
        neighbour = self._index.nearest(scope, vector)
        if neighbour is not None:
            decision = await self._matcher.accept(text, neighbour.text, neighbour.similarity)
            if decision.accepted:
                match.key, match.similarity = neighbour.key, neighbour.similarity
        return match

    def forget(self, scope: str, key: str) -> None:
        self._index.discard(scope, key)

    def remember(self, scope: str, key: str, text: str, vector: np.ndarray) -> None:
        expires = time.time() + self._ttl_s
        self._index.add(scope, key, vector, text, expires)
        if self._log is not None:
            task = asyncio.ensure_future(self._log.append(scope, key, vector, text, expires))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._log is not None:
            await self._log.aclose()
