"""``GET /v1/models/{model}`` through the app's own error handling, with a real catalog and a
real ``Gateway`` behind it, driven by the official ``openai`` SDK over an ASGI transport."""

from __future__ import annotations

import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway.api import models
from gateway.api.app import create_app
from gateway.assembly import Gateway
from gateway.catalog import Catalog
from gateway.observability.metrics import Metrics
from gateway.settings import Settings

CATALOG = Catalog.model_validate({
    "default_model": "deepseek-v3.2",
    "models": {
        "deepseek-v3.2": {"provider": "deepseek", "upstream_model": "deepseek-v3.2",
                          "input_usd_per_mtok": "0.42", "output_usd_per_mtok": "0.42"},
        "meta-llama/llama-3.1-8b": {"provider": "meta", "upstream_model": "llama",
                                    "input_usd_per_mtok": "0.1"},
    },
})


@pytest.fixture
def app() -> Starlette:
    settings = Settings(GATEWAY_API_KEYS="team-key", GATEWAY_CACHE=False)
    application = create_app(settings)
    application.router.routes.extend(models.routes)
    application.state.gateway = Gateway.build(settings, CATALOG, Metrics(CollectorRegistry()))
    return application


def sdk(app: Starlette, key: str = "team-key") -> openai.AsyncOpenAI:
    transport = httpx2.ASGITransport(app=app)
    return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key=key, max_retries=0,
                              http_client=httpx2.AsyncClient(transport=transport))


@pytest.mark.parametrize(("name", "owner"), [("deepseek-v3.2", "deepseek"),
                                             ("meta-llama/llama-3.1-8b", "meta")])
async def test_a_catalog_model_is_retrieved_by_id(app: Starlette, name: str, owner: str) -> None:
    model = await sdk(app).models.retrieve(name)
    assert (model.id, model.object, model.owned_by) == (name, "model", owner)


async def test_the_model_object_is_the_one_the_list_gives(app: Starlette) -> None:
    client = sdk(app)
    listed = {m.id: m async for m in client.models.list()}
    assert await client.models.retrieve("deepseek-v3.2") == listed["deepseek-v3.2"]


async def test_an_unknown_model_is_404_model_not_found(app: Starlette) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(app).models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"
    assert "gpt-9" in caught.value.message


async def test_a_wrong_key_is_401(app: Starlette) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(app, key="stolen").models.retrieve("deepseek-v3.2")
    assert caught.value.code == "invalid_api_key"
    assert "stolen" not in str(caught.value.body)
