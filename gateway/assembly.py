"""The per-worker objects every route needs, built once by ``service.py`` at start-up and closed
together at shutdown (one exit stack: whatever is built registers how it is closed)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from gateway.cache.memory import MemoryStore
from gateway.cache.redis import RedisStore
from gateway.cache.service import Cache, Store
from gateway.catalog import Catalog
from gateway.embeddings.service import Embeddings
from gateway.observability.health import ServiceStats
from gateway.observability.metrics import Metrics
from gateway.routing.deadline import Deadline
from gateway.routing.router import Router
from gateway.routing.spans import UpstreamSpans
from gateway.settings import Settings
from gateway.tenants import Tenants
from gateway.upstream.client import Upstreams

if TYPE_CHECKING:  # the semantic tier (numpy, onnxruntime) is imported only when switched on
    from gateway.cache.tiers import SemanticTier


@dataclass(slots=True)
class Gateway:
    settings: Settings
    catalog: Catalog
    upstream: Upstreams
    router: Router
    stats: ServiceStats
    metrics: Metrics
    embeddings: Embeddings
    cache: Cache
    tenants: Tenants
    closing: AsyncExitStack = field(default_factory=AsyncExitStack)

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics,
              spans: UpstreamSpans | None = None,
              transport: httpx.AsyncBaseTransport | None = None) -> Gateway:
        """``transport`` is for in-process tests: an httpx transport that answers for the
        upstream."""
        closing = AsyncExitStack()
        spans = spans or UpstreamSpans(None)
        stats = ServiceStats()
        upstream = Upstreams.build(settings, catalog, transport, propagate_trace=spans.enabled)
        closing.push_async_callback(upstream.aclose)
        router = Router(settings, catalog, upstream, stats, metrics, spans)
        embeddings = Embeddings(settings, catalog, router, metrics)
        closing.push_async_callback(embeddings.aclose)
        cache = build_cache(settings, router, metrics, closing)
        tenants = Tenants.build(settings, metrics)
        closing.push_async_callback(tenants.aclose)
        return cls(settings, catalog, upstream, router, stats, metrics, embeddings, cache, tenants,
                   closing)

    async def aclose(self) -> None:
        await self.closing.aclose()


def build_cache(settings: Settings, router: Router, metrics: Metrics,
                closing: AsyncExitStack) -> Cache:
    """The response cache (a pass-through when ``GATEWAY_CACHE=false``)."""
    if not settings.cache_enabled:
        return Cache(None, metrics)
    store: Store
    if settings.redis_url:
        store = RedisStore(settings.redis_url, settings.cache_ttl_s,
                           timeout_s=settings.cache_redis_timeout_s,
                           on_error=metrics.cache_store_errors.inc)
    else:
        store = MemoryStore(settings.cache_max_entries, settings.cache_max_bytes,
                            settings.cache_ttl_s)
    closing.push_async_callback(store.aclose)
    semantic = build_semantic_tier(settings, router, metrics, closing)
    cache = Cache(store, metrics, store_length=settings.cache_store_length, semantic=semantic)
    closing.push_async_callback(cache.flush)  # runs first: writes land before the store closes
    return cache


def build_semantic_tier(settings: Settings, router: Router, metrics: Metrics,
                        closing: AsyncExitStack) -> SemanticTier | None:
    """The semantic tier, when switched on: its embedder behind the one batcher, its index, and
    the Redis log that keeps replicas' indexes in step."""
    if not settings.semantic_cache:
        return None
    import numpy as np

    from gateway.cache.crossencoder import CrossEncoder
    from gateway.cache.embedder import Embedder, LocalMiniLM, UpstreamEmbedder
    from gateway.cache.index import RedisVectorLog, VectorIndex
    from gateway.cache.semantic import DEFAULT_FLOOR, DEFAULT_VERIFIER_THRESHOLD, SemanticMatcher
    from gateway.cache.tiers import SemanticTier
    from gateway.embeddings.batcher import Batcher

    embedder: Embedder
    if settings.semantic_embedder == "local":
        local = LocalMiniLM()
        closing.callback(local.close)
        embedder = local
    else:
        model = settings.semantic_embedding_model

        async def upstream_vectors(texts: list[str]) -> list[list[float]]:
            served = await router.embed(model, {"input": texts},
                                        Deadline.after(settings.upstream_timeout_s))
            rows = sorted(served.result.data.get("data") or [], key=lambda r: r.get("index", 0))
            return [row["embedding"] for row in rows]

        embedder = UpstreamEmbedder(upstream_vectors, dim=0)

    async def embed_rows(texts: list[str]) -> list[np.ndarray]:
        return list(await embedder.embed(texts))

    batcher: Batcher[str, np.ndarray] = Batcher(
        embed_rows, max_batch_size=settings.batch_max_size,
        max_latency_s=settings.batch_max_latency_ms / 1000, max_concurrent=1,
        observe=lambda size, wait: metrics.batch_size.observe(size))
    closing.push_async_callback(batcher.aclose)
    log = None
    if settings.redis_url:
        log = RedisVectorLog(settings.redis_url, settings.cache_max_entries,
                             timeout_s=settings.cache_redis_timeout_s,
                             on_error=metrics.cache_store_errors.inc)
    verifier = CrossEncoder()  # loaded now, not on the first request
    closing.callback(verifier.close)
    tier = SemanticTier(batcher.submit, VectorIndex(settings.cache_max_entries),
                        SemanticMatcher(verifier,
                                        settings.semantic_threshold or DEFAULT_FLOOR,
                                        settings.semantic_verifier_threshold
                                        or DEFAULT_VERIFIER_THRESHOLD),
                        metrics, settings.cache_ttl_s, log)
    closing.push_async_callback(tier.aclose)
    return tier
