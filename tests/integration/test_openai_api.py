"""The OpenAI-compatible API through real ``bentoml serve``, driven by the official SDK."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import openai
import pytest

from gateway.catalog import load_catalog
from gateway.pricing import cost_usd, format_usd
from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY, FakeProvider, GatewayServer

CATALOG = load_catalog()
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


def expected_cost(model: str, prompt: int, completion: int) -> str:
    return format_usd(cost_usd(CATALOG.models[model], prompt, completion))


@pytest.fixture
def sdk(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def test_sync_sdk_completion_is_priced_in_a_header(sdk: openai.OpenAI, fake: FakeProvider) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4.1", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Fake answer to: hello there")
    assert completion.model == "gpt-4.1"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert raw.headers["x-gateway-cost-usd"] == expected_cost(
        "gpt-4.1", usage.prompt_tokens, usage.completion_tokens
    )
    assert raw.headers["x-gateway-model"] == "gpt-4.1"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert fake.calls("gpt-4.1") == 1


def test_answer_is_the_upstream_bytes_with_unknown_fields_kept(
    client: httpx.Client, fake: FakeProvider
) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "deepseek-v3.2", "messages": MESSAGES}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["x_fake_provider"] == "fake"
    assert body["system_fingerprint"] == "fake"
    assert body["object"] == "chat.completion"


def test_upstream_gets_the_gateway_key_not_the_clients(
    client: httpx.Client, fake: FakeProvider
) -> None:
    client.post(
        "/v1/chat/completions",
        json={"model": "deepseek-v3.2", "messages": MESSAGES},
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    stats = fake.stats()
    assert stats["last_authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert stats["last_traceparent"] is None  # client headers are not forwarded; tracing is off


def test_async_sdk_runs_concurrent_requests(gateway: GatewayServer, fake: FakeProvider) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="gemini-2.5-flash",
                        messages=[{"role": "user", "content": f"question {i}"}],
                    )
                    for i in range(20)
                )
            )
        return [a.choices[0].message.content or "" for a in answers]

    contents = asyncio.run(run())
    assert [c.startswith(f"Fake answer to: question {i}") for i, c in enumerate(contents)] == [
        True
    ] * 20
    assert fake.calls("gemini-2.5-flash") == 20


def test_stream_relays_every_chunk_and_hides_the_usage_chunk_nobody_asked_for(
    sdk: openai.OpenAI,
) -> None:
    whole = sdk.chat.completions.create(model="deepseek-v3.2", messages=MESSAGES)
    chunks = list(
        sdk.chat.completions.create(model="deepseek-v3.2", messages=MESSAGES, stream=True)
    )
    assert len(chunks) == 5
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_with_include_usage_ends_with_priced_usage(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="claude-sonnet-4.5",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    extra = last.usage.model_extra or {}
    expected = Decimal(
        expected_cost("claude-sonnet-4.5", last.usage.prompt_tokens, last.usage.completion_tokens)
    )
    assert Decimal(str(extra["cost_usd"])) == expected


def test_stream_over_http_ends_with_done_and_carries_gateway_headers(
    client: httpx.Client,
) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "deepseek-v3.2", "messages": MESSAGES, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-model"] == "deepseek-v3.2"
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1


def test_stream_first_chunk_arrives_before_the_upstream_finishes(
    gateway: GatewayServer, fake: FakeProvider
) -> None:
    fake.configure(chunks=4, chunk_delay_ms=400)
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "deepseek-v3.2", "messages": MESSAGES, "stream": True},
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.monotonic() - started
        rest = [line for line in lines if line.startswith("data: ")]
        total = time.monotonic() - started
    assert '"role":"assistant"' in first.replace(" ", "")
    assert rest[-1] == "data: [DONE]"
    assert total >= 1.2  # three 400 ms gaps upstream
    # The first chunk was not held back until the end: at least two of the three gaps came
    # after it (a held-back stream ends within milliseconds of its first chunk).
    assert total - first_at > 0.8


def test_async_sdk_streams(gateway: GatewayServer) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY) as client:
            stream = await client.chat.completions.create(
                model="gpt-4.1", messages=MESSAGES, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run()).startswith("Fake answer to: hello there")


def test_models_are_listed_in_openai_shape(sdk: openai.OpenAI) -> None:
    models = {m.id: m.owned_by for m in sdk.models.list()}
    assert models == {
        "deepseek-v3.2": "deepseek",
        "gemini-2.5-flash": "google",
        "gpt-4.1": "openai",
        "claude-sonnet-4.5": "anthropic",
        "text-embedding-3-small": "openai",
    }


def test_clients_at_the_concurrency_limit_streaming_back_to_back_are_never_refused(
    gateway: GatewayServer,
) -> None:
    # 50 clients (the default GATEWAY_MAX_CONCURRENCY) each start a new stream the moment the
    # last one ended: a stream must give its slot back before its client can ask again.
    import aiohttp

    body = {"model": "deepseek-v3.2", "messages": MESSAGES, "stream": True}

    async def burst() -> list[tuple[int, bytes]]:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(
            connector=connector, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
        ) as session:

            async def client() -> list[tuple[int, bytes]]:
                answers = []
                for _ in range(10):
                    async with session.post(gateway.v1 + "/chat/completions", json=body) as r:
                        answers.append((r.status, (await r.read())[-14:]))
                return answers

            return [
                a
                for answers in await asyncio.gather(*(client() for _ in range(50)))
                for a in answers
            ]

    answers = asyncio.run(burst())
    assert answers == [(200, b"data: [DONE]\n\n")] * 500
