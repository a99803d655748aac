"""The per-worker objects every route needs, built once by ``service.py`` at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from .cache.memory import MemoryStore
from .cache.redis import RedisStore
from .cache.tiers import ResponseCache, Store
from .catalog import Catalog
from .embeddings import Embeddings
from .health import ServiceStats
from .metrics import Metrics
from .router import Router
from .settings import Settings
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

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics) -> Gateway:
        stats = ServiceStats()
        upstream = UpstreamClient(settings)
        router = Router(settings, catalog, upstream, stats, metrics)
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
        return cls(settings, catalog, upstream, router, stats, metrics, embeddings, cache)

    async def aclose(self) -> None:
        if self.cache is not None:
            await self.cache.aclose()
        await self.embeddings.aclose()
        await self.upstream.aclose()
