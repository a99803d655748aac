"""The client routes (POST, exact paths) called straight from a table, past Starlette's router.

Starlette's way to an endpoint is its exception middleware, then the router (a regular
expression tried per route until one matches), the route, ``request_response`` and a second
exception wrapper, each adding a frame on the way in and a ``send`` wrapper on the way out. At
100 req/s every layer runs cold (the README's *Performance* has the probe). A POST to an exact
path is one dict lookup here; the endpoint's errors are rendered by the same function the
app's exception handlers use, so the answer is the same either way. Everything else (other
methods, paths with parameters, unknown paths: Starlette's 404 and 405) goes on to Starlette.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
RenderError = Callable[[Request, Exception], Awaitable[Response]]


def direct_table(routes: Sequence[BaseRoute]) -> dict[str, Endpoint]:
    """Path → endpoint for the POST routes a table can serve: exact paths, function endpoints."""
    table: dict[str, Endpoint] = {}
    for route in routes:
        if (isinstance(route, Route) and "POST" in (route.methods or ())
                and not route.param_convertors and inspect.iscoroutinefunction(route.endpoint)):
            table.setdefault(route.path, route.endpoint)
    return table


class DirectRoutes:
    """ASGI middleware: a POST whose path is in ``table`` is answered here."""

    def __init__(self, app: ASGIApp, table: dict[str, Endpoint], render_error: RenderError):
        self.app = app
        self.table = table
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.table.get(scope["path"])
            if endpoint is not None:
                request = Request(scope, receive, send)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await self.render_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
