"""The Anthropic Messages bridge: the request model and its 400s, the translation to chat and
back, the stream translator, count_tokens, and the official ``anthropic`` SDK driven through
all of it (an ``httpx2.MockTransport`` plays the gateway: parse -> to_chat -> a scripted
upstream -> from_chat / MessagesStream)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
import uvicorn

from gateway.bridges.anthropic import (
    IMAGE_TOKENS,
    MessagesStream,
    count_tokens,
    from_chat,
    parse_count_request,
    parse_request,
    text_tokens,
    to_chat,
)
from gateway.errors import ErrorCode, GatewayError

from .bridges_fakes import Answer, Call, Model, weather_call, weather_model

WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object",
                                 "properties": {"city": {"type": "string"},
                                                "unit": {"type": "string"}},
                                 "required": ["city"]}}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "deepseek-v3.2", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hi"}], **extra}


def refused(payload: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_request(payload)
    assert caught.value.status == 400
    return caught.value


# --- parse_request: every 400 names its field ---------------------------------------------------

def test_missing_max_tokens_is_a_missing_parameter() -> None:
    payload = body()
    del payload["max_tokens"]
    error = refused(payload)
    assert (error.error_code, error.param) == (ErrorCode.MISSING_PARAMETER, "max_tokens")
    assert error.anthropic_body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("field", "value", "param"), [
    ("max_tokens", -1, "max_tokens"),
    ("temperature", 1.5, "temperature"),
    ("top_p", -0.1, "top_p"),
    ("top_k", -1, "top_k"),
    ("messages", [], "messages"),
    ("model", "", "model"),
    ("tool_choice", {"type": "tool"}, "tool_choice"),
    ("tool_choice", {"type": "sometimes"}, "tool_choice.type"),
    ("system", [{"type": "text"}], "system.0.text"),
    ("stop_sequences", "END", "stop_sequences"),
])
def test_a_bad_value_is_invalid_and_named(field: str, value: Any, param: str) -> None:
    error = refused(body(**{field: value}))
    assert error.param == param
    assert error.error_code in (ErrorCode.INVALID_VALUE, ErrorCode.MISSING_PARAMETER)
    assert param in error.message


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([1, 2]).error_code is ErrorCode.INVALID_VALUE


def test_an_unknown_top_level_field_is_unsupported_and_named() -> None:
    error = refused(body(container="c-1"))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, "container")


def test_an_unknown_metadata_field_is_unsupported() -> None:
    error = refused(body(metadata={"user_id": "u", "team": "x"}))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, "metadata.team")


def test_a_server_tool_is_refused_naming_its_type() -> None:
    error = refused(body(tools=[WEATHER_TOOL, {"type": "web_search_20250305",
                                               "name": "web_search"}]))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, "tools.1.type")
    assert "web_search_20250305" in error.message


def test_a_bad_image_source_names_the_dotted_path() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}
    error = refused(body(messages=[{"role": "user",
                                    "content": [{"type": "text", "text": "see"}, image]}]))
    assert error.param == "messages.0.content.1.source"
    assert "data" in error.message


def test_a_missing_block_field_names_the_dotted_path() -> None:
    error = refused(body(messages=[{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "input": {}}]}, {"role": "user", "content": "x"}]))
    assert (error.error_code, error.param) == (ErrorCode.MISSING_PARAMETER,
                                               "messages.0.content.0.name")


def test_an_unknown_block_type_is_invalid() -> None:
    error = refused(body(messages=[{"role": "user", "content": [
        {"type": "document", "source": {}}]}]))
    assert error.param == "messages.0.content.0"
    assert "document" in error.message


def test_a_user_message_cannot_carry_a_tool_use_block() -> None:
    error = refused(body(messages=[{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]))
    assert error.param == "messages.0.content.0.type"


def test_a_final_assistant_message_prefill_is_refused() -> None:
    error = refused(body(messages=[{"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "{"}]))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER,
                                               "messages.1.role")


# --- to_chat ------------------------------------------------------------------------------------

def test_system_comes_first_and_its_blocks_are_joined() -> None:
    chat = to_chat(parse_request(body(system=[
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."}])))
    assert chat["messages"][0] == {"role": "system", "content": "Be brief.\n\nAnswer in French."}
    assert chat["messages"][1] == {"role": "user", "content": "Hi"}
    assert chat["model"] == "deepseek-v3.2" and chat["max_tokens"] == 64


def test_a_tool_round_trip_history_becomes_tool_calls_and_tool_messages() -> None:
    chat = to_chat(parse_request(body(messages=[
        {"role": "user", "content": "Weather in Hanoi and Hue?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Hanoi"}},
            {"type": "tool_use", "id": "tu_2", "name": "get_weather", "input": {"city": "Hue"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": "31C"},
            {"type": "tool_result", "tool_use_id": "tu_2", "is_error": True,
             "content": [{"type": "text", "text": "no station"}]},
            {"type": "text", "text": "And tomorrow?"}]}])))
    messages = chat["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                        "arguments": '{"city":"Hanoi"}'}
    assert messages[1]["content"] == "Let me check."
    assert messages[2] == {"role": "tool", "tool_call_id": "tu_1", "content": "31C"}
    assert messages[3] == {"role": "tool", "tool_call_id": "tu_2",
                           "content": "[error] no station"}
    assert messages[4] == {"role": "user", "content": "And tomorrow?"}


def test_an_assistant_turn_of_only_tool_calls_has_null_content() -> None:
    chat = to_chat(parse_request(body(messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}])))
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": ""}


def test_images_become_image_url_parts() -> None:
    chat = to_chat(parse_request(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]}])))
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]


def test_images_a_tool_returned_follow_in_a_user_message() -> None:
    chat = to_chat(parse_request(body(messages=[
        {"role": "user", "content": "shot?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s", "name": "screenshot",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "s", "content": [
            {"type": "text", "text": "done"},
            {"type": "image", "source": {"type": "url", "url": "https://x/s.png"}}]}]}])))
    tool, user = chat["messages"][2:]
    assert tool == {"role": "tool", "tool_call_id": "s", "content": "done"}
    assert user["role"] == "user"
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/s.png"}}
    assert "s" in user["content"][0]["text"]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice_maps_to_chat(choice: dict[str, Any], expected: Any) -> None:
    chat = to_chat(parse_request(body(tools=[WEATHER_TOOL], tool_choice=choice)))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER_TOOL["input_schema"],
        "description": "Weather for a city"}}]


def test_disable_parallel_tool_use_turns_parallel_calls_off() -> None:
    chat = to_chat(parse_request(body(tools=[WEATHER_TOOL], tool_choice={
        "type": "auto", "disable_parallel_tool_use": True})))
    assert chat["parallel_tool_calls"] is False


def test_sampling_stop_and_user_go_upstream() -> None:
    chat = to_chat(parse_request(body(stop_sequences=["END"], temperature=0.2, top_p=0.9,
                                      top_k=40, metadata={"user_id": "u-7"})))
    assert (chat["stop"], chat["temperature"], chat["top_p"], chat["top_k"], chat["user"]) == \
        (["END"], 0.2, 0.9, 40, "u-7")
    assert "stream" not in chat


def test_thinking_service_tier_and_cache_control_are_dropped() -> None:
    chat = to_chat(parse_request(body(
        thinking={"type": "enabled", "budget_tokens": 1024}, service_tier="auto",
        tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}])))
    assert not {"thinking", "service_tier", "cache_control"} & set(chat)
    assert "cache_control" not in orjson.dumps(chat).decode()


def test_a_stream_always_asks_the_upstream_for_usage() -> None:
    chat = to_chat(parse_request(body(stream=True)))
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}


# --- from_chat ----------------------------------------------------------------------------------

def test_text_and_tool_calls_become_blocks_with_parsed_input() -> None:
    answer = Answer(text="Checking.", calls=[weather_call()], finish="tool_calls")
    message = from_chat(answer.completion(), model="deepseek-v3.2", stop_sequences=None)
    assert message["id"].startswith("msg_") and message["type"] == "message"
    assert message["role"] == "assistant" and message["model"] == "deepseek-v3.2"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_w1", "name": "get_weather",
         "input": {"city": "Hanoi", "unit": "celsius"}}]
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"]["input_tokens"] == 21 and message["usage"]["output_tokens"] == 9


def test_the_message_id_is_stable_for_the_same_completion() -> None:
    one = from_chat(Answer(text="a").completion(), model="m", stop_sequences=None)
    two = from_chat(Answer(text="a").completion(), model="m", stop_sequences=None)
    other = from_chat(Answer(text="a", id="chatcmpl-2").completion(), model="m",
                      stop_sequences=None)
    assert one["id"] == two["id"] != other["id"]


@pytest.mark.parametrize(("finish", "reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal")])
def test_finish_reasons_map_to_stop_reasons(finish: str, reason: str) -> None:
    message = from_chat(Answer(text="x", finish=finish).completion(), model="m",
                        stop_sequences=["END"])
    assert message["stop_reason"] == reason
    assert message["stop_sequence"] is None


@pytest.mark.parametrize("field", ["stop_reason", "matched_stop"])
def test_a_stop_sequence_is_reported_when_the_upstream_names_it(field: str) -> None:
    answer = Answer(text="one two", choice_extra={field: "END"})
    message = from_chat(answer.completion(), model="m", stop_sequences=["STOP", "END"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_a_plain_stop_is_end_turn_even_with_stop_sequences() -> None:
    answer = Answer(text="one two", choice_extra={"stop_reason": None})
    message = from_chat(answer.completion(), model="m", stop_sequences=["END"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def test_a_stop_string_the_client_did_not_ask_for_is_not_a_stop_sequence() -> None:
    answer = Answer(text="x", choice_extra={"stop_reason": "<|eot|>"})
    message = from_chat(answer.completion(), model="m", stop_sequences=["END"])
    assert message["stop_reason"] == "end_turn"


def test_tool_arguments_that_are_not_a_json_object_are_an_upstream_protocol_error() -> None:
    for arguments in ('{"city": "Ha', "[1, 2]"):
        answer = Answer(calls=[Call("c", "get_weather", [arguments])], finish="tool_calls")
        with pytest.raises(GatewayError) as caught:
            from_chat(answer.completion(), model="m", stop_sequences=None)
        assert caught.value.error_code is ErrorCode.UPSTREAM_PROTOCOL
        assert caught.value.status == 502 and "get_weather" in caught.value.message


def test_empty_tool_arguments_are_an_empty_input() -> None:
    answer = Answer(calls=[Call("c", "now", [])], finish="tool_calls")
    message = from_chat(answer.completion(), model="m", stop_sequences=None)
    assert message["content"] == [{"type": "tool_use", "id": "c", "name": "now", "input": {}}]


def test_cached_prompt_tokens_are_counted_apart() -> None:
    message = from_chat(Answer(text="x", prompt_tokens=100, cached_tokens=64).completion(),
                        model="m", stop_sequences=None)
    assert message["usage"] == {"input_tokens": 36, "output_tokens": 9,
                                "cache_read_input_tokens": 64,
                                "cache_creation_input_tokens": 0}


def test_a_completion_without_choices_is_an_upstream_protocol_error() -> None:
    with pytest.raises(GatewayError) as caught:
        from_chat({"id": "x", "choices": []}, model="m", stop_sequences=None)
    assert caught.value.error_code is ErrorCode.UPSTREAM_PROTOCOL


# --- MessagesStream -----------------------------------------------------------------------------

def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in data.decode().split("\n\n"):
        if raw:
            name, payload = raw.split("\n", 1)
            assert name.startswith("event: ") and payload.startswith("data: ")
            parsed = orjson.loads(payload.removeprefix("data: "))
            assert parsed["type"] == name.removeprefix("event: ")
            out.append((name.removeprefix("event: "), parsed))
    return out


def run_stream(answer: Answer, stop_sequences: list[str] | None = None) -> bytes:
    stream = MessagesStream(model="m", stop_sequences=stop_sequences)
    return (stream.start() + b"".join(stream.feed(c) for c in answer.chunks())
            + stream.finish())


def test_a_stream_opens_and_closes_a_block_per_text_and_tool_call() -> None:
    answer = Answer(text="Let me look.", calls=[weather_call(), weather_call("Hue", "call_w2")],
                    finish="tool_calls")
    names = [name for name, _ in events(run_stream(answer))]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [e for n, e in events(run_stream(answer)) if n == "content_block_start"]
    stops = [e["index"] for n, e in events(run_stream(answer)) if n == "content_block_stop"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert [s["index"] for s in starts] == stops == [0, 1, 2]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "call_w2",
                                          "name": "get_weather", "input": {}}
    pieces = [e["delta"]["partial_json"] for n, e in events(run_stream(answer))
              if n == "content_block_delta" and e["index"] == 1]
    assert pieces == weather_call().pieces
    delta = events(run_stream(answer))[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["input_tokens"] == 21 and delta["usage"]["output_tokens"] == 9


def test_a_stream_reports_a_stop_sequence_the_upstream_names() -> None:
    answer = Answer(text="a b", choice_extra={"stop_reason": "END"})
    delta = events(run_stream(answer, ["END"]))[-2][1]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_finish_takes_the_usage_it_is_given() -> None:
    stream = MessagesStream(model="m")
    stream.start()
    stream.feed(Answer(text="x").chunks()[1])
    delta = events(stream.finish({"prompt_tokens": 5, "completion_tokens": 2}))[-2][1]
    assert delta["usage"]["input_tokens"] == 5 and delta["usage"]["output_tokens"] == 2


def test_fail_sends_an_error_event_and_nothing_after_it() -> None:
    stream = MessagesStream(model="m")
    stream.start()
    assert stream.feed(Answer(text="partial answer").chunks()[1])
    error = GatewayError(ErrorCode.STREAM_TRUNCATED, "The upstream stream was cut.")
    sent = events(stream.fail(error))
    assert sent == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "The upstream stream was cut."}})]
    assert stream.feed(Answer(text="more").chunks()[1]) == b""
    assert stream.finish() == b""
    assert stream.fail(error) == b""


# --- count_tokens -------------------------------------------------------------------------------

def test_text_tokens_counts_words_digits_and_marks() -> None:
    assert text_tokens("") == 0
    assert text_tokens("Hello world") == 2
    assert text_tokens("123456") == 2
    assert text_tokens("a, b") == 3
    assert text_tokens("x" * 25) == 3
    assert text_tokens("Việt") == 4 and text_tokens("٣٤٥") == 1  # nothing is skipped


def test_count_tokens_grows_with_the_prompt_images_and_tools() -> None:
    base = parse_count_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    longer = parse_count_request({"model": "m", "messages": [
        {"role": "user", "content": "Hi there, how is the weather in Hanoi today?"}]})
    image = parse_count_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]})
    tools = parse_count_request({"model": "m", "tools": [WEATHER_TOOL],
                                 "messages": [{"role": "user", "content": "Hi"}]})
    assert 0 < count_tokens(base) < count_tokens(longer)
    assert count_tokens(image) == count_tokens(base) + IMAGE_TOKENS
    assert count_tokens(tools) > count_tokens(base) + 12


def test_count_tokens_needs_no_max_tokens_and_accepts_a_final_assistant_turn() -> None:
    req = parse_count_request({"model": "m", "system": "Be brief.", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    assert count_tokens(req) >= 3 * 4


# --- the official SDK through the bridge --------------------------------------------------------

class Gateway:
    """The MockTransport handler: what the lead's route will do around the core."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.chats: list[dict[str, Any]] = []

    def answer(self, path: str, content: bytes) -> tuple[int, bytes, str]:
        try:
            payload = orjson.loads(content)
            if path == "/v1/messages/count_tokens":
                count = count_tokens(parse_count_request(payload))
                return 200, orjson.dumps({"input_tokens": count}), "application/json"
            assert path == "/v1/messages"
            req = parse_request(payload)
            chat = to_chat(req)
            self.chats.append(chat)
            answer = self.model(chat)
            if not req.stream:
                return 200, orjson.dumps(from_chat(
                    answer.completion(), model=req.model,
                    stop_sequences=req.stop_sequences)), "application/json"
            stream = MessagesStream(model=req.model, stop_sequences=req.stop_sequences)
            data = stream.start() + b"".join(stream.feed(c) for c in answer.chunks())
            return 200, data + stream.finish(), "text/event-stream"
        except GatewayError as error:
            return error.status, orjson.dumps(error.anthropic_body()), "application/json"

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        status, content, kind = self.answer(request.url.path, request.content)
        return httpx2.Response(status, content=content, headers={"content-type": kind})


def client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="http://gateway.test", api_key="team-key",
                               max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_sdk_messages_create_gets_text_and_usage() -> None:
    gateway = Gateway(weather_model)
    message = client(gateway).messages.create(
        model="deepseek-v3.2", max_tokens=100, system="Be kind.",
        messages=[{"role": "user", "content": "Hello"}])
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: Hello"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 9)
    assert gateway.chats[0]["messages"][0] == {"role": "system", "content": "Be kind."}


def test_sdk_messages_create_gets_a_tool_use_with_parsed_input() -> None:
    message = client(Gateway(weather_model)).messages.create(
        model="deepseek-v3.2", max_tokens=100, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Hanoi?"}])
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Hanoi", "unit": "celsius"}


def test_sdk_stream_final_message_has_text_tool_use_stop_reason_and_usage() -> None:
    answer = Answer(text="Let me check the weather.", calls=[weather_call()],
                    finish="tool_calls", prompt_tokens=33, completion_tokens=17)
    with client(Gateway(lambda chat: answer)).messages.stream(
            model="deepseek-v3.2", max_tokens=100, tools=[WEATHER_TOOL],
            messages=[{"role": "user", "content": "Weather?"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me check the weather."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me check the weather."
    assert final.content[1].input == {"city": "Hanoi", "unit": "celsius"}
    assert final.content[1].id == "call_w1"
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (33, 17)


def test_sdk_tool_round_trip_ends_with_the_tool_result_in_the_answer() -> None:
    gateway = Gateway(weather_model)
    sdk = client(gateway)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Hanoi?"}]
    first = sdk.messages.create(model="deepseek-v3.2", max_tokens=100, tools=[WEATHER_TOOL],
                                messages=messages)
    call = first.content[0]
    assert call.type == "tool_use"
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "31C and sunny"}]}]
    second = sdk.messages.create(model="deepseek-v3.2", max_tokens=100, tools=[WEATHER_TOOL],
                                 messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "The tool said: 31C and sunny"
    upstream = gateway.chats[1]["messages"]
    assert upstream[1]["tool_calls"][0]["id"] == call.id
    assert upstream[2] == {"role": "tool", "tool_call_id": call.id, "content": "31C and sunny"}


def test_sdk_stop_sequence_and_max_tokens_stop_reasons() -> None:
    stop = Answer(text="one two", choice_extra={"stop_reason": "END"})
    message = client(Gateway(lambda chat: stop)).messages.create(
        model="m", max_tokens=10, stop_sequences=["END"],
        messages=[{"role": "user", "content": "count"}])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    cut = Answer(text="one two thr", finish="length")
    with client(Gateway(lambda chat: cut)).messages.stream(
            model="m", max_tokens=3, messages=[{"role": "user", "content": "count"}]) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_sdk_count_tokens() -> None:
    result = client(Gateway(weather_model)).messages.count_tokens(
        model="deepseek-v3.2", tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Hanoi today?"}])
    assert result.input_tokens > 12


def test_sdk_raises_bad_request_for_a_refused_request() -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(Gateway(weather_model)).messages.create(
            model="m", max_tokens=-1, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in caught.value.body["error"]["message"]


@pytest.mark.parametrize(("error", "exception", "kind"), [
    (GatewayError(ErrorCode.INVALID_API_KEY, "bad key"), anthropic.AuthenticationError,
     "authentication_error"),
    (GatewayError(ErrorCode.MODEL_NOT_ALLOWED, "not yours"), anthropic.PermissionDeniedError,
     "permission_error"),
    (GatewayError(ErrorCode.MODEL_NOT_FOUND, "no such model"), anthropic.NotFoundError,
     "not_found_error"),
    (GatewayError(ErrorCode.REQUEST_TOO_LARGE, "too big"), anthropic.ContentTooLargeError,
     "request_too_large"),
    (GatewayError(ErrorCode.RATE_LIMIT_EXCEEDED, "slow down"), anthropic.RateLimitError,
     "rate_limit_error"),
    (GatewayError(ErrorCode.UPSTREAM_REJECTED, "busy", upstream_status=529),
     anthropic.OverloadedError, "overloaded_error"),
    (GatewayError(ErrorCode.CIRCUIT_OPEN, "every breaker open"),
     anthropic.ServiceUnavailableError, "overloaded_error"),
    (GatewayError(ErrorCode.UPSTREAM_ERROR, "upstream 500"), anthropic.InternalServerError,
     "api_error"),
    (GatewayError(ErrorCode.DEADLINE_EXCEEDED, "too slow"), anthropic.GatewayTimeoutError,
     "timeout_error"),
])
def test_sdk_exception_types_for_gateway_errors(error: GatewayError, exception: type,
                                                kind: str) -> None:
    def model(chat: dict[str, Any]) -> Answer:
        raise error

    with pytest.raises(exception) as caught:
        client(Gateway(model)).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == error.status
    assert caught.value.body["error"]["type"] == kind


def test_sdk_raises_on_a_stream_that_fails_midway() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        stream = MessagesStream(model="m")
        chunks = Answer(text="This answer is cut").chunks()
        data = stream.start() + stream.feed(chunks[1]) + stream.feed(chunks[2])
        data += stream.fail(GatewayError(ErrorCode.STREAM_TRUNCATED, "The stream was cut."))
        return httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"})

    sdk = client(handler)
    with pytest.raises(anthropic.APIStatusError) as caught, sdk.messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "x"}]) as stream:
        stream.get_final_message()
    assert "The stream was cut." in str(caught.value)


@pytest.fixture
def served() -> Iterator[Callable[[Gateway], str]]:
    """Serves a ``Gateway`` over real HTTP on a free loopback port (LangChain's ChatAnthropic
    builds its own HTTP client, so no transport can be handed to it)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(gateway: Gateway) -> str:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            content = b""
            while True:
                message = await receive()
                content += message.get("body", b"")
                if not message.get("more_body"):
                    break
            status, data, kind = gateway.answer(scope["path"], content)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", kind.encode())]})
            await send({"type": "http.response.body", "body": data})

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_langchain_chat_anthropic_invoke_tool_call_and_stream(
        served: Callable[[Gateway], str]) -> None:
    from langchain_anthropic import ChatAnthropic

    base_url = served(Gateway(weather_model))
    llm = ChatAnthropic(model="deepseek-v3.2", base_url=base_url, api_key="team-key",
                        max_retries=0, max_tokens=100)
    assert llm.invoke("Hello").text == "Echo: Hello"
    reply = llm.bind_tools([WEATHER_TOOL]).invoke("Weather in Hanoi?")
    assert reply.tool_calls[0]["name"] == "get_weather"
    assert reply.tool_calls[0]["args"] == {"city": "Hanoi", "unit": "celsius"}
    streamed = llm.bind_tools([WEATHER_TOOL]).stream("Weather in Hanoi?")
    chunks = list(streamed)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert whole.tool_calls[0]["args"] == {"city": "Hanoi", "unit": "celsius"}
    assert whole.usage_metadata["input_tokens"] == 30
    assert whole.usage_metadata["output_tokens"] == 12


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_tool_call_sent_whole_in_one_delta_is_one_block() -> None:
    stream = MessagesStream(model="m")
    data = stream.start() + stream.feed(chunk({"tool_calls": [
        {"index": 0, "id": "c1", "type": "function",
         "function": {"name": "f", "arguments": '{"a": 1}'}}]}))
    sent = events(data + stream.feed(chunk({}, "tool_calls")) + stream.finish())
    assert [n for n, _ in sent][2:5] == ["content_block_start", "content_block_delta",
                                         "content_block_stop"]
    assert sent[3][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": 1}'}


def test_tool_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    stream = MessagesStream(model="m")
    data = stream.start()
    for call_id, name, pieces in (("c1", "f", ['{"a"', ': 1}']), ("c2", "g", ['{}'])):
        data += stream.feed(chunk({"tool_calls": [{"id": call_id, "type": "function",
                                                   "function": {"name": name,
                                                                "arguments": ""}}]}))
        for piece in pieces:
            data += stream.feed(chunk({"tool_calls": [{"function": {"arguments": piece}}]}))
    sent = events(data + stream.feed(chunk({}, "tool_calls")) + stream.finish())
    starts = [e["content_block"] for n, e in sent if n == "content_block_start"]
    assert [(s["id"], s["name"]) for s in starts] == [("c1", "f"), ("c2", "g")]
    deltas = [(e["index"], e["delta"]["partial_json"]) for n, e in sent
              if n == "content_block_delta"]
    assert deltas == [(0, '{"a"'), (0, ": 1}"), (1, "{}")]


def test_empty_stop_sequences_are_not_sent_upstream() -> None:
    assert "stop" not in to_chat(parse_request(body(stop_sequences=[])))


def test_a_claude_code_style_request_is_accepted() -> None:
    """The shape Claude Code sends: system blocks with cache_control, tools with a JSON-schema
    ``$schema``, metadata.user_id, thinking, streaming, the SDK's echoed blocks in history."""
    req = parse_request({
        "model": "claude-sonnet-4.5", "max_tokens": 32000, "temperature": 1, "stream": True,
        "metadata": {"user_id": "user_abc_account__session_1"},
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Be concise."}],
        "tools": [{"name": "Read", "description": "Read a file",
                   "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#",
                                    "type": "object", "additionalProperties": False,
                                    "properties": {"file_path": {"type": "string"}},
                                    "required": ["file_path"]}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "Read main.py", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "caller": None,
                 "input": {"file_path": "main.py"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)"}]}]})
    chat = to_chat(req)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert chat["messages"][1]["content"] == \
        "<system-reminder>ctx</system-reminder>\n\nRead main.py"
    assert chat["user"] == "user_abc_account__session_1"
    assert chat["tools"][0]["function"]["parameters"]["required"] == ["file_path"]


ANTHROPIC_TYPES = {"invalid_request_error", "authentication_error", "billing_error",
                   "permission_error", "not_found_error", "request_too_large",
                   "rate_limit_error", "api_error", "timeout_error", "overloaded_error"}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_renders_a_documented_anthropic_type(code: ErrorCode) -> None:
    rendered = GatewayError(code, "m").anthropic_body()
    assert rendered["type"] == "error"
    assert rendered["error"]["type"] in ANTHROPIC_TYPES
