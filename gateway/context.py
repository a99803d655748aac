"""The per-worker objects every route needs, built once by ``service.py`` at start-up."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .cache.memory import MemoryStore
from .cache.redis import RedisStore
from .cache.tiers import ResponseCache, SemanticTier, Store
from .catalog import Catalog
from .embeddings import Embeddings
from .health import ServiceStats
from .metrics import Metrics
from .router import Router
from .settings import Settings
from .tracing import UpstreamSpans
from .upstream import UpstreamClient


@dataclass(slots=True)
class Gateway:
    settings: Settings
    catalog: Catalog
    upstream: UpstreamClient
    router: Router
    stats: ServiceStats
    metrics: Metrics
    embeddings: Embeddings
    cache: ResponseCache | None
    semantic: SemanticTier | None

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics,
              spans: UpstreamSpans | None = None) -> Gateway:
        spans = spans or UpstreamSpans(None)
        stats = ServiceStats()
        upstream = UpstreamClient(settings, propagate_trace=spans.enabled)
        router = Router(settings, catalog, upstream, stats, metrics, spans)
        embeddings = Embeddings(settings, catalog, router, metrics)
        cache = None
        if settings.cache_enabled:
            store: Store
            if settings.redis_url:
                store = RedisStore(settings.redis_url, settings.cache_ttl_s,
                                   timeout_s=settings.cache_redis_timeout_s,
                                   on_error=metrics.cache_store_errors.inc)
            else:
                store = MemoryStore(settings.cache_max_entries, settings.cache_max_bytes,
                                    settings.cache_ttl_s)
            cache = ResponseCache(store, metrics, store_length=settings.cache_store_length)
        semantic = build_semantic_tier(settings, router, metrics) if cache is not None else None
        return cls(settings, catalog, upstream, router, stats, metrics, embeddings, cache,
                   semantic)

    async def aclose(self) -> None:
        if self.semantic is not None:
            await self.semantic.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.embeddings.aclose()
        await self.upstream.aclose()


def build_semantic_tier(settings: Settings, router: Router, metrics: Metrics) -> SemanticTier | None:
    """The semantic tier, when switched on: its embedder behind the one batcher, its index, and
    the Redis log that keeps replicas' indexes in step."""
    if not settings.semantic_cache:
        return None
    import numpy as np

    from .batching import Batcher
    from .cache.crossencoder import CrossEncoder
    from .cache.embedder import Embedder, LocalMiniLM, UpstreamEmbedder
    from .cache.index import RedisVectorLog, VectorIndex
    from .cache.semantic import DEFAULT_FLOOR, DEFAULT_VERIFIER_THRESHOLD, SemanticMatcher

    embedder: Embedder
    if settings.semantic_embedder == "local":
        embedder = LocalMiniLM()
    else:
        model = settings.semantic_embedding_model

        async def upstream_vectors(texts: list[str]) -> list[list[float]]:
            served = await router.embed(model, {"input": texts},
                                        time.monotonic() + settings.upstream_timeout_s)
            rows = sorted(served.result.data.get("data") or [], key=lambda r: r.get("index", 0))
            return [row["embedding"] for row in rows]

        embedder = UpstreamEmbedder(upstream_vectors, dim=0)

    async def embed_rows(texts: list[str]) -> list[np.ndarray]:
        return list(await embedder.embed(texts))

    batcher: Batcher[str, np.ndarray] = Batcher(
        embed_rows, max_batch_size=settings.batch_max_size,
        max_latency_s=settings.batch_max_latency_ms / 1000, max_concurrent=1,
        observe=lambda size, wait: metrics.batch_size.observe(size))
    log = None
    if settings.redis_url:
        log = RedisVectorLog(settings.redis_url, settings.cache_max_entries,
                             timeout_s=settings.cache_redis_timeout_s,
                             on_error=metrics.cache_store_errors.inc)
    return SemanticTier(batcher.submit, VectorIndex(settings.cache_max_entries),
                        SemanticMatcher(CrossEncoder(),
                                        settings.semantic_threshold or DEFAULT_FLOOR,
                                        settings.semantic_verifier_threshold
                                        or DEFAULT_VERIFIER_THRESHOLD),
                        metrics, settings.cache_ttl_s, log)

