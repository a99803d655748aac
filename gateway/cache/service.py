"""The response cache behind one call: ``Cache.serve(plan, tenant, directives, call, share)``.

Inside: the exact lookup, the optional semantic tier, coalescing of identical requests in flight,
and storing only complete, successful answers. Routes see a ``CacheOutcome`` and nothing else.

Cache-Control from the client: ``no-cache`` skips the lookup (and coalescing), ``no-store``
keeps the answer out of the cache. Never stored: errors, truncated streams, and
``finish_reason: length`` unless ``GATEWAY_CACHE_STORE_LENGTH`` says otherwise. The cache never
prices anything: it keeps tokens, and the accounting prices them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from gateway.cache.entry import CachedAnswer
from gateway.cache.keys import exact_key, semantic_scope
from gateway.cache.semantic import conversation_text
from gateway.cache.verify import covered_language
from gateway.eventloop import running_loop
from gateway.observability.metrics import Metrics
from gateway.plan.chat import ChatPlan

if TYPE_CHECKING:  # the semantic tier (numpy) is imported only when it is switched on
    from gateway.cache.tiers import SemanticTier

T = TypeVar("T")


class CacheResult(StrEnum):
    """What the cache did for a request; the value is what ``x-gateway-cache`` says."""

    HIT = "hit"
    SEMANTIC_HIT = "semantic-hit"
    COALESCED = "coalesced"
    MISS = "miss"

    @property
    def metric(self) -> str:
        return self.value.replace("-", "_")


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


@dataclass(slots=True)
class Filing:
    """Where a missed request's answer goes once it is complete: its exact key and, with the
    semantic tier, its scope, text and vector."""

    key: str
    scope: str | None = None
    text: str | None = None
    vector: Any = None


@dataclass(slots=True)
class CacheOutcome(Generic[T]):
    """``served`` for a miss (the upstream's answer), ``answer`` for a hit or a coalesced
    follower; ``result`` is None when the cache is off.

    For a missed stream the answer is only known at its end: the relay assembles it and calls
    ``complete`` (stored if it may be, and handed to any requests coalesced behind it), and
    ``abandon`` in any case when it stops (followers then make their own calls)."""

    result: CacheResult | None
    served: T | None = None
    answer: CachedAnswer | None = None
    similarity: float | None = None
    _cache: Cache | None = field(default=None, repr=False)
    _filing: Filing | None = field(default=None, repr=False)
    _lead: asyncio.Future[CachedAnswer | None] | None = field(default=None, repr=False)

    @property
    def cached(self) -> bool:
        return self.answer is not None

    @property
    def wants_answer(self) -> bool:
        """Whether the complete answer is wanted: to store it, or for coalesced followers."""
        return self._filing is not None or self._lead is not None

    def complete(self, answer: CachedAnswer, finish_reasons: list[str | None]) -> None:
        """The complete answer to a missed request."""
        if self._lead is not None:
            self._cache._settle(self._lead, answer)  # type: ignore[union-attr]
            self._lead = None
        if self._cache is not None and self._filing is not None:
            self._cache.store(self._filing, answer, finish_reasons)

    def abandon(self) -> None:
        """The answer will not be complete (failed, cut, not rebuildable, client gone)."""
        if self._lead is not None:
            self._cache._settle(self._lead, None)  # type: ignore[union-attr]
            self._lead = None


class Cache:
    """The cache; ``enabled=False`` makes ``serve`` a plain pass-through (one code path)."""

    def __init__(self, store: Store | None, metrics: Metrics, *, store_length: bool = False,
                 semantic: SemanticTier | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._store_length = store_length
        self._semantic = semantic
        self._inflight: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def serve(
        self,
        plan: ChatPlan,
        tenant: str,
        directives: Directives,
        call: Callable[[], Awaitable[T]],
        share: Callable[[T], CachedAnswer],
    ) -> CacheOutcome[T]:
        """The answer to ``plan``: from the cache, from an identical request in flight, or from
        ``call`` (whose result ``share`` turns into an answer for coalesced followers)."""
        if self._store is None:
            return CacheOutcome(None, served=await call())
        filing = Filing(exact_key(tenant, plan.model, plan.payload))
        if directives.lookup:
            answer = await self._lookup(filing.key)
            if answer is not None:
                return self._count(CacheOutcome(CacheResult.HIT, answer=answer))
            found = await self._semantic_lookup(tenant, plan, filing)
            if found is not None:
                answer, similarity = found
                return self._count(CacheOutcome(CacheResult.SEMANTIC_HIT, answer=answer,
                                                similarity=similarity))
        lead = None
        if not directives.lookup:
            served = await call()
        else:
            result = await self._coalesced(filing.key, call, share, later=plan.stream)
            if isinstance(result, CachedAnswer):
                return self._count(CacheOutcome(CacheResult.COALESCED, answer=result))
            served, lead = result
        return self._count(CacheOutcome(CacheResult.MISS, served=served, _cache=self,
                                        _filing=filing if directives.store else None,
                                        _lead=lead))

    def _count(self, outcome: CacheOutcome[T]) -> CacheOutcome[T]:
        assert outcome.result is not None
        # Metric writes wait until the request's task yields (see ``Router._served``).
        running_loop().call_soon(self._metrics.observe_cache_result,
                                             outcome.result.metric)
        return outcome

    async def _lookup(self, key: str) -> CachedAnswer | None:
        assert self._store is not None
        started = time.perf_counter()
        raw = await self._store.get(key)
        running_loop().call_soon(self._metrics.observe_cache_lookup,
                                             time.perf_counter() - started)
        if raw is None:
            return None
        try:
            return CachedAnswer.loads(raw)
        except (ValueError, KeyError, TypeError):
            self._metrics.observe_cache_result("error")
            return None

    async def _semantic_lookup(self, tenant: str, plan: ChatPlan,
                               filing: Filing) -> tuple[CachedAnswer, float] | None:
        """The semantic tier's answer, if it has a safe one; fills the filing's vector either
        way, so the answer can be filed under it. Text the embedder does not cover skips it."""
        semantic = self._semantic
        if semantic is None:
            return None
        text = conversation_text(plan.payload.get("messages") or [])
        if not covered_language(text):
            return None
        filing.scope, filing.text = semantic_scope(tenant, plan.model, plan.payload), text
        match = await semantic.lookup(filing.scope, text)
        filing.vector = match.vector
        if match.key is None:
            return None
        answer = await self._lookup(match.key)
        if answer is None:  # expired or evicted from the store: drop it from the index too
            semantic.forget(filing.scope, match.key)
            return None
        return answer, match.similarity

    def storable(self, finish_reasons: list[str | None]) -> bool:
        if not finish_reasons or any(r is None for r in finish_reasons):
            return False
        return self._store_length or "length" not in finish_reasons

    def store(self, filing: Filing, answer: CachedAnswer, finish_reasons: list[str | None]) -> None:
        """Write in the background: the client never waits on the store."""
        if self._store is None or not self.storable(finish_reasons):
            return
        task = running_loop().create_task(self._write(filing.key, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        semantic = self._semantic
        if semantic is not None and filing.vector is not None and filing.scope and filing.text:
            semantic.remember(filing.scope, filing.key, filing.text, filing.vector)

    async def _write(self, key: str, answer: CachedAnswer) -> None:
        assert self._store is not None
        await self._store.set(key, answer.dumps())
        entries = self._store.entries()
        if entries is not None:
            self._metrics.observe_cache_entries(entries)

    async def flush(self) -> None:
        """Wait for the background writes started so far (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _coalesced(
        self, key: str, compute: Callable[[], Awaitable[T]], share: Callable[[T], CachedAnswer],
        *, later: bool,
    ) -> tuple[T, asyncio.Future[CachedAnswer | None] | None] | CachedAnswer:
        """Run ``compute`` once for every identical request in flight at the same moment.

        The leader gets its own result; each follower waits for the leader's answer and gets
        it as a ``CachedAnswer``. If the leader fails, its followers get the same error; if the
        leader's client went away (or its answer could not be rebuilt), each follower makes its
        own call. With ``later`` (a stream), the answer is known only when the stream ends: the
        leader also gets the future to settle then (``CacheOutcome.complete``/``abandon``).
        """
        leader = self._inflight.get(key)
        if leader is not None:
            answer = await asyncio.shield(leader)
            if answer is None:
                return await compute(), None
            return answer
        future: asyncio.Future[CachedAnswer | None] = running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            self._settle(future, None)
            raise
        except BaseException as exc:
            del self._inflight[key]
            future.set_exception(exc)
            future.exception()  # retrieved: followers re-raise it, nobody else must log it
            raise
        if later:
            return result, future
        self._settle(future, share(result))
        return result, None

    def _settle(self, future: asyncio.Future[CachedAnswer | None],
                answer: CachedAnswer | None) -> None:
        for key, waiting in self._inflight.items():
            if waiting is future:
                del self._inflight[key]
                break
        if not future.done():
            future.set_result(answer)
