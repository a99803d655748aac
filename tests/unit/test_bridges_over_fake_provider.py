"""The three bridges end to end over the project's fake provider (its ASGI app, in process):
the official SDKs talk to a MockTransport handler that does what the routes will do (parse,
to_chat, call the upstream's /v1/chat/completions, translate back), and the upstream's answers
are the fake provider's real wire: JSON, SSE chunks with tool calls streamed as indexed deltas
whose arguments arrive in pieces, usage chunks, length cuts, tool-result echoes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from gateway.bridges import anthropic as messages_bridge
from gateway.bridges import completions as completions_bridge
from gateway.bridges import responses as responses_bridge
from gateway.upstream.sse import EventDecoder
from loadtest.fake_provider import FakeConfig
from loadtest.fake_provider import create_app as create_fake

KEY = "sk-fake-upstream"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string"}},
           "required": ["city", "unit"]}
Handler = Callable[[dict[str, Any]], Awaitable[tuple[bytes, str]]]


class Upstream:
    """The fake provider's chat completions, whole or as parsed chunks."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.payloads: list[dict[str, Any]] = []

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.payloads.append(payload)
        response = await self.http.post("/v1/chat/completions", json=payload)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def chunks(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.payloads.append(payload)
        decoder = EventDecoder()
        async with self.http.stream("POST", "/v1/chat/completions", json=payload) as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                for event in decoder.feed(data):
                    if event.is_done:
                        return
                    yield orjson.loads(event.data)
        raise AssertionError("the upstream stream ended without [DONE]")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    fake = create_fake(FakeConfig(api_key=KEY, chunks=4))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake),
                                 base_url="http://upstream.test",
                                 headers={"Authorization": f"Bearer {KEY}"}) as http:
        yield Upstream(http)


def transport(handler: Handler) -> httpx2.AsyncClient:
    async def handle(request: httpx2.Request) -> httpx2.Response:
        content, kind = await handler(orjson.loads(request.content))
        return httpx2.Response(200, content=content, headers={"content-type": kind})

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handle))


def messages_gateway(upstream: Upstream) -> anthropic.AsyncAnthropic:
    async def handle(body: dict[str, Any]) -> tuple[bytes, str]:
        req = messages_bridge.parse_request(body)
        payload = messages_bridge.to_chat(req)
        if not req.stream:
            message = messages_bridge.from_chat(await upstream.complete(payload),
                                                model=req.model,
                                                stop_sequences=req.stop_sequences)
            return orjson.dumps(message), "application/json"
        stream = messages_bridge.MessagesStream(model=req.model,
                                                stop_sequences=req.stop_sequences)
        data = stream.start()
        async for chunk in upstream.chunks(payload):
            data += stream.feed(chunk)
        return data + stream.finish(), "text/event-stream"

    return anthropic.AsyncAnthropic(base_url="http://gateway.test", api_key="k", max_retries=0,
                                    http_client=transport(handle))


def responses_gateway(upstream: Upstream) -> openai.AsyncOpenAI:
    async def handle(body: dict[str, Any]) -> tuple[bytes, str]:
        req = responses_bridge.parse_request(body)
        payload = responses_bridge.to_chat(req)
        if not req.stream:
            response = responses_bridge.from_chat(await upstream.complete(payload), request=req)
            return orjson.dumps(response), "application/json"
        stream = responses_bridge.ResponsesStream(req)
        data = stream.start()
        async for chunk in upstream.chunks(payload):
            data += stream.feed(chunk)
        return data + stream.finish(), "text/event-stream"

    return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key="k", max_retries=0,
                              http_client=transport(handle))


def completions_gateway(upstream: Upstream) -> openai.AsyncOpenAI:
    async def handle(body: dict[str, Any]) -> tuple[bytes, str]:
        req = completions_bridge.parse_request(body)
        payload = completions_bridge.to_chat(req)
        if not req.stream:
            completion = completions_bridge.from_chat(await upstream.complete(payload),
                                                      request=req)
            return orjson.dumps(completion), "application/json"
        stream = completions_bridge.CompletionsStream(req)
        data = b""
        async for chunk in upstream.chunks(payload):
            data += stream.feed(chunk)
        return data + b"data: [DONE]\n\n", "text/event-stream"

    return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key="k", max_retries=0,
                              http_client=transport(handle))


TOOL = {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}


async def test_messages_tool_round_trip_plain_and_streamed_agree(upstream: Upstream) -> None:
    client = messages_gateway(upstream)
    ask = [{"role": "user", "content": "Weather in Hanoi?"}]
    first = await client.messages.create(model="deepseek-v3.2", max_tokens=200, tools=[TOOL],
                                         messages=ask)
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert set(call.input) == {"city", "unit"}
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    async with client.messages.stream(model="deepseek-v3.2", max_tokens=200, tools=[TOOL],
                                      messages=ask) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].input == call.input and streamed.content[0].id == call.id
    assert streamed.stop_reason == "tool_use"
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == \
        (first.usage.input_tokens, first.usage.output_tokens)
    final = await client.messages.create(model="deepseek-v3.2", max_tokens=200, tools=[TOOL],
                                         messages=[*ask, {"role": "assistant",
                                                          "content": first.content},
                                                   {"role": "user", "content": [
                                                       {"type": "tool_result",
                                                        "tool_use_id": call.id,
                                                        "content": "31C and sunny"}]}])
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "Tool result received: 31C and sunny"


async def test_messages_text_stream_matches_the_plain_answer_and_a_cut_is_max_tokens(
        upstream: Upstream) -> None:
    client = messages_gateway(upstream)
    ask = [{"role": "user", "content": "Tell me a story"}]
    plain = await client.messages.create(model="deepseek-v3.2", max_tokens=500, messages=ask)
    async with client.messages.stream(model="deepseek-v3.2", max_tokens=500,
                                      messages=ask) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == plain.content[0].text == final.content[0].text
    assert text.startswith("Fake answer to: Tell me a story.")
    cut = await client.messages.create(model="deepseek-v3.2", max_tokens=5, messages=ask)
    assert cut.stop_reason == "max_tokens"
    assert len(cut.content[0].text) <= 20


async def test_responses_function_call_round_trip_plain_and_streamed(upstream: Upstream) -> None:
    client = responses_gateway(upstream)
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER}
    first = await client.responses.create(model="deepseek-v3.2", input="Weather in Hue?",
                                          tools=[tool])
    call = first.output[0]
    assert call.type == "function_call" and set(orjson.loads(call.arguments)) == {"city", "unit"}
    async with client.responses.stream(model="deepseek-v3.2", input="Weather in Hue?",
                                       tools=[tool]) as stream:
        streamed = await stream.get_final_response()
    assert streamed.output[0].arguments == call.arguments
    assert streamed.output[0].call_id == call.call_id
    assert streamed.usage.total_tokens == first.usage.total_tokens > 0
    final = await client.responses.create(model="deepseek-v3.2", tools=[tool], input=[
        {"role": "user", "content": "Weather in Hue?"}, *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": "29C"}])
    assert final.output_text == "Tool result received: 29C"


async def test_responses_length_cut_is_incomplete(upstream: Upstream) -> None:
    client = responses_gateway(upstream)
    cut = await client.responses.create(model="deepseek-v3.2", input="Tell me a story",
                                        max_output_tokens=5)
    assert cut.status == "incomplete"
    assert cut.incomplete_details.reason == "max_output_tokens"


async def test_completions_plain_and_streamed_agree(upstream: Upstream) -> None:
    client = completions_gateway(upstream)
    plain = await client.completions.create(model="deepseek-v3.2", prompt="Once upon a time",
                                            max_tokens=40)
    stream = await client.completions.create(model="deepseek-v3.2", prompt="Once upon a time",
                                             max_tokens=40, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text and text.startswith("Fake answer to: Once upon")
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert upstream.payloads[0]["max_tokens"] == 40


def test_every_bridge_payload_passes_the_core_planner() -> None:
    """What the routes will hand the core: the chat payloads plan_chat must accept as they are
    (tool messages, null assistant content, image parts, stream options included)."""
    from gateway.catalog import load_catalog
    from gateway.plan.chat import plan_chat

    catalog = load_catalog()
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    payloads = [
        messages_bridge.to_chat(messages_bridge.parse_request({
            "model": "deepseek-v3.2", "max_tokens": 50, "stream": True, "tools": [TOOL],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "system": "s", "stop_sequences": ["END"], "top_k": 5,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "see"}, image]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t",
                                                   "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                              "content": "ok"}]}]})),
        responses_bridge.to_chat(responses_bridge.parse_request({
            "model": "deepseek-v3.2", "stream": True, "instructions": "i",
            "tools": [{"type": "function", "name": "f", "parameters": WEATHER}],
            "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "low"},
            "input": [{"role": "user", "content": "q"},
                      {"type": "function_call", "call_id": "c", "name": "f",
                       "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c", "output": "r"}]})),
        completions_bridge.to_chat(completions_bridge.parse_request({
            "model": "deepseek-v3.2", "prompt": "p", "stream": True, "n": 2})),
    ]
    for payload in payloads:
        plan = plan_chat(catalog, payload, catalog_defaults=False)
        assert plan.model == "deepseek-v3.2" and plan.stream
        assert plan.payload["messages"] == payload["messages"]
        assert plan.payload["stream_options"]["include_usage"] is True
