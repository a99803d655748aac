"""Every way an answer can come back × both delivery modes × plain and tool-call answers,
through the official ``openai`` SDK (its stream helper for streams): the cost fields and the
body's shape must be right in each cell.

{non-stream, stream} × {miss, exact hit, semantic hit, coalesced} × {plain answer, tool calls}
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from gateway.pricing import cost_usd

from .inprocess import CLIENT_KEY, in_process

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "required": ["city", "unit"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}},
}}, {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "required": ["city"],
                                       "properties": {"city": {"type": "string"}}}}}]
# The semantic tier serves the second of each pair from the first one's answer.
PROMPTS = {"plain": ("What is the capital city of France?", "What's the capital city of France?"),
           "tools": ("What is the capital of France? Use parallel calls.",
                     "What's the capital of France? Use parallel calls.")}
MODEL = "gpt-4.1"


def request(answer: str, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    if answer == "tools":
        body["tools"] = TOOLS
    return body


def shape(message: Any) -> tuple[Any, ...]:
    """What the client must get back the same way every time."""
    calls = tuple((c.id, c.function.name, c.function.arguments)
                  for c in (message.tool_calls or ()))
    return message.content, calls


class Client:
    """The SDK over the in-process app, remembering each answer's headers."""

    def __init__(self, app: Any) -> None:
        self.headers: list[httpx.Headers] = []

        async def record(response: httpx.Response) -> None:
            self.headers.append(response.headers)

        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                      base_url="http://gateway.test",
                                      event_hooks={"response": [record]})
        self.sdk = openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key=CLIENT_KEY,
                                      http_client=self.http, max_retries=0)

    async def ask(self, body: dict[str, Any], stream: bool) -> tuple[Any, Any, httpx.Headers]:
        """(message, usage, headers) through ``create`` or the stream helper."""
        if stream:
            async with self.sdk.chat.completions.stream(
                    **body, stream_options={"include_usage": True}) as events:
                async for _ in events:
                    pass
                completion = await events.get_final_completion()
        else:
            completion = await self.sdk.chat.completions.create(**body)
        return completion.choices[0].message, completion.usage, self.headers[-1]


@pytest.mark.parametrize("answer", ["plain", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_every_cache_outcome_is_priced_and_shaped_right(answer: str, stream: bool) -> None:
    async with in_process(GATEWAY_CACHE="true", GATEWAY_SEMANTIC_CACHE="true") as gw:
        client = Client(gw.app)
        first, paraphrase = PROMPTS[answer]
        price = gw.gateway.catalog.models[MODEL]

        # miss: paid at the model's price, in the header (non-stream) or the usage chunk (stream)
        message, usage, headers = await client.ask(request(answer, first), stream)
        assert headers["x-gateway-cache"] == "miss"
        paid = cost_usd(price, usage.prompt_tokens, usage.completion_tokens)
        assert paid > 0
        reported = Decimal(str(usage.model_extra["cost_usd"])) if stream else \
            Decimal(headers["x-gateway-cost-usd"])
        assert reported == paid.quantize(Decimal("0.000001"))
        if answer == "tools":
            assert len(message.tool_calls) == 2 and message.content is None
            assert {c.function.name for c in message.tool_calls} == {"get_weather", "get_time"}
        expected = shape(message)
        await gw.gateway.cache.flush()

        # exact hit and semantic hit: the same answer, costing 0, saving what the miss paid
        for prompt, outcome in ((first, "hit"), (paraphrase, "semantic-hit")):
            message, usage, headers = await client.ask(request(answer, prompt), stream)
            assert headers["x-gateway-cache"] == outcome, prompt
            assert shape(message) == expected
            assert Decimal(headers["x-gateway-saved-usd"]) == paid.quantize(Decimal("0.000001"))
            if stream:
                assert usage.model_extra["cost_usd"] == 0
            else:
                assert headers["x-gateway-cost-usd"] == "0.000000"
                assert "cost_usd" not in (usage.model_extra or {})
        calls_so_far = gw.fake.requests[MODEL]
        assert calls_so_far == 1

        # coalesced: identical requests in flight share one upstream call; followers pay 0
        gw.fake.config.latency_ms = 40
        gw.fake.config.chunk_delay_ms = 10
        fresh = request(answer, first + " Again.")
        results = await asyncio.gather(*(client.ask(fresh, stream) for _ in range(3)))
        assert gw.fake.requests[MODEL] == calls_so_far + 1
        outcomes = sorted(h["x-gateway-cache"] for _, _, h in results)
        assert outcomes == ["coalesced", "coalesced", "miss"]
        shapes = {shape(m) for m, _, _ in results}
        assert len(shapes) == 1
        for _, usage, headers in results:
            follower = headers["x-gateway-cache"] == "coalesced"
            cost = Decimal(str(usage.model_extra["cost_usd"])) if stream else \
                Decimal(headers["x-gateway-cost-usd"])
            assert (cost == 0) is follower
        await client.http.aclose()
