"""Cache building blocks: keys, the in-process store, directives, replay and coalescing."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.cache.entry import CachedAnswer
from gateway.cache.keys import exact_key, semantic_scope
from gateway.cache.memory import MemoryStore
from gateway.cache.replay import Assembler, ReplayStream
from gateway.cache.service import Cache, Directives
from gateway.observability.metrics import Metrics

BASE = {
    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
    "temperature": 0.7,
}


def answer(content: str = "hello", finish: str = "stop") -> CachedAnswer:
    body = orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )
    return CachedAnswer(body, "gpt-4.1", 3, 2, time.time())


def test_the_exact_key_covers_tenant_model_parameters_and_every_message() -> None:
    key = exact_key("t1", "gpt-4.1", BASE)
    assert key == exact_key("t1", "gpt-4.1", {**BASE, "stream": True, "user": "u"})
    assert key != exact_key("t2", "gpt-4.1", BASE)
    assert key != exact_key("t1", "gpt-4.1-mini", BASE)
    assert key != exact_key("t1", "gpt-4.1", {**BASE, "temperature": 0.2})
    assert key != exact_key(
        "t1",
        "gpt-4.1",
        {
            **BASE,
            "messages": [{"role": "system", "content": "other"}, {"role": "user", "content": "q"}],
        },
    )
    assert key != exact_key("t1", "gpt-4.1", {**BASE, "tools": [{"type": "function"}]})


def test_the_semantic_scope_ignores_the_question_but_not_the_system_prompt_or_turns() -> None:
    scope = semantic_scope("t1", "gpt-4.1", BASE)
    other_question = {**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "z"}]}
    assert scope == semantic_scope("t1", "gpt-4.1", other_question)
    more_turns = {
        **BASE,
        "messages": [
            *BASE["messages"],
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "b"},
        ],
    }
    assert scope != semantic_scope("t1", "gpt-4.1", more_turns)
    assert scope != semantic_scope("t2", "gpt-4.1", BASE)


async def test_the_memory_store_evicts_least_recently_used_by_count_and_bytes() -> None:
    store = MemoryStore(max_entries=2, max_bytes=100, ttl_s=60)
    await store.set("a", b"1" * 10)
    await store.set("b", b"2" * 10)
    assert await store.get("a") == b"1" * 10  # a is now the most recent
    await store.set("c", b"3" * 10)
    assert await store.get("b") is None and store.entries() == 2
    await store.set("d", b"4" * 95)  # bytes: only d fits
    assert (await store.get("a"), await store.get("c"), store.entries()) == (None, None, 1)
    await store.set("huge", b"x" * 101)
    assert await store.get("huge") is None


async def test_the_memory_store_forgets_after_the_ttl() -> None:
    store = MemoryStore(max_entries=10, max_bytes=1000, ttl_s=0.05)
    await store.set("a", b"1")
    await asyncio.sleep(0.08)
    assert await store.get("a") is None and store.entries() == 0


def test_cache_control_directives() -> None:
    assert Directives.parse(None) == Directives(lookup=True, store=True)
    assert Directives.parse("no-cache") == Directives(lookup=False, store=True)
    assert Directives.parse("No-Store, max-age=0") == Directives(lookup=True, store=False)


async def test_a_replay_rebuilds_the_answer_an_assembler_collected() -> None:
    assembler = Assembler()
    for piece, finish in (("Hel", None), ("lo", None), ("", "stop")):
        assembler.feed(
            {
                "id": "c1",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}],
            }
        )
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    body = assembler.body(usage)
    assert assembler.rebuildable and assembler.finish_reasons() == ["stop"]
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "Hello"
    replay = ReplayStream(CachedAnswer(body, "m", 3, 2, 0.0))
    chunks = [c async for _, c in replay]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "Hello"
    )
    assert chunks[-1] == {**chunks[-1], "choices": [], "usage": usage}
    assert replay.finish_reason == "stop"


TOOL_DELTAS = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ],
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Hanoi"}'}}]},
    {
        "tool_calls": [
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "g", "arguments": "{}"},
            }
        ]
    },
]


async def test_a_tool_call_stream_is_assembled_and_replayed_with_indexed_deltas() -> None:
    assembler = Assembler()
    for delta in TOOL_DELTAS:
        assembler.feed(
            {
                "id": "c1",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    assembler.feed(
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    )
    assert assembler.rebuildable and assembler.finish_reasons() == ["tool_calls"]
    message = orjson.loads(assembler.body(None))["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "f", "arguments": '{"city": "Hanoi"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    replay = ReplayStream(CachedAnswer(assembler.body(None), "m", 3, 2, 0.0))
    calls = [
        call
        async for _, chunk in replay
        for choice in chunk["choices"]
        for call in (choice["delta"].get("tool_calls") or ())
    ]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, "call_a", "f"),
        (1, "call_b", "g"),
    ]


def test_a_delta_the_assembler_cannot_rebuild_keeps_the_stream_out_of_the_cache() -> None:
    assembler = Assembler()
    assembler.feed(
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"function_call": {"name": "f"}},
                    "finish_reason": "function_call",
                }
            ],
        }
    )
    assert not assembler.rebuildable


def test_only_complete_answers_are_storable() -> None:
    cache = Cache(MemoryStore(10, 10_000, 60), Metrics(CollectorRegistry()))
    assert cache.storable(["stop"])
    assert not cache.storable(["length"]) and not cache.storable([None]) and not cache.storable([])


async def test_identical_requests_in_flight_share_one_call_and_its_errors() -> None:
    cache = Cache(MemoryStore(10, 10_000, 60), Metrics(CollectorRegistry()))
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "leader's answer"

    results = await asyncio.gather(
        *(cache._coalesced("k", compute, lambda _: answer(), later=False) for _ in range(10))
    )
    assert calls == 1
    assert results[0] == ("leader's answer", None)
    assert all(isinstance(r, CachedAnswer) for r in results[1:])

    async def failing() -> str:
        await asyncio.sleep(0.02)
        raise ValueError("upstream down")

    outcomes = await asyncio.gather(
        *(cache._coalesced("k2", failing, lambda _: answer(), later=False) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_followers_call_for_themselves_when_the_leader_is_cancelled() -> None:
    cache = Cache(MemoryStore(10, 10_000, 60), Metrics(CollectorRegistry()))
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "own"

    leader = asyncio.ensure_future(cache._coalesced("k", compute, lambda _: answer(), later=False))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(
        cache._coalesced("k", compute, lambda _: answer(), later=False)
    )
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await follower == ("own", None) and calls == 2
    with pytest.raises(asyncio.CancelledError):
        await leader
