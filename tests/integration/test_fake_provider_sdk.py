"""The fake provider, as a real process, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from loadtest.harness import UPSTREAM_KEY, FakeProvider

WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "unit", "days"], "additionalProperties": False}}}
CLOCK: Any = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "timezone": {"type": "string"}}, "required": ["timezone"]}}}


class Address(BaseModel):
    street: str
    zip_code: str | None


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]
    address: Address


@pytest.fixture(scope="module")
def provider(log_dir: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(log_dir, "--chunks", "4", name="alpha")
    yield fake
    fake.stop()


@pytest.fixture
def sdk(provider: FakeProvider) -> Iterator[openai.OpenAI]:
    provider.reset()
    with openai.OpenAI(base_url=provider.base_url, api_key=UPSTREAM_KEY, max_retries=0) as client:
        yield client


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def calls_of(completion: Any) -> list[tuple[str, str, str]]:
    return [(c.id, c.function.name, c.function.arguments)
            for c in completion.choices[0].message.tool_calls]


def test_tool_calls_parse_with_valid_json_arguments(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="gpt-4.1", messages=user("Rome weather"),
                                             tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert arguments == {"city": "Rome", "unit": "celsius", "days": 1}


@pytest.mark.parametrize(("prompt", "names"), [
    ("Rome weather", ["get_weather"]),
    ("Rome weather and time, in parallel", ["get_weather", "get_time"]),
])
def test_the_stream_helper_rebuilds_the_same_tool_calls(
    sdk: openai.OpenAI, prompt: str, names: list[str]
) -> None:
    request: Any = {"model": "gpt-4.1", "messages": user(prompt), "tools": [WEATHER, CLOCK]}
    plain = sdk.chat.completions.create(**request)
    with sdk.chat.completions.stream(**request) as stream:
        argument_deltas = sum(1 for event in stream
                              if event.type == "tool_calls.function.arguments.delta")
        final = stream.get_final_completion()
    assert [name for _, name, _ in calls_of(final)] == names
    assert calls_of(final) == calls_of(plain)
    assert argument_deltas >= 3 * len(names)
    assert final.choices[0].finish_reason == "tool_calls"


def test_max_completion_tokens_cuts_with_length(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="gpt-4.1", messages=user("hello"),
                                             max_completion_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Fake answer "
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_a_token_limit_below_1_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4.1", messages=user("hello"), max_tokens=0)
    assert caught.value.param == "max_tokens"


def test_json_schema_content_parses_and_validates(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(model="gpt-4.1", messages=user("Grace Hopper"),
                                            response_format=Person)
    person = completion.choices[0].message.parsed
    assert person == Person(name="Grace", age=1, tags=["Hopper"],  # the words, in turn
                            address=Address(street="Grace", zip_code="Hopper"))
    schema = Person.model_json_schema()
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)
    with sdk.chat.completions.stream(model="gpt-4.1", messages=user("Grace Hopper"),
                                     response_format=Person) as stream:
        assert stream.get_final_completion().choices[0].message.parsed == person


def test_legacy_completions_and_their_stream(sdk: openai.OpenAI) -> None:
    completion = sdk.completions.create(model="gpt-4.1", prompt=["Once", "Twice"], max_tokens=8)
    assert [c.text for c in completion.choices] == [
        (f"Fake completion of: {p}. " * 2)[:32] for p in ("Once", "Twice")]
    assert {c.finish_reason for c in completion.choices} == {"length"}
    chunks = list(sdk.completions.create(model="gpt-4.1", prompt="Once", max_tokens=4,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Fake completion "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_the_provider_name_is_in_headers_and_body(sdk: openai.OpenAI,
                                                  provider: FakeProvider) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4.1", messages=user("hi"))
    assert raw.headers["x-fake-provider"] == "alpha"
    assert raw.parse().model_extra == {"x_fake_provider": "alpha"}
    assert provider.stats()["name"] == "alpha"


def test_rpm_limit_gives_the_sdk_a_rate_limit_error(sdk: openai.OpenAI,
                                                    provider: FakeProvider) -> None:
    provider.configure(rpm_limit=2)
    remaining = []
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-4.1", messages=user("x"))
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4.1", messages=user("x"))
    headers = caught.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert caught.value.code == "rate_limit_exceeded"


def test_the_rpm_limit_flag_limits_from_the_start(log_dir: Path) -> None:
    fake = FakeProvider(log_dir, "--rpm-limit", "1")
    try:
        with openai.OpenAI(base_url=fake.base_url, api_key=UPSTREAM_KEY, max_retries=0) as sdk:
            sdk.chat.completions.create(model="gpt-4.1", messages=user("x"))
            with pytest.raises(openai.RateLimitError):
                sdk.chat.completions.create(model="gpt-4.1", messages=user("x"))
        assert fake.stats()["name"] == "fake"
    finally:
        fake.stop()


def test_received_shows_what_the_sdk_sent(sdk: openai.OpenAI, provider: FakeProvider) -> None:
    sdk.chat.completions.create(model="gpt-4.1", messages=user("hi"), max_completion_tokens=9,
                                tools=[WEATHER], tool_choice="none")
    [received] = provider.received()
    assert received["path"] == "/v1/chat/completions"
    assert received["authorization"] == UPSTREAM_KEY[-4:]
    assert received["body"] == {"model": "gpt-4.1", "messages": user("hi"),
                                "max_completion_tokens": 9, "tools": [WEATHER],
                                "tool_choice": "none"}
