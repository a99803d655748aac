"""``GET /``: what this gateway serves, its own routes listed from the app itself (BentoML's
page at ``/`` would show only its probes), as HTML for a browser or JSON for a script
(``Accept: application/json``)."""

from __future__ import annotations

import html

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.tenants.admission import RATE_HEADER_NAMES

# One line per route; a route added without one is still listed.
DESCRIPTIONS = {
    "/v1/chat/completions": "OpenAI Chat Completions (streaming too): cache, fallbacks, cost",
    "/v1/completions": "OpenAI legacy Completions, bridged onto chat where a model needs it",
    "/v1/responses": "OpenAI Responses API, bridged onto chat",
    "/v1/messages": "Anthropic Messages API, bridged onto chat",
    "/v1/messages/count_tokens": "Anthropic token count, estimated locally",
    "/v1/embeddings": "OpenAI Embeddings, batched upstream",
    "/v1/models": "The catalog's models, OpenAI-shaped",
    "/v1/models/{model:path}": "One model of the catalog",
    "/v1/usage": "A client key's own usage and spend",
    "/call": "The simple API: messages in, content and cost out",
    "/models": "The catalog with prices, fallbacks and the default model",
    "/health": "Requests, latency, upstream reachability, breakers, patches",
    "/batch": "Several chat requests in one call, run in parallel",
    "/admin/keys": "Admin: create and list client keys",
    "/admin/keys/{key_id}": "Admin: read or change a key's limits and budgets",
    "/admin/keys/{key_id}/revoke": "Admin: revoke a key",
    "/admin/keys/{key_id}/rotate": "Admin: rotate a key's secret",
    "/admin/usage": "Admin: usage and spend by key, team and model",
    "/dashboard": "The admin dashboard (sign in with the admin key)",
}
# BentoML's own routes, kept beside the gateway's.
SERVER_ROUTES = [
    ("GET", "/livez", "Liveness probe (BentoML)"),
    ("GET", "/readyz", "Readiness probe (BentoML)"),
    ("GET", "/metrics", "Prometheus metrics: gateway_* and BentoML's"),
]
HIDDEN_PREFIXES = ("/dashboard/",)  # the dashboard's own assets and API


def describe(routes: list[BaseRoute]) -> list[dict[str, str]]:
    """Method, path and description of every route a client or operator calls."""
    rows = []
    for route in routes:
        if not isinstance(route, Route) or route.path.startswith(HIDDEN_PREFIXES):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            rows.append({"method": method, "path": route.path,
                         "description": DESCRIPTIONS.get(route.path, "")})
    rows += [{"method": m, "path": p, "description": d} for m, p, d in SERVER_ROUTES]
    return rows


def _page(rows: list[dict[str, str]]) -> bytes:
    body = "".join(
        f"<tr><td>{html.escape(r['method'])}</td><td><code>{html.escape(r['path'])}</code></td>"
        f"<td>{html.escape(r['description'])}</td></tr>" for r in rows)
    headers = ", ".join(["x-gateway-cost-usd", "x-gateway-model", "x-gateway-cache",
                         RATE_HEADER_NAMES[0][1]])
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>LLM gateway</title>"
        "<style>body{font:15px system-ui,sans-serif;margin:2em auto;max-width:60em}"
        "td{padding:.2em .8em;border-bottom:1px solid #ddd}code{font-size:14px}</style></head>"
        "<body><h1>LLM gateway</h1><p>An OpenAI-compatible gateway: point an OpenAI or "
        "Anthropic SDK at <code>/v1</code> with a client key as the bearer token. Answers "
        f"carry {html.escape(headers)} and more.</p><table><tr><th>Method</th><th>Path</th>"
        f"<th>What it does</th></tr>{body}</table></body></html>").encode()


def route(routes: list[BaseRoute]) -> Route:
    rows = describe(routes)
    page, listing = _page(rows), orjson.dumps({"object": "list", "data": rows})

    async def index(request: Request) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return Response(listing, media_type="application/json")
        return Response(page, media_type="text/html; charset=utf-8")

    return Route("/", index, methods=["GET"])
