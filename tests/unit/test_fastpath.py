"""FastPath: BentoML's own routes keep BentoML's app, everything else goes to the gateway's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from gateway.server.fastpath import FastPath


def answer(text: str) -> Any:
    async def endpoint(_: Request) -> PlainTextResponse:
        return PlainTextResponse(text)
    return endpoint


async def hang(_: Request) -> PlainTextResponse:
    await asyncio.sleep(5)
    return PlainTextResponse("too late")


gateway_app = Starlette(routes=[Route("/v1/chat/completions", answer("gateway"), methods=["POST"]),
                                Route("/slow", hang)])
bentoml_app = Starlette(routes=[
    Route("/healthz", answer("bentoml probe")),
    Route("/", answer("bentoml index")),
    Mount("/static_content", routes=[Route("/{name}", answer("bentoml static"))]),
    Mount("/", app=gateway_app),
])
fast = FastPath(bentoml_app, gateway_app, timeout=0.1)


async def get(method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=fast)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path)


async def test_bentoml_routes_and_mounts_stay_with_bentoml() -> None:
    assert (await get("GET", "/healthz")).text == "bentoml probe"
    assert (await get("GET", "/")).text == "bentoml index"
    assert (await get("GET", "/static_content/app.css")).text == "bentoml static"


async def test_gateway_routes_and_unknown_paths_go_to_the_gateway() -> None:
    assert (await get("POST", "/v1/chat/completions")).text == "gateway"
    assert fast.bentoml_paths == {"/healthz", "/"}
    assert fast.bentoml_prefixes == ("/static_content/",)


async def test_the_gateway_path_keeps_the_request_timeout() -> None:
    assert (await get("GET", "/slow")).status_code == 504


async def test_lifespan_goes_to_bentoml() -> None:
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        started.append("bentoml")
        yield

    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = FastPath(Starlette(lifespan=lifespan), gateway_app, timeout=1)
    await app({"type": "lifespan"}, receive, send)
    assert started == ["bentoml"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_install_wraps_the_gateway_service_unless_bentoml_cors_is_on(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    monkeypatch.setattr(ServiceAppFactory, "__call__", ServiceAppFactory.__call__)  # undo after
    import service

    service.LLMGateway.inject_config()
    plain = ServiceAppFactory(service.LLMGateway, is_main=True, enable_access_control=False)()
    assert isinstance(plain, FastPath) and plain.bentoml_paths >= {"/healthz", "/readyz",
                                                                    "/metrics"}
    with_cors = ServiceAppFactory(service.LLMGateway, is_main=True, enable_access_control=True,
                                  access_control_options={"allow_origins": ["*"]})()
    assert isinstance(with_cors, Starlette)
