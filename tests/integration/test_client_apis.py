"""Every API a client will call, through the real ``bentoml serve``, driven by the official
SDKs and LangChain: Anthropic's Messages API, OpenAI's Responses API, legacy completions and
``models.retrieve`` — each priced, cached, fallen back from and errored like chat completions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from gateway.catalog import load_catalog
from gateway.pricing import cost_usd, format_usd
from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

CATALOG = load_catalog()
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def cached(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    """A gateway with the cache on and a breaker that opens at once (for fallbacks)."""
    server = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_CACHE": "true", "GATEWAY_RETRY_ATTEMPTS": "1"})
    yield server
    server.stop()


@pytest.fixture
def claude(gateway: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


@pytest.fixture
def sdk(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def price(model: str, prompt: int, completion: int) -> str:
    return format_usd(cost_usd(CATALOG.models[model], prompt, completion))


# --- Anthropic Messages -----------------------------------------------------------------------

def test_messages_create_answers_in_anthropics_shape_priced_in_a_header(
        claude: anthropic.Anthropic, fake: FakeProvider) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-sonnet-4.5", max_tokens=200, system="Be brief.",
        messages=[{"role": "user", "content": "hello claude"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Fake answer to: hello claude")
    assert message.stop_reason == "end_turn"
    assert raw.headers["x-gateway-cost-usd"] == price(
        "claude-sonnet-4.5", message.usage.input_tokens, message.usage.output_tokens)
    sent = fake.received()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_messages_max_tokens_maps_to_its_stop_reason(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-sonnet-4.5", max_tokens=5,
                                     messages=[{"role": "user", "content": "go on"}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens <= 5


def test_messages_stream_gives_the_sdk_the_whole_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-sonnet-4.5", max_tokens=300,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Fake answer to: stream please")
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_a_tool_use_round_trip_through_the_messages_api(claude: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "Weather in Hanoi?"}
    with claude.messages.stream(model="claude-sonnet-4.5", max_tokens=300, tools=[WEATHER],
                                messages=[question]) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.input["city"]
    answer = claude.messages.create(
        model="claude-sonnet-4.5", max_tokens=300, tools=[WEATHER],
        messages=[question, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "31 degrees and humid"}]}])
    assert answer.stop_reason == "end_turn"
    assert "31 degrees and humid" in answer.content[0].text


def test_count_tokens_is_an_honest_local_estimate(claude: anthropic.Anthropic,
                                                  fake: FakeProvider) -> None:
    before = fake.stats()["total"]
    short = claude.messages.count_tokens(model="claude-sonnet-4.5",
                                         messages=[{"role": "user", "content": "hi"}])
    long = claude.messages.count_tokens(model="claude-sonnet-4.5",
                                        messages=[{"role": "user", "content": "hi " * 500}])
    assert 0 < short.input_tokens < long.input_tokens
    assert fake.stats()["total"] == before  # no upstream call


def test_messages_errors_reach_the_sdk_as_its_own_exception_types(
        gateway: GatewayServer, claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="claude-sonnet-4.5", max_tokens=0,
                               messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-opus-99", max_tokens=10,
                               messages=[{"role": "user", "content": "x"}])
    wrong_key = anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong_key.messages.create(model="claude-sonnet-4.5", max_tokens=10,
                                  messages=[{"role": "user", "content": "x"}])
    missing = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": CLIENT_KEY},
                         json={"model": "claude-sonnet-4.5",
                               "messages": [{"role": "user", "content": "x"}]})
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]


def test_a_mid_stream_failure_is_an_anthropic_error_event_never_a_clean_stop(
        claude: anthropic.Anthropic, fake: FakeProvider) -> None:
    fake.fault(model="claude-sonnet-4.5", kind="drop", after_chunks=2, times=10)
    with pytest.raises(anthropic.APIStatusError), claude.messages.stream(
            model="claude-sonnet-4.5", max_tokens=300,
            messages=[{"role": "user", "content": "cut me"}]) as stream:
        stream.get_final_message()


def test_the_messages_api_is_cached_and_falls_back_like_chat(
        cached: GatewayServer, fake: FakeProvider) -> None:
    claude = anthropic.Anthropic(base_url=cached.url, api_key=CLIENT_KEY, max_retries=0)
    ask = {"model": "deepseek-v3.2", "max_tokens": 100,
           "messages": [{"role": "user", "content": "cache the bridge"}]}
    first = claude.messages.with_raw_response.create(**ask)
    assert first.headers["x-gateway-cache"] == "miss"
    paid = Decimal(first.headers["x-gateway-cost-usd"])
    assert paid > 0
    second = _poll_for_hit(lambda: claude.messages.with_raw_response.create(**ask))
    assert second.headers["x-gateway-cost-usd"] == "0.000000"
    assert Decimal(second.headers["x-gateway-saved-usd"]) == paid
    assert second.parse().content[0].text == first.parse().content[0].text
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    fell = claude.messages.with_raw_response.create(
        **{**ask, "messages": [{"role": "user", "content": "fall back please"}]})
    assert fell.headers["x-gateway-model"] == "gemini-2.5-flash"
    assert fell.parse().model == "gemini-2.5-flash"


def _poll_for_hit(send: object) -> openai.APIResponse:  # type: ignore[type-arg]
    """The store is written in the background: ask until the answer comes from it."""
    import time

    deadline = time.monotonic() + 5
    while True:
        raw = send()  # type: ignore[operator]
        if raw.headers["x-gateway-cache"] == "hit" or time.monotonic() > deadline:
            assert raw.headers["x-gateway-cache"] == "hit"
            return raw
        time.sleep(0.05)


# --- OpenAI Responses, completions, models ------------------------------------------------------

def test_responses_create_and_stream_through_the_sdk(sdk: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.create(model="gpt-4.1", instructions="Be brief.",
                                                 input="hello responses", max_output_tokens=200)
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text.startswith("Fake answer to: hello responses")
    assert raw.headers["x-gateway-cost-usd"] == price(
        "gpt-4.1", response.usage.input_tokens, response.usage.output_tokens)
    with sdk.responses.stream(model="gpt-4.1", input="stream responses") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text
    assert final.output_text.startswith("Fake answer to: stream responses")
    assert final.usage is not None and final.usage.output_tokens > 0


def test_a_function_call_round_trip_through_the_responses_api(sdk: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather",
            "parameters": WEATHER["input_schema"]}
    first = sdk.responses.create(model="gpt-4.1", input="Weather in Hue?", tools=[tool])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    second = sdk.responses.create(model="gpt-4.1", tools=[tool], input=[
        {"role": "user", "content": "Weather in Hue?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 28"}])
    assert "sunny, 28" in second.output_text


def test_an_unsupported_responses_field_is_a_400_naming_it(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="gpt-4.1", input="x", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"


def test_legacy_completions_and_their_stream(sdk: openai.OpenAI) -> None:
    raw = sdk.completions.with_raw_response.create(model="deepseek-v3.2", prompt="Once upon",
                                                   max_tokens=50)
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.choices[0].text
    assert raw.headers["x-gateway-cost-usd"] == price(
        "deepseek-v3.2", completion.usage.prompt_tokens, completion.usage.completion_tokens)
    pieces = [c.choices[0].text for c in sdk.completions.create(
        model="deepseek-v3.2", prompt="Once upon", max_tokens=50, stream=True) if c.choices]
    assert "".join(pieces) == completion.choices[0].text


def test_models_retrieve(sdk: openai.OpenAI) -> None:
    model = sdk.models.retrieve("deepseek-v3.2")
    assert model.id == "deepseek-v3.2" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"


def test_langchain_clients_through_the_gateway(gateway: GatewayServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    responses_model = langchain_openai.ChatOpenAI(
        model="gpt-4.1", base_url=gateway.v1, api_key=CLIENT_KEY, use_responses_api=True,
        max_retries=0)
    assert "Fake answer to: hi from langchain" in responses_model.invoke("hi from langchain").text
    claude = langchain_anthropic.ChatAnthropic(
        model="claude-sonnet-4.5", base_url=gateway.url, api_key=CLIENT_KEY, max_tokens=100,
        max_retries=0)
    assert "Fake answer to: hi claude chain" in claude.invoke("hi claude chain").text


NATIVE_CATALOG = """
default_model: deepseek-v3.2
default_provider: native
providers:
  native:
    base_url: {url}
    api_key_env: NATIVE_UPSTREAM_KEY
    completions: true
models:
  deepseek-v3.2:
    owned_by: deepseek
    upstream_model: deepseek-v3.2
    input_usd_per_mtok: "0.42"
    output_usd_per_mtok: "0.42"
"""


@pytest.fixture(scope="module")
def native(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    """A gateway whose provider says it serves /v1/completions itself."""
    catalog = log_dir / "native-catalog.yaml"
    catalog.write_text(NATIVE_CATALOG.format(url=fake.base_url))
    from loadtest.harness import UPSTREAM_KEY

    server = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_CONFIG": str(catalog), "NATIVE_UPSTREAM_KEY": UPSTREAM_KEY,
        "GATEWAY_CACHE": "true"})
    yield server
    server.stop()


def test_legacy_completions_go_upstream_natively_when_the_provider_serves_them(
        native: GatewayServer, fake: FakeProvider) -> None:
    sdk = openai.OpenAI(base_url=native.v1, api_key=CLIENT_KEY, max_retries=0)
    raw = sdk.completions.with_raw_response.create(model="deepseek-v3.2", prompt="Once upon",
                                                   max_tokens=20)
    completion = raw.parse()
    assert completion.choices[0].text.startswith("Fake completion of: Once upon")
    assert fake.received()[-1]["path"] == "/v1/completions"
    assert raw.headers["x-gateway-cost-usd"] == format_usd(cost_usd(
        CATALOG.models["deepseek-v3.2"], completion.usage.prompt_tokens,
        completion.usage.completion_tokens))
    chunks = list(sdk.completions.create(model="deepseek-v3.2", prompt="Once upon",
                                         max_tokens=20, stream=True,
                                         stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == completion.choices[0].text
    usage = [c.usage for c in chunks if c.usage][0]
    assert usage.model_extra["cost_usd"] > 0
