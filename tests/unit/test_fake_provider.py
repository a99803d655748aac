"""The fake provider behaves like a real OpenAI-compatible provider: checked in process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from loadtest.fake.answers import Words, schema_instance
from loadtest.fake.ratelimit import duration
from loadtest.fake_provider import FakeConfig, FakeProvider, create_app

KEY = "sk-fake-test-key-abcd"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3, "maximum": 10},
        "hourly": {"type": "boolean"},
        "spots": {"type": "array", "items": {"type": "object", "properties": {
            "lat": {"type": "number"}, "name": {"type": "string"}}, "required": ["lat"]},
            "minItems": 2},
        "note": {"type": "string"}},
        "required": ["city", "unit", "days", "hourly", "spots"],
        "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "timezone": {"type": "string"}}, "required": ["timezone"]}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> FakeProvider:
    return FakeProvider(FakeConfig(chunks=4, api_key=KEY, name="alpha"), clock=clock)


@pytest.fixture
async def http(app: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://fake",
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": content}], **extra}


def events(response: httpx.Response) -> list[Any]:
    """The SSE data payloads, parsed; the last must be ``[DONE]`` (a clean end)."""
    lines = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def accumulate(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls rebuilt from stream deltas the way a client does: by ``index``."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for part in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"function": {"arguments": ""}})
                for key in ("id", "type"):
                    if key in part:
                        call[key] = part[key]
                if "name" in part["function"]:
                    call["function"]["name"] = part["function"]["name"]
                call["function"]["arguments"] += part["function"]["arguments"]
    return [calls[i] for i in sorted(calls)]


# --- plain answers ---------------------------------------------------------------------------


async def test_plain_answer_names_the_provider_and_reports_usage_details(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/chat/completions", json=chat("hello there"))
    assert response.status_code == 200
    assert response.headers["x-fake-provider"] == "alpha"
    assert "x-ratelimit-limit-requests" not in response.headers
    body = response.json()
    assert body["x_fake_provider"] == "alpha"
    assert body["choices"][0]["message"]["content"].startswith("Fake answer to: hello there. ")
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_every_response_carries_the_provider_name(http: httpx.AsyncClient) -> None:
    responses = [
        await http.post("/v1/chat/completions", json=chat("x"), headers={"Authorization": "no"}),
        await http.get("/v1/nothing"),
        await http.get("/v1/models"),
        await http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"}),
        await http.get("/_fake/stats"),
        await http.post("/_fake/reset"),
    ]
    assert [r.status_code for r in responses] == [401, 404, 200, 200, 200, 200]
    assert {r.headers["x-fake-provider"] for r in responses} == {"alpha"}
    assert responses[4].json()["name"] == "alpha"


async def test_the_name_can_be_changed_at_run_time(http: httpx.AsyncClient) -> None:
    assert (await http.post("/_fake/config", json={"name": "beta"})).status_code == 200
    response = await http.post("/v1/chat/completions", json=chat("hi"))
    assert response.headers["x-fake-provider"] == "beta"
    assert response.json()["x_fake_provider"] == "beta"
    await http.post("/_fake/reset")
    assert (await http.get("/_fake/stats")).json()["name"] == "alpha"


# --- tool calls ------------------------------------------------------------------------------


async def test_tools_get_a_tool_call_with_arguments_valid_for_the_schema(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/chat/completions",
                               json=chat("Weather in Paris please", tools=[WEATHER]))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert arguments["city"] == "Weather"  # the last user message's words, in turn
    assert arguments["unit"] == "celsius" and arguments["days"] == 3
    assert arguments["hourly"] is True and len(arguments["spots"]) == 2
    assert "note" not in arguments  # only required properties are filled


async def test_a_named_tool_choice_calls_that_tool(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(
        "what time is it in parallel", tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}}))
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    assert json.loads(call["function"]["arguments"]) == {"timezone": "what"}


@pytest.mark.parametrize(("prompt", "parallel", "expected"), [
    ("do both in parallel", None, ["get_weather", "get_time"]),
    ("do both in PARALLEL please", True, ["get_weather", "get_time"]),
    ("do both in parallel", False, ["get_weather"]),
    ("do both at once", None, ["get_weather"]),
    ("parallelism is not the word", None, ["get_weather"]),
])
async def test_parallel_calls_need_two_tools_and_the_word_parallel(
    http: httpx.AsyncClient, prompt: str, parallel: bool | None, expected: list[str]
) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    response = await http.post("/v1/chat/completions",
                               json=chat(prompt, tools=[WEATHER, CLOCK], **extra))
    calls = response.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == expected
    assert len({c["id"] for c in calls}) == len(calls)


async def test_one_tool_is_called_once_even_when_parallel_is_asked(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/chat/completions", json=chat("parallel", tools=[CLOCK]))
    assert len(response.json()["choices"][0]["message"]["tool_calls"]) == 1


async def test_tool_choice_none_gets_text(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions",
                               json=chat("hi", tools=[WEATHER], tool_choice="none"))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("Fake answer to: hi.")


async def test_an_unknown_named_tool_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(
        "hi", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tool_choice"
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_tool_result_is_quoted_back_as_text(http: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C and sunny"},
    ]
    response = await http.post("/v1/chat/completions", json={
        "model": "gpt-4.1", "messages": messages, "tools": [WEATHER]})
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Tool result received: 22C and sunny"
    assert "tool_calls" not in choice["message"]


async def test_tool_calls_stream_as_openai_streams_them(http: httpx.AsyncClient) -> None:
    request = chat("weather and time, in parallel", tools=[WEATHER, CLOCK])
    plain = (await http.post("/v1/chat/completions", json=request)).json()
    streamed = await http.post("/v1/chat/completions", json={
        **request, "stream": True, "stream_options": {"include_usage": True}})
    chunks = events(streamed)
    *deltas, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    heads = [d for d in deltas if any("id" in p for p in d["choices"][0]["delta"].get(
        "tool_calls") or [])]
    assert len(heads) == 2
    for index, head in enumerate(heads):
        [part] = head["choices"][0]["delta"]["tool_calls"]
        assert part["index"] == index and part["type"] == "function"
        assert part["function"]["arguments"] == ""
        pieces = [p for d in deltas for p in d["choices"][0]["delta"].get("tool_calls") or []
                  if p["index"] == index and "id" not in p]
        assert len(pieces) >= 3
        assert all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"}
                   for p in pieces)
    assert deltas[0]["choices"][0]["delta"]["role"] == "assistant"
    assert deltas[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert all(d["choices"][0]["finish_reason"] is None for d in deltas[:-1])
    assert accumulate(deltas) == plain["choices"][0]["message"]["tool_calls"]


async def test_a_truncate_fault_cuts_a_tool_call_stream(http: httpx.AsyncClient) -> None:
    await http.post("/_fake/faults", json={"model": "gpt-4.1", "kind": "truncate",
                                           "after_chunks": 2})
    response = await http.post("/v1/chat/completions", json=chat(
        "weather", tools=[WEATHER], stream=True))
    parts = [p for p in response.text.split("\n\n") if p]
    assert len(parts) == 2 and "[DONE]" not in response.text


# --- token limits and stop -------------------------------------------------------------------


@pytest.mark.parametrize(("limits", "kept"), [
    ({"max_completion_tokens": 5}, 5),
    ({"max_tokens": 5}, 5),
    ({"max_tokens": 3, "max_completion_tokens": 7}, 3),
    ({"max_tokens": 7, "max_completion_tokens": 3}, 3),
])
async def test_token_limits_cut_the_answer_with_length(
    http: httpx.AsyncClient, limits: dict[str, int], kept: int
) -> None:
    body = (await http.post("/v1/chat/completions", json=chat("hi", **limits))).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"]) == kept * 4
    assert body["usage"]["completion_tokens"] == kept


async def test_a_limit_above_the_answer_leaves_it_whole(http: httpx.AsyncClient) -> None:
    body = (await http.post("/v1/chat/completions",
                            json=chat("hi", max_completion_tokens=1000))).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert len(body["choices"][0]["message"]["content"]) == 400


@pytest.mark.parametrize(("param", "value", "code"), [
    ("max_tokens", 0, "integer_below_min_value"),
    ("max_completion_tokens", -3, "integer_below_min_value"),
    ("max_completion_tokens", "ten", "invalid_type"),
    ("max_tokens", True, "invalid_type"),
])
async def test_a_bad_token_limit_is_a_400_in_openai_shape(
    http: httpx.AsyncClient, param: str, value: Any, code: str
) -> None:
    response = await http.post("/v1/chat/completions", json=chat("hi", **{param: value}))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": response.json()["error"]["message"], "type": "invalid_request_error",
        "param": param, "code": code}


@pytest.mark.parametrize("stop", ["banana", ["nothing-like-it", "banana"]])
async def test_a_stop_sequence_cuts_just_before_it(
    http: httpx.AsyncClient, stop: str | list[str]
) -> None:
    body = (await http.post("/v1/chat/completions",
                            json=chat("ripe banana split", stop=stop))).json()
    assert body["choices"][0]["message"]["content"] == "Fake answer to: ripe "
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_a_stop_sequence_is_cut_in_streams_too(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions",
                               json=chat("ripe banana split", stop="banana", stream=True))
    chunks = events(response)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Fake answer to: ripe "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_bad_stop_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat("hi", stop=[1, 2]))
    assert response.status_code == 400 and response.json()["error"]["param"] == "stop"


# --- response_format -------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 12},
        "age": {"type": "integer", "exclusiveMinimum": 17},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "role": {"enum": ["admin", "user"]},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 2}},
        "address": {"$ref": "#/$defs/Address"},
        "nickname": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "kind": {"const": "person"},
    },
    "required": ["name", "age", "score", "role", "email", "tags", "address", "nickname", "kind"],
    "additionalProperties": False,
    "$defs": {"Address": {"type": "object", "properties": {
        "street": {"type": "string"}, "zip": {"type": ["string", "null"]}},
        "required": ["street", "zip"], "additionalProperties": False}},
}


async def test_json_object_format_answers_a_json_object(http: httpx.AsyncClient) -> None:
    body = (await http.post("/v1/chat/completions", json=chat(
        "hi", response_format={"type": "json_object"}))).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": "Fake answer to: hi."}


async def test_json_schema_format_answers_a_valid_instance(http: httpx.AsyncClient) -> None:
    request = chat("Ada Lovelace", response_format={
        "type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}})
    body = (await http.post("/v1/chat/completions", json=request)).json()
    instance = json.loads(body["choices"][0]["message"]["content"])
    jsonschema.validate(instance, PERSON, format_checker=jsonschema.FormatChecker())
    assert instance["name"].startswith("Ada") and instance["age"] == 18
    streamed = events(await http.post("/v1/chat/completions", json={**request, "stream": True}))
    text = "".join(c["choices"][0]["delta"]["content"] for c in streamed)
    assert json.loads(text) == instance


@pytest.mark.parametrize("fmt", [
    {"type": "yaml"}, "json", {"type": "json_schema", "json_schema": {"schema": PERSON}}])
async def test_a_bad_response_format_is_a_400(http: httpx.AsyncClient, fmt: Any) -> None:
    response = await http.post("/v1/chat/completions", json=chat("hi", response_format=fmt))
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("response_format")


@pytest.mark.parametrize("schema", [
    {"type": "object", "allOf": [
        {"properties": {"a": {"type": "integer", "maximum": -5}}, "required": ["a"]},
        {"properties": {"b": {"type": "number", "exclusiveMaximum": 0}}, "required": ["b"]}]},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "id": {"type": "string", "format": "uuid"}}},
    {"oneOf": [{"type": "integer", "minimum": 5, "maximum": 5}, {"type": "string"}]},
    {"type": "object", "properties": {"tree": {"$ref": "#"}}, "required": []},
])
def test_schema_instances_are_valid(schema: dict[str, Any]) -> None:
    instance = schema_instance(schema, Words("some words here"))
    jsonschema.validate(instance, schema, format_checker=jsonschema.FormatChecker())


# --- legacy completions ----------------------------------------------------------------------


async def test_completions_answer_each_prompt_cut_at_16_tokens(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/completions",
                               json={"model": "gpt-4.1", "prompt": ["Say one", "Say two"]})
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][1]["text"].startswith("Fake completion of: Say two.")
    assert all(len(c["text"]) == 64 and c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 32
    assert response.headers["x-fake-provider"] == "alpha"


async def test_completions_honour_stop_and_max_tokens(http: httpx.AsyncClient) -> None:
    body = (await http.post("/v1/completions", json={
        "model": "gpt-4.1", "prompt": "apple pie", "max_tokens": 100, "stop": ["pie"]})).json()
    assert body["choices"] == [{"text": "Fake completion of: apple ", "index": 0,
                                "logprobs": None, "finish_reason": "stop"}]


async def test_completions_stream_text_chunks_and_usage(http: httpx.AsyncClient) -> None:
    request = {"model": "gpt-4.1", "prompt": ["one", "two"], "max_tokens": 8, "stream": True,
               "stream_options": {"include_usage": True}}
    chunks = events(await http.post("/v1/completions", json=request))
    *texts, usage = chunks
    assert all(c["object"] == "text_completion" for c in chunks)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 16
    for index, prompt in enumerate(["one", "two"]):
        mine = [c["choices"][0] for c in texts if c["choices"][0]["index"] == index]
        assert len(mine) == 4
        assert "".join(c["text"] for c in mine) == f"Fake completion of: {prompt}. Fake co"
        assert [c["finish_reason"] for c in mine] == [None, None, None, "length"]


async def test_completions_without_a_prompt_are_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/completions", json={"model": "gpt-4.1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


async def test_faults_can_target_completions_alone(http: httpx.AsyncClient) -> None:
    await http.post("/_fake/faults", json={"model": "*", "kind": "status", "status": 502,
                                           "endpoint": "completions"})
    chat_answer = await http.post("/v1/chat/completions", json=chat("hi"))
    completion = await http.post("/v1/completions", json={"model": "gpt-4.1", "prompt": "x"})
    assert (chat_answer.status_code, completion.status_code) == (200, 502)


# --- rate limits -----------------------------------------------------------------------------


async def test_rpm_limit_refuses_with_429_and_openai_headers(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    await http.post("/_fake/config", json={"rpm_limit": 2})
    first = await http.post("/v1/chat/completions", json=chat("a"))
    clock.now += 10
    second = await http.post("/v1/completions", json={"model": "gpt-4.1", "prompt": "b"})
    clock.now += 5
    third = await http.post("/v1/chat/completions", json=chat("c"))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in (first, second, third)] == \
        ["1", "0", "0"]
    assert {r.headers["x-ratelimit-limit-requests"] for r in (first, second, third)} == {"2"}
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert third.headers["x-ratelimit-reset-requests"] == "55s"
    assert third.headers["retry-after"] == "45"  # the first request leaves the window then
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert (await http.get("/_fake/stats")).json()["rate_limited"] == 1


async def test_the_rpm_window_rolls(http: httpx.AsyncClient, clock: Clock) -> None:
    await http.post("/_fake/config", json={"rpm_limit": 1})
    assert (await http.post("/v1/chat/completions", json=chat("a"))).status_code == 200
    clock.now += 59.9
    assert (await http.post("/v1/chat/completions", json=chat("a"))).status_code == 429
    clock.now += 0.2
    allowed = await http.post("/v1/chat/completions", json=chat("a"))
    assert allowed.status_code == 200
    assert allowed.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_bad_rpm_limit_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/_fake/config", json={"rpm_limit": 0})
    assert response.status_code == 400
    assert (await http.get("/_fake/stats")).json()["config"]["rpm_limit"] is None


@pytest.mark.parametrize(("seconds", "text"), [
    (0.02, "20ms"), (6.5, "6.5s"), (1, "1s"), (60, "1m0s"), (59.9999, "1m0s")])
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- what was sent ---------------------------------------------------------------------------


async def test_requests_record_path_body_and_the_keys_last_4_chars(
    http: httpx.AsyncClient,
) -> None:
    await http.post("/v1/chat/completions", json=chat("first"))
    await http.post("/v1/embeddings", json={"model": "m", "input": "x"},
                    headers={"Authorization": "Bearer other-key-9876"})
    response = await http.get("/_fake/requests")
    received = response.json()["requests"]
    assert received == [
        {"path": "/v1/chat/completions", "body": chat("first"), "authorization": "abcd",
         "http_version": "1.1"},
        {"path": "/v1/embeddings", "body": {"model": "m", "input": "x"}, "authorization": "9876",
         "http_version": "1.1"},
    ]
    assert KEY not in response.text
    await http.post("/_fake/reset")
    assert (await http.get("/_fake/requests")).json()["requests"] == []


async def test_only_the_last_50_requests_are_kept(http: httpx.AsyncClient) -> None:
    for i in range(55):
        await http.post("/v1/chat/completions", json=chat(f"n{i}", max_tokens=1))
    received = (await http.get("/_fake/requests")).json()["requests"]
    assert len(received) == 50
    assert received[0]["body"]["messages"][0]["content"] == "n5"
    assert received[-1]["body"]["messages"][0]["content"] == "n54"


def test_create_app_still_builds_a_default_provider() -> None:
    app = create_app()
    assert app.config.name == "fake" and app.config.rpm_limit is None


async def test_usage_comes_in_each_providers_cached_token_shape(
        app: FakeProvider, http: httpx.AsyncClient) -> None:
    """Per model (``usage_shapes``) or per request (``x-fake-usage-shape``), whole or streamed."""
    answer = await http.post("/_fake/config", json={"usage_shapes": {"gpt-4.1": "deepseek"}})
    assert answer.status_code == 200
    content = "a long enough prompt for a cache " * 4
    usage = (await http.post("/v1/chat/completions", json=chat(content))).json()["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert usage["prompt_cache_hit_tokens"] == prompt // 2
    assert usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"] == prompt
    assert usage["completion_tokens_details"] == {"reasoning_tokens": completion // 4}
    for shape, expected in (("openai", {"prompt_tokens_details": {"cached_tokens": prompt // 2}}),
                            ("anthropic", {"cache_read_input_tokens": prompt // 2,
                                           "cache_creation_input_tokens": prompt // 4})):
        streamed = await http.post("/v1/chat/completions", headers={"x-fake-usage-shape": shape},
                                   json=chat(content, stream=True,
                                             stream_options={"include_usage": True}))
        last = events(streamed)[-1]["usage"]
        assert {k: last[k] for k in expected} == expected
    bad = await http.post("/_fake/config", json={"usage_shapes": {"*": "gemini"}})
    assert bad.status_code == 400
    assert app.received[-1]["body"] == chat(content, stream=True,
                                            stream_options={"include_usage": True})
