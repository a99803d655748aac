"""The per-worker objects every route needs, built once by ``service.py`` at start-up."""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog, metrics: Metrics) -> Gateway:
        stats = ServiceStats()
        upstream = UpstreamClient(settings)
        router = Router(settings, catalog, upstream, stats, metrics)
        embeddings = Embeddings(settings, catalog, router, metrics)
        return cls(settings, catalog, upstream, router, stats, metrics, embeddings)

    async def aclose(self) -> None:
        await self.embeddings.aclose()
        await self.upstream.aclose()
