"""The semantic tier through real ``bentoml serve``: paraphrases hit, near-misses and
uncovered languages never do, and replicas share the index through Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer, RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SEMANTIC = {"GATEWAY_CACHE": "true", "GATEWAY_SEMANTIC_CACHE": "true"}


def ask(base: str, content: str, system: str = "You are helpful.") -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": "gpt-4.1", "messages": [{"role": "system", "content": system},
                                         {"role": "user", "content": content}]})


@pytest.fixture(scope="module")
def semantic(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url, env=SEMANTIC)
    yield server
    server.stop()


def test_a_paraphrase_is_served_from_the_semantic_tier(
    semantic: GatewayServer, fake: FakeProvider
) -> None:
    first = ask(semantic.url, "How do I reverse a list in Python?")
    time.sleep(0.1)
    second = ask(semantic.url, "What's the way to reverse a Python list?")
    assert second.headers["x-gateway-cache"] == "semantic-hit"
    assert float(second.headers["x-gateway-cache-similarity"]) >= 0.86
    assert second.content == first.content
    assert second.headers["x-gateway-cost-usd"] == "0.000000"
    assert fake.calls("gpt-4.1") == 1


@pytest.mark.parametrize(("first", "second"), [
    ("Convert 100 Celsius to Fahrenheit.", "Convert 100 Fahrenheit to Celsius."),
    ("Write a function that checks if a number is prime.",
     "Write a function that checks if a number is even."),
    ("Summarize this article in 3 bullet points.", "Summarize this article in 5 bullet points."),
    ("Explain recursion without code examples.", "Explain recursion with code examples."),
    ("Viết hàm quicksort bằng Python", "Hãy viết hàm quicksort trong Python"),
])
def test_near_misses_and_uncovered_languages_go_upstream(
    semantic: GatewayServer, fake: FakeProvider, first: str, second: str
) -> None:
    ask(semantic.url, first)
    time.sleep(0.1)
    response = ask(semantic.url, second)
    assert response.headers["x-gateway-cache"] == "miss"
    assert response.json()["choices"][0]["message"]["content"].startswith(
        f"Fake answer to: {second}")
    assert fake.calls("gpt-4.1") == 2


def test_a_vietnamese_repeat_is_still_an_exact_hit(semantic: GatewayServer,
                                                   fake: FakeProvider) -> None:
    ask(semantic.url, "Thủ đô của Việt Nam là gì?")
    time.sleep(0.1)
    assert ask(semantic.url, "Thủ đô của Việt Nam là gì?").headers["x-gateway-cache"] == "hit"


def test_another_system_prompt_is_another_scope(semantic: GatewayServer,
                                                fake: FakeProvider) -> None:
    ask(semantic.url, "Who painted the Mona Lisa?", system="Answer in one word.")
    time.sleep(0.1)
    response = ask(semantic.url, "Who was the painter of the Mona Lisa?", system="Answer at length.")
    assert response.headers["x-gateway-cache"] == "miss"


def test_a_burst_of_prompts_is_embedded_in_batches(semantic: GatewayServer,
                                                   fake: FakeProvider) -> None:
    def batches() -> tuple[float, float]:
        text = httpx.get(f"{semantic.url}/metrics").text
        get = lambda name: sum(float(line.split()[-1]) for line in text.splitlines()
                               if line.startswith(name))
        return get("gateway_batch_size_count"), get("gateway_batch_size_sum")

    before_count, before_sum = batches()

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=semantic.url, headers=AUTH, timeout=30) as client:
            await asyncio.gather(*(client.post("/v1/chat/completions", json={
                "model": "gpt-4.1", "messages": [{"role": "user", "content": f"topic {i} please"}]})
                for i in range(24)))

    asyncio.run(burst())
    count, total = batches()
    assert total - before_sum == 24  # every prompt was embedded once
    assert count - before_count < 24  # in fewer forward passes than prompts


def test_replicas_share_the_semantic_index_through_redis(fake: FakeProvider,
                                                         log_dir: Path) -> None:
    redis = RedisServer(log_dir)
    env = {**SEMANTIC, "REDIS_URL": redis.url}
    a = GatewayServer(log_dir, fake.base_url, env=env)
    b = GatewayServer(log_dir, fake.base_url, env=env)
    try:
        ask(a.url, "How do I create a virtual environment in Python?")
        time.sleep(0.3)
        response = ask(b.url, "How can I make a Python virtual environment?")
        assert response.headers["x-gateway-cache"] == "semantic-hit"
        assert fake.calls("gpt-4.1") == 1
    finally:
        a.stop()
        b.stop()
        redis.stop()
