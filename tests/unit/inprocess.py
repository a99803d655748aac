"""The gateway's HTTP app in process, in front of the fake provider's ASGI app: no sockets, no
subprocess. The upstream is the project's real fake provider (tool calls, streams, faults),
reached through an in-memory httpx transport; clients talk to the app through another one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import openai
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway.api.app import create_app
from gateway.assembly import Gateway
from gateway.catalog import load_catalog
from gateway.observability.metrics import Metrics
from gateway.settings import Settings
from loadtest.fake_provider import FakeConfig, FakeProvider
from loadtest.fake_provider import create_app as create_fake

UPSTREAM = "http://upstream.test/v1"
UPSTREAM_KEY = "sk-inprocess-upstream"
CLIENT_KEY = "gw-inprocess-client"


@dataclass
class InProcess:
    app: Starlette
    gateway: Gateway
    fake: FakeProvider
    http: httpx.AsyncClient

    def openai(self, **options: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key=CLIENT_KEY,
                                  http_client=self.http, max_retries=0, **options)  # type: ignore[arg-type]


@asynccontextmanager
async def in_process(fake_config: FakeConfig | None = None,
                     **env: str) -> AsyncIterator[InProcess]:
    settings = Settings(**{  # type: ignore[arg-type]
        "HOLYSHEEP_BASE_URL": UPSTREAM, "HOLYSHEEP_API_KEY": UPSTREAM_KEY,
        "GATEWAY_API_KEYS": CLIENT_KEY, "GATEWAY_RETRY_BASE": "0.001",
        "GATEWAY_RETRY_MAX_WAIT": "0.002", **env})
    fake = create_fake(fake_config or FakeConfig(api_key=UPSTREAM_KEY, chunks=4))
    gateway = Gateway.build(settings, load_catalog(settings.config_path),
                            Metrics(CollectorRegistry()), transport=httpx.ASGITransport(fake))
    app = create_app(settings)
    app.state.gateway = gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test",
                                 headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as http:
        try:
            yield InProcess(app, gateway, fake, http)
        finally:
            await gateway.aclose()
