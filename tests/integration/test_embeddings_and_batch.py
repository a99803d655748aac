"""``/v1/embeddings`` with adaptive batching, and ``POST /batch``, through ``bentoml serve``."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from gateway.catalog import load_catalog
from gateway.pricing import cost_usd, to_micro
from loadtest.fake_provider import fake_vector
from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MODEL = "text-embedding-3-small"
CATALOG = load_catalog()


async def embed_concurrently(base: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
        return await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": MODEL, "input": text}) for text in texts)
        )


def test_concurrent_requests_share_upstream_calls_and_get_their_own_vectors(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    texts = [f"sentence number {i} " + "x" * i for i in range(32)]
    responses = asyncio.run(embed_concurrently(gateway.url, texts))
    assert [r.status_code for r in responses] == [200] * 32
    for text, response in zip(texts, responses, strict=True):
        body = response.json()
        assert len(body["data"]) == 1
        assert body["data"][0]["embedding"] == pytest.approx(fake_vector(text, 384), abs=1e-12)
    stats = fake.stats()
    assert stats["embedding_calls"] <= 8  # far fewer than 32
    assert sum(stats["embedding_batch_sizes"]) == 32
    billed = sum(len(t) // 4 + 1 for t in texts)  # what the fake provider charged in all
    assert sum(r.json()["usage"]["prompt_tokens"] for r in responses) == billed
    assert max(int(r.headers["x-gateway-batch-size"]) for r in responses) > 1


def test_a_failed_batch_fails_every_caller_with_a_proper_error(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.fault(model=MODEL, kind="status", status=400, message="input rejected")
    responses = asyncio.run(embed_concurrently(gateway.url, [f"t{i}" for i in range(16)]))
    assert [r.status_code for r in responses] == [400] * 16
    assert all(r.json()["error"]["message"] == "input rejected" for r in responses)
    assert fake.calls(MODEL) < 16  # they were batched, and every one of them got the failure


def test_the_sdk_gets_vectors_in_order_with_base64_and_dimensions(
    gateway: GatewayServer,
) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    result = sdk.embeddings.create(model=MODEL, input=texts, dimensions=8)  # SDK asks base64
    assert [d.index for d in result.data] == [0, 1, 2, 3, 4]
    for text, item in zip(texts, result.data, strict=True):
        assert item.embedding == pytest.approx(fake_vector(text, 8), abs=1e-6)


def test_base64_is_passed_through(client: httpx.Client) -> None:
    body = client.post(
        "/v1/embeddings",
        json={"model": MODEL, "input": "hello", "encoding_format": "base64", "dimensions": 4},
    ).json()
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == pytest.approx(fake_vector("hello", 4), abs=1e-6)


def test_embeddings_are_priced(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x" * 400})
    tokens = response.json()["usage"]["prompt_tokens"]
    assert tokens == 101
    expected = (Decimal(tokens) * Decimal("0.02") / Decimal(1_000_000)).quantize(
        Decimal("0.000001")
    )
    assert response.headers["x-gateway-cost-usd"] == str(expected)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "gpt-4.1", "input": "x"}, 400),
        ({"model": "no-such-embedder", "input": "x"}, 404),
        ({"model": MODEL, "input": ""}, 400),
        ({"model": MODEL, "input": []}, 400),
        ({"model": MODEL}, 400),
        ({"model": MODEL, "input": "x", "encoding_format": "hex"}, 400),
    ],
)
def test_bad_embedding_requests_get_openai_errors(
    client: httpx.Client, body: dict, status: int
) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.fixture
def patient_batcher(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url, env={"GATEWAY_BATCH_MAX_LATENCY_MS": "2000"})
    yield server
    server.stop()


def test_a_lone_request_is_not_held_for_the_batch_wait(patient_batcher: GatewayServer) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{patient_batcher.v1}/embeddings", headers=AUTH, json={"model": MODEL, "input": "alone"}
    )
    assert response.status_code == 200
    assert time.monotonic() - started < 0.5  # the batch wait is 2 s


def test_batch_answers_each_request_on_its_own_in_order(
    client: httpx.Client, fake: FakeProvider
) -> None:
    fake.fault(model="gpt-4.1", kind="status", status=400, message="bad request for gpt-4.1")
    requests = [
        {"messages": [{"role": "user", "content": "first"}]},
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "second"}]},
        {"model": "unknown-model", "messages": [{"role": "user", "content": "third"}]},
        {"model": "claude-sonnet-4.5", "messages": [{"role": "user", "content": "fourth"}]},
        {"messages": []},
    ]
    body = client.post("/batch", json={"requests": requests}).json()
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [200, 400, 404, 200, 400]
    assert results[0]["response"]["content"].startswith("Fake answer to: first")
    assert results[3]["response"]["content"].startswith("Fake answer to: fourth")
    assert results[1]["error"]["message"] == "bad request for gpt-4.1"
    assert results[2]["error"]["code"] == "model_not_found"
    assert body["succeeded"] == 2 and body["failed"] == 3
    exact = sum(
        cost_usd(
            CATALOG.models[model],
            r["response"]["usage"]["prompt_tokens"],
            r["response"]["usage"]["completion_tokens"],
        )
        for model, r in (("deepseek-v3.2", results[0]), ("claude-sonnet-4.5", results[3]))
    )
    assert body["total_cost_usd"] == float(to_micro(exact))


def test_batch_limits_are_enforced(client: httpx.Client) -> None:
    one = {"messages": [{"role": "user", "content": "x"}]}
    assert client.post("/batch", json={"requests": []}).status_code == 400
    assert client.post("/batch", json={"requests": [one] * 101}).status_code == 400
    assert client.post("/batch", json={"nope": 1}).status_code == 400
