"""Hands the gateway's routes straight to its app, past BentoML's middleware stack.

BentoML runs every request through eight ASGI layers (its error handler, request metrics,
OpenTelemetry, access log, timeout, request context, exception handler and router, then the
mount) before a mounted app sees it. Profiling a worker put a quarter of its CPU time in those
layers, more than the gateway's own work per request (the README's performance section has the
figures). BentoML's request metrics also label by raw path, so every unknown URL a client tries
becomes a new series on ``/metrics``.

So BentoML's own routes (``/healthz``, ``/livez``, ``/readyz``, ``/metrics``, its static
files) keep its stack, and every other request goes to the gateway's app under the same
request timeout: the gateway records its own metrics (``gateway_*``, bounded labels) and answers
unknown paths with an OpenAI-shaped 404. ``install`` hooks BentoML's app factory, the one place
that builds the app uvicorn serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.server.bentoml_fixes import RequestTimeout
from gateway.server.intake import TRANSPORT_KEY, remember_transport
from gateway.server.seams import Patch, replace, when_imported

logger = logging.getLogger("gateway")


class FastPath:
    """ASGI dispatcher: BentoML's own routes to ``bentoml_app``, all else to ``gateway_app``."""

    def __init__(self, bentoml_app: Starlette, gateway_app: ASGIApp, timeout: float) -> None:
        self.bentoml_app = bentoml_app
        self.gateway_app = RequestTimeout(gateway_app, timeout)
        exact: set[str] = set()
        prefixes: list[str] = []
        for route in bentoml_app.routes:
            if isinstance(route, Mount):
                if route.app is not gateway_app:
                    prefixes.append(route.path + "/")
            elif isinstance(route, Route):
                exact.add(route.path)
        # A path both serve (``/``: BentoML's page, the gateway's index) is the gateway's.
        exact -= {route.path for route in getattr(gateway_app, "routes", ())
                  if isinstance(route, Route)}
        self.bentoml_paths = frozenset(exact)
        self.bentoml_prefixes = tuple(prefixes)
        self.transport_checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path not in self.bentoml_paths and not path.startswith(self.bentoml_prefixes):
                remember_transport(scope, send)
                if not self.transport_checked:
                    self.transport_checked = True
                    if TRANSPORT_KEY not in scope:  # uvicorn's send is not what it was (0.55)
                        logger.warning("The connection's transport is out of reach: a stalled "
                                       "stream is cut by ending the response instead.")
                await self.gateway_app(scope, receive, send)
                return
        await self.bentoml_app(scope, receive, send)


def mounts(built: Starlette, app: ASGIApp) -> bool:
    """Whether BentoML's app mounts the gateway's ``app`` (else there is nothing to bypass to)."""
    return any(isinstance(route, Mount) and route.app is app for route in built.routes)


FACTORY_MODULE = "_bentoml_impl.server.app"


def install(service_name: str, app: ASGIApp, timeout: float) -> None:
    """Make BentoML serve service ``service_name``'s mounted ``app`` through a ``FastPath``, as
    soon as BentoML's app factory is imported: in a worker, before it builds its app. BentoML's
    supervisor never imports it (nor the numpy it pulls in), and so starts faster.

    Off when BentoML's CORS is configured (its CORS middleware must see every request), and
    when BentoML's app does not mount ``app`` where expected (logged: the full stack serves).
    """
    when_imported(FACTORY_MODULE, lambda module: patch(module.ServiceAppFactory, service_name,
                                                       app, timeout))


def patch(factory: Any, service_name: str, app: ASGIApp, timeout: float) -> Patch:
    """Wrap ``factory.__call__`` (BentoML's ``ServiceAppFactory``) with the fast path."""

    def with_fast_path(build: Callable[[Any], Starlette]) -> Callable[[Any], ASGIApp]:
        def build_with_fast_path(factory: Any) -> ASGIApp:
            built = build(factory)
            if getattr(factory.service, "name", None) != service_name:
                return built
            if factory.enable_access_control:
                logger.info("BentoML CORS is on: the gateway's routes go through BentoML's stack.")
                return built
            if not mounts(built, app):
                logger.warning("The fast path found no mount of the gateway's app in BentoML's "
                               "app: every request goes through BentoML's full stack.")
                return built
            return FastPath(built, app, timeout)

        return build_with_fast_path

    return replace(factory, "__call__", ["self"], "the fast path", with_fast_path)
