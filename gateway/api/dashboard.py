"""The dashboard's routes: the page and its two static files, login and logout, and read-only
JSON under ``/dashboard/api/``. Every response carries a strict CSP and no-framing headers; the
data answers 401 (OpenAI error shape) without a live session cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.pipeline import gateway_of
from gateway.assembly import Gateway
from gateway.dashboard import data
from gateway.dashboard.sessions import COOKIE, PATH, Sessions
from gateway.errors import ErrorCode, GatewayError, body_too_large

STATIC = files("gateway.dashboard") / "static"
# Three small files, read once at import: serving them never touches the disk.
PAGE = (STATIC / "index.html").read_bytes()
ASSETS = {
    name: ((STATIC / name).read_bytes(), media)
    for name, media in (("dashboard.js", "text/javascript; charset=utf-8"),
                        ("dashboard.css", "text/css; charset=utf-8"))
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
LOGIN_BODY_MAX = 4096


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _json(payload: Any, status: int = 200) -> Response:
    return _secure(Response(orjson.dumps(payload), status_code=status,
                            media_type="application/json"))


def _error(error: GatewayError) -> Response:
    return _secure(error.to_response())


class DashboardState:
    """Per worker: the sessions and the shared ledger read, made on first use."""

    def __init__(self, gateway: Gateway) -> None:
        admin = gateway.settings.admin_key
        self.sessions = Sessions(admin.get_secret_value().encode() if admin else b"",
                                 gateway.settings.dashboard_session_ttl_s)
        self.ledger = data.LedgerView(gateway.tenants.admin)


def _state(request: Request) -> DashboardState:
    app_state = request.app.state
    state: DashboardState | None = getattr(app_state, "dashboard", None)
    if state is None:
        state = app_state.dashboard = DashboardState(gateway_of(request))
    return state


def _off(request: Request) -> GatewayError | None:
    if gateway_of(request).settings.admin_key is None:
        return GatewayError(ErrorCode.PERMISSION_DENIED,
                            "The dashboard is off: set GATEWAY_ADMIN_KEY to turn it on.")
    return None


async def page(request: Request) -> Response:
    return _secure(Response(PAGE, media_type="text/html; charset=utf-8"))


async def slash(request: Request) -> Response:
    return _secure(Response(status_code=308, headers={"Location": PATH}))


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    found = ASSETS.get(name)
    if found is None:
        return _error(GatewayError(ErrorCode.UNKNOWN_URL, f"Unknown endpoint {request.url.path}."))
    body, media = found
    response = Response(body, media_type=media)
    _secure(response)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _https(request: Request) -> bool:
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https")


async def _small_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > LOGIN_BODY_MAX:
            raise body_too_large(LOGIN_BODY_MAX)
        chunks.append(chunk)
    return b"".join(chunks)


async def login(request: Request) -> Response:
    """The admin key as a form field (``admin_key``), posted once; never in the URL."""
    off = _off(request)
    if off is not None:
        return _error(off)
    body = await _small_body(request)
    presented = parse_qs(body.decode("utf-8", "replace")).get("admin_key", [""])[0].strip()
    sessions = _state(request).sessions
    if not presented or not sessions.admin_matches(presented):
        error = GatewayError(ErrorCode.INVALID_API_KEY, "That is not the admin key.",
                             param="admin_key")
        if _wants_json(request):
            return _error(error)
        return _secure(Response(status_code=303, headers={"Location": f"{PATH}?login=failed"}))
    cookie, expires = await sessions.open()
    response = (_json({"ok": True, "expires_at": expires}) if _wants_json(request)
                else _secure(Response(status_code=303, headers={"Location": PATH})))
    response.set_cookie(COOKIE, cookie, max_age=sessions.ttl_s, path=PATH, httponly=True,
                        samesite="strict", secure=_https(request))
    return response


async def logout(request: Request) -> Response:
    await _state(request).sessions.revoke(request.cookies.get(COOKIE))
    response = (_json({"ok": True}) if _wants_json(request)
                else _secure(Response(status_code=303, headers={"Location": PATH})))
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict",
                           secure=_https(request))
    return response


Handler = Callable[[Request, DashboardState, Gateway], Awaitable[dict[str, Any]]]


def _guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        off = _off(request)
        if off is not None:
            return _error(off)
        state = _state(request)
        expires = await state.sessions.valid(request.cookies.get(COOKIE))
        if expires is None:
            return _error(unauthorized_session())
        payload = await handler(request, state, gateway_of(request))
        payload["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return _json(payload)
    return endpoint


def unauthorized_session() -> GatewayError:
    return GatewayError(ErrorCode.INVALID_API_KEY,
                        "No dashboard session: log in at /dashboard with the admin key.")


def _today() -> Any:
    return datetime.now(UTC).date()


async def session_info(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    expires = await state.sessions.valid(request.cookies.get(COOKIE))
    return {"expires_at": expires}


async def spend(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return await data.spend(state.ledger, gw.tenants.admin, _today())


async def traffic(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return data.traffic(gw.tenants)


async def cache(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return await data.cache(state.ledger, gw.tenants, _today())


async def budgets(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return await data.budgets(state.ledger, gw.tenants.admin, _today())


async def health(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return data.health(gw.tenants, gw.router)


async def requests(request: Request, state: DashboardState, gw: Gateway) -> dict[str, Any]:
    return data.recent(gw.tenants)


routes = [
    Route(PATH, page, methods=["GET"]),
    Route(f"{PATH}/", slash, methods=["GET"]),
    Route(f"{PATH}/static/{{name}}", asset, methods=["GET"]),
    Route(f"{PATH}/login", login, methods=["POST"]),
    Route(f"{PATH}/logout", logout, methods=["POST"]),
    *(Route(f"{PATH}/api/{name}", _guarded(fn), methods=["GET"]) for name, fn in (
        ("session", session_info), ("spend", spend), ("traffic", traffic), ("cache", cache),
        ("budgets", budgets), ("health", health), ("requests", requests))),
]
