"""The BentoML service: builds the gateway from settings and mounts its routes. Nothing else."""

from __future__ import annotations

import logging

import bentoml

from gateway.api.app import create_app
from gateway.assembly import Gateway
from gateway.cache import modelfiles
from gateway.catalog import load_catalog
from gateway.observability import tracing
from gateway.observability.gcwatch import GcWatch
from gateway.observability.metrics import Metrics
from gateway.routing.spans import UpstreamSpans
from gateway.server import patches
from gateway.server.drain import Drain
from gateway.server.tracer import configured_tracer
from gateway.settings import Settings
from gateway.tenants.keys import load_key_file
from gateway.tenants.sharing import refuse_unshared_limits

logger = logging.getLogger("gateway")

settings = Settings()
# A patched library at another version than the one pinned stops start-up here, naming it.
patched = patches.apply(settings)
catalog = load_catalog(settings.config_path)
# A bad key file stops start-up here, naming the file, entry and field; limits or budgets counted
# per worker process (several workers, no Redis) stop it too.
refuse_unshared_limits(settings, load_key_file(settings.keys_file) if settings.keys_file else [])
if settings.semantic_cache:  # its optional extra missing stops start-up here, naming it
    modelfiles.require(local_embedder=settings.semantic_embedder == "local")
app = create_app(settings)
if settings.tracing_exporter and not settings.bentoml_telemetry and patched:
    # Under BentoML's stack (telemetry on, or unpatched) its server span already continues the
    # caller's trace.
    app.add_middleware(tracing.IncomingTraceContext)

# BentoML's own timeout gets a few seconds of grace so the gateway's deadline (GATEWAY_TIMEOUT,
# which starts once the body is in, after at most GATEWAY_BODY_TIMEOUT) fires first and the
# client gets an OpenAI-shaped 504, not BentoML's.
TIMEOUT_GRACE_S = 5
OUTER_TIMEOUT_S = settings.body_timeout_s + settings.timeout_s + TIMEOUT_GRACE_S

# BentoML wraps every request in its access log, request metrics, an OpenTelemetry server span
# and five more layers; on the gateway's routes that costs more than the gateway's own work, and
# its metrics label by raw path. The gateway's routes bypass that stack and record the gateway's
# own metrics (GATEWAY_BENTOML_TELEMETRY or GATEWAY_UNPATCHED puts them back under BentoML's).
patches.install_fast_path(settings, app, OUTER_TIMEOUT_S)


@bentoml.service(
    name="llm-gateway",
    workers=settings.workers,
    traffic={"timeout": OUTER_TIMEOUT_S},
    tracing=tracing.service_tracing(settings),
)
@bentoml.asgi_app(app, path="/")
class LLMGateway:
    """An OpenAI-compatible gateway in front of HolySheep AI (or any OpenAI-compatible URL)."""

    def __init__(self) -> None:
        if not settings.auth_required:
            logger.warning("None of GATEWAY_API_KEYS, GATEWAY_KEYS_FILE, GATEWAY_ADMIN_KEY is "
                           "set: the gateway accepts every client.")
        if not settings.upstream_api_key:
            logger.warning("HOLYSHEEP_API_KEY is not set: upstream calls carry no key.")
        metrics = Metrics()
        metrics.patched.set(1 if patched else 0)
        # The tracer is looked up only when tracing is configured.
        spans = UpstreamSpans(configured_tracer() if settings.tracing_exporter else None)
        self.gateway = Gateway.build(settings, catalog, metrics, spans)
        app.state.gateway = self.gateway
        self.gc_watch = GcWatch(metrics)
        self.drain = Drain(settings.shutdown_drain_s, settings.shutdown_grace_s)

    async def __is_ready__(self) -> bool:
        """``/readyz``: fails from the first SIGTERM on, so balancers move away first (async:
        BentoML runs a plain method in a thread, on every probe)."""
        return not self.drain.draining

    @bentoml.on_startup
    async def freeze_start_up_heap(self) -> None:
        self.gc_watch.install()

    @bentoml.on_startup
    async def check_stores(self) -> None:
        await self.gateway.tenants.check_store()

    @bentoml.on_startup
    async def drain_on_sigterm(self) -> None:
        if not self.drain.install():
            logger.warning("SIGTERM has no server handler to defer: no graceful drain")

    @bentoml.on_shutdown
    async def close(self) -> None:
        self.gc_watch.uninstall()
        await self.gateway.aclose()
