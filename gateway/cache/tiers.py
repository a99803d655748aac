"""The semantic tier: embed the conversation, find the nearest earlier request in the same
scope, and let the matcher decide whether its answer is safe to serve."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from gateway.cache.index import RedisVectorLog, VectorIndex
from gateway.cache.semantic import SemanticMatcher
from gateway.eventloop import running_loop
from gateway.observability.metrics import Metrics


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
            task = running_loop().create_task(self._log.append(scope, key, vector, text, expires))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._log is not None:
            await self._log.aclose()
