"""``/v1/chat/completions`` in process: what a client gets for each cache outcome, priced by
the one accounting path, with the upstream's bytes never altered."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest

from gateway.cache.entry import CachedAnswer
from gateway.pricing import cost_usd

from .inprocess import in_process

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "price me"}]}


def sse_events(body: bytes) -> list[Any]:
    events = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block[6:]
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


async def stored_answers(gateway: Any) -> list[CachedAnswer]:
    await gateway.cache.flush()
    store = gateway.cache._store
    return [CachedAnswer.loads(raw) for _, (_, raw) in store._data.items()]


async def test_a_streamed_hit_reports_a_cost_of_zero_in_its_usage_chunk() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        first = await gw.http.post("/v1/chat/completions", json=body)
        assert first.headers["x-gateway-cache"] == "miss"
        (usage,) = [
            e["usage"] for e in sse_events(first.content) if e != "[DONE]" and e.get("usage")
        ]
        price = gw.gateway.catalog.models["gpt-4.1"]
        paid = cost_usd(price, usage["prompt_tokens"], usage["completion_tokens"])
        assert Decimal(str(usage["cost_usd"])) == paid > 0
        await stored_answers(gw.gateway)
        second = await gw.http.post("/v1/chat/completions", json=body)
        assert second.headers["x-gateway-cache"] == "hit"
        (hit_usage,) = [
            e["usage"] for e in sse_events(second.content) if e != "[DONE]" and e.get("usage")
        ]
        assert hit_usage["cost_usd"] == 0
        assert second.headers["x-gateway-saved-usd"] == f"{paid:.6f}"


async def test_what_the_cache_stores_is_the_upstreams_answer_without_gateway_fields() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        await gw.http.post("/v1/chat/completions", json=body)
        (stored,) = await stored_answers(gw.gateway)
        assert "cost_usd" not in stored.data()["usage"]
        plain = await gw.http.post("/v1/chat/completions", json=CHAT)
        assert plain.headers["x-gateway-cache"] == "hit"
        assert plain.headers["x-gateway-cost-usd"] == "0.000000"
        assert "cost_usd" not in plain.json()["usage"]


async def test_a_non_streamed_miss_is_relayed_byte_for_byte_and_priced_in_a_header() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        answer = await gw.http.post("/v1/chat/completions", json=CHAT)
        usage = answer.json()["usage"]
        assert answer.json()["x_fake_provider"]  # an upstream field the gateway does not know
        price = gw.gateway.catalog.models["gpt-4.1"]
        expected = cost_usd(price, usage["prompt_tokens"], usage["completion_tokens"])
        assert answer.headers["x-gateway-cost-usd"] == f"{expected:.6f}"


async def test_coalesced_followers_share_one_upstream_call_and_pay_nothing() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        gw.fake.config.latency_ms = 50
        answers = await asyncio.gather(
            *(gw.http.post("/v1/chat/completions", json=CHAT) for _ in range(5))
        )
        assert gw.fake.requests["gpt-4.1"] == 1
        results = sorted(a.headers["x-gateway-cache"] for a in answers)
        assert results == ["coalesced"] * 4 + ["miss"]
        costs = {a.headers["x-gateway-cache"]: a.headers["x-gateway-cost-usd"] for a in answers}
        assert costs["coalesced"] == "0.000000" and costs["miss"] != "0.000000"
        assert {a.content for a in answers} == {answers[0].content}


async def test_streams_coalesce_behind_a_streaming_leader_and_replay_its_answer() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        gw.fake.config.chunk_delay_ms = 20
        body = {**CHAT, "stream": True}
        answers = await asyncio.gather(
            *(gw.http.post("/v1/chat/completions", json=body) for _ in range(3))
        )
        assert gw.fake.requests["gpt-4.1"] == 1
        assert sorted(a.headers["x-gateway-cache"] for a in answers) == [
            "coalesced",
            "coalesced",
            "miss",
        ]
        texts = {
            "".join(
                e["choices"][0]["delta"].get("content") or ""
                for e in sse_events(a.content)
                if e != "[DONE]" and e["choices"]
            )
            for a in answers
        }
        assert len(texts) == 1 and texts.pop()
        assert all(sse_events(a.content)[-1] == "[DONE]" for a in answers)


async def test_followers_of_a_failed_stream_make_their_own_calls() -> None:
    async with in_process(GATEWAY_CACHE="true") as gw:
        gw.fake.config.chunk_delay_ms = 20
        gw.fake.faults.append(_fault("gpt-4.1", "truncate", times=1, after_chunks=2))
        body = {**CHAT, "stream": True}
        answers = await asyncio.gather(
            *(gw.http.post("/v1/chat/completions", json=body) for _ in range(3))
        )
        ends = sorted(str(sse_events(a.content)[-1]) for a in answers)
        assert ends.count("[DONE]") == 2  # the two followers were answered by their own calls
        assert gw.fake.requests["gpt-4.1"] == 3


@pytest.mark.parametrize(
    "field",
    [
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "tools",
        "tool_choice",
        "response_format",
        "stop",
        "n",
        "max_completion_tokens",
        "seed",
        "user",
    ],
)
async def test_a_null_optional_parameter_means_absent(field: str) -> None:
    async with in_process() as gw:
        answer = await gw.http.post("/v1/chat/completions", json={**CHAT, field: None})
        assert answer.status_code == 200, answer.text


async def test_the_key_is_accepted_as_x_api_key_too() -> None:
    async with in_process() as gw:
        answer = await gw.http.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": "", "x-api-key": "gw-inprocess-client"},
        )
        assert answer.status_code == 200
        wrong = await gw.http.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "", "x-api-key": "nope"}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


async def test_health_is_degraded_but_200_when_no_model_of_the_default_chain_can_answer() -> None:
    async with in_process(GATEWAY_BREAKER_FAILURES="1", GATEWAY_RETRY_ATTEMPTS="1") as gw:
        healthy = (await gw.http.get("/health")).json()
        assert healthy["status"] == "healthy" and healthy["problems"] == []
        gw.fake.faults.append(_fault("*", "status", status=503))
        failed = await gw.http.post("/v1/chat/completions", json={**CHAT, "model": "deepseek-v3.2"})
        assert failed.status_code == 502
        report = await gw.http.get("/health")
        assert report.status_code == 200
        body = report.json()
        assert body["status"] == "degraded"
        assert any("circuit breaker" in p for p in body["problems"])
        assert body["upstream"]["reachable"] is False


async def test_an_embeddings_line_in_the_access_log_counts_its_upstream_attempts() -> None:
    async with in_process() as gw:
        gw.fake.faults.append(_fault("text-embedding-3-small", "status", status=503, times=1,
                                     endpoint="embeddings"))
        answer = await gw.http.post("/v1/embeddings", json={
            "model": "text-embedding-3-small", "input": "hello"})
        assert answer.status_code == 200
        assert answer.headers["x-gateway-attempts"] == "2"
        line = gw.gateway.tenants.access.snapshot()[-1]
        assert line["route"] == "/v1/embeddings" and line["attempts"] == 2


async def test_models_and_health_say_provider_for_the_upstream_and_owned_by_for_the_vendor(
        ) -> None:
    async with in_process() as gw:
        listed = {m["id"]: m for m in (await gw.http.get("/models")).json()["models"]}
        health = (await gw.http.get("/health")).json()
    gpt = listed["gpt-4.1"]
    assert gpt["owned_by"] == "openai" and gpt["providers"] == ["holysheep"]
    assert gpt["provider"] == gpt["owned_by"]  # the simplified contract's name for the vendor
    served_by = {d["provider"] for d in health["deployments"]["gpt-4.1"]["deployments"].values()}
    assert served_by == set(gpt["providers"])


def _fault(model: str, kind: str, **spec: Any) -> Any:
    from loadtest.fake_provider import Fault

    return Fault(model=model, kind=kind, **spec)
