"""The response cache in front of the router: exact lookup, coalescing of identical requests in
flight, and storing only complete, successful answers.

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

from ..metrics import Metrics
from .entry import CachedAnswer

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
        started = time.perf_counter()
        raw = await self._store.get(key)
        self._metrics.cache_lookup.observe(time.perf_counter() - started)
        if raw is None:
            self._metrics.cache_results.labels("miss").inc()
            return None
        try:
            answer = CachedAnswer.loads(raw)
        except (ValueError, KeyError, TypeError):
            self._metrics.cache_results.labels("error").inc()
            return None
        self._metrics.cache_results.labels("hit").inc()
        self._metrics.cache_saved.inc(float(answer.cost_usd))
        return answer

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
            self._metrics.cache_results.labels("coalesced").inc()
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
