"""The Responses bridge: the request model and its 400s, the translation to chat and back, the
event stream, and the official ``openai`` SDK (``responses.create`` / ``responses.stream``) and
LangChain's ``ChatOpenAI(use_responses_api=True)`` driven through it over a MockTransport."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest

from gateway.bridges.responses import ResponsesStream, from_chat, parse_request, to_chat
from gateway.errors import ErrorCode, GatewayError

from .bridges_fakes import Answer, Model, weather_call, weather_model

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                "unit": {"type": "string"}},
                               "required": ["city"]}}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "input": "Hi", **extra}


def refused(payload: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_request(payload)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["type"] == "invalid_request_error"
    return caught.value


# --- parse_request ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "param"), [
    ("store", True, "store"),
    ("previous_response_id", "resp_1", "previous_response_id"),
    ("conversation", "conv_1", "conversation"),
    ("background", True, "background"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("max_tool_calls", 3, "max_tool_calls"),
    ("include", ["message.output_text.logprobs"], "include.0"),
])
def test_what_the_gateway_cannot_honour_is_unsupported_and_named(field: str, value: Any,
                                                                 param: str) -> None:
    error = refused(body(**{field: value}))
    assert error.param == param
    assert error.error_code in (ErrorCode.UNSUPPORTED_PARAMETER, ErrorCode.INVALID_VALUE)
    if field != "include":
        assert error.error_code is ErrorCode.UNSUPPORTED_PARAMETER


@pytest.mark.parametrize("tool", [{"type": "web_search"}, {"type": "file_search",
                                                            "vector_store_ids": ["vs"]}])
def test_a_built_in_tool_is_refused_naming_its_type(tool: dict[str, Any]) -> None:
    error = refused(body(tools=[WEATHER_TOOL, tool]))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, "tools.1.type")
    assert tool["type"] in error.message


@pytest.mark.parametrize(("field", "value", "param", "code"), [
    ("model", None, "model", ErrorCode.MISSING_PARAMETER),
    ("input", None, "input", ErrorCode.MISSING_PARAMETER),
    ("temperature", 2.5, "temperature", ErrorCode.INVALID_VALUE),
    ("max_output_tokens", 0, "max_output_tokens", ErrorCode.INVALID_VALUE),
    ("tool_choice", "sometimes", "tool_choice", ErrorCode.INVALID_VALUE),
    ("text", {"format": {"type": "yaml"}}, "text.format.type", ErrorCode.INVALID_VALUE),
    ("input", [{"role": "robot", "content": "x"}], "input.0.role", ErrorCode.INVALID_VALUE),
    ("input", [{"type": "function_call", "call_id": "c", "name": "f"}], "input.0.arguments",
     ErrorCode.MISSING_PARAMETER),
    ("input", [{"role": "user", "content": [{"type": "input_text"}]}], "input.0.content.0.text",
     ErrorCode.MISSING_PARAMETER),
])
def test_a_bad_value_is_named_by_its_dotted_path(field: str, value: Any, param: str,
                                                  code: ErrorCode) -> None:
    payload = body(**{field: value})
    if value is None:
        del payload[field]
    error = refused(payload)
    assert (error.error_code, error.param) == (code, param)


def test_an_unknown_input_item_type_is_invalid() -> None:
    error = refused(body(input=[{"type": "item_reference", "id": "x"}]))
    assert error.param == "input.0" and "item_reference" in error.message


def test_an_image_in_a_function_call_output_is_refused() -> None:
    error = refused(body(input=[{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_image", "image_url": "https://x/y.png"}]}]))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, "input.0.output")


# --- to_chat ------------------------------------------------------------------------------------

def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    chat = to_chat(parse_request(body(instructions="Be brief.", max_output_tokens=50,
                                      temperature=0.3, top_p=0.8, user="u-1")))
    assert chat["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}]
    assert (chat["max_tokens"], chat["temperature"], chat["top_p"], chat["user"]) == \
        (50, 0.3, 0.8, "u-1")
    assert "stream" not in chat and chat["model"] == "gpt-4.1"


def test_items_become_chat_messages_in_order() -> None:
    chat = to_chat(parse_request(body(input=[
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Weather here?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1",
         "name": "get_weather", "arguments": '{"city":"Hanoi"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": '{"city":"Hue"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "31C"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "29C"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "user", "content": "Thanks"}])))
    messages = chat["messages"]
    assert messages[0] == {"role": "system", "content": "Use tools."}
    assert messages[1] == {"role": "user", "content": [
        {"type": "text", "text": "Weather here?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                            "detail": "low"}}]}
    assert messages[2]["role"] == "assistant" and messages[2]["content"] == "Checking."
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["call_1", "call_2"]
    assert messages[3:] == [{"role": "tool", "tool_call_id": "call_1", "content": "31C"},
                            {"role": "tool", "tool_call_id": "call_2", "content": "29C"},
                            {"role": "user", "content": "Thanks"}]


def test_a_function_call_without_a_preceding_assistant_message_opens_one() -> None:
    chat = to_chat(parse_request(body(input=[
        {"role": "user", "content": "x"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])))
    assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}})])
def test_tools_and_tool_choice_map_to_chat(choice: Any, expected: Any) -> None:
    chat = to_chat(parse_request(body(tools=[{**WEATHER_TOOL, "strict": True}],
                                      tool_choice=choice, parallel_tool_calls=False)))
    assert chat["tool_choice"] == expected
    assert chat["parallel_tool_calls"] is False
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER_TOOL["parameters"], "strict": True}}]


@pytest.mark.parametrize(("text", "expected"), [
    ({"format": {"type": "text"}}, None),
    ({"format": {"type": "json_object"}}, {"type": "json_object"}),
    ({"format": {"type": "json_schema", "name": "city", "strict": True,
                 "schema": {"type": "object"}}},
     {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"},
                                             "strict": True}}),
])
def test_text_format_becomes_response_format(text: dict[str, Any], expected: Any) -> None:
    chat = to_chat(parse_request(body(text=text)))
    assert chat.get("response_format") == expected


def test_reasoning_effort_goes_upstream_and_harmless_fields_are_accepted() -> None:
    chat = to_chat(parse_request(body(
        reasoning={"effort": "low", "summary": "auto"}, store=False, truncation="auto",
        include=["reasoning.encrypted_content"], metadata={"k": "v"}, background=False)))
    assert chat["reasoning_effort"] == "low"
    assert not {"store", "truncation", "include", "metadata", "background",
                "reasoning"} & set(chat)


def test_a_stream_always_asks_the_upstream_for_usage() -> None:
    chat = to_chat(parse_request(body(stream=True)))
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


# --- from_chat ----------------------------------------------------------------------------------

def test_a_completion_becomes_a_response_with_message_and_function_call_items() -> None:
    req = parse_request(body(instructions="Be brief.", tools=[WEATHER_TOOL], metadata={"a": "b"},
                             max_output_tokens=99))
    answer = Answer(text="Checking.", calls=[weather_call()], finish="tool_calls",
                    cached_tokens=5)
    response = from_chat(answer.completion(), request=req)
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert response["status"] == "completed" and response["incomplete_details"] is None
    assert response["model"] == "gpt-4.1"
    message, call = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "Checking."
    assert call == {"id": call["id"], "type": "function_call", "status": "completed",
                    "call_id": "call_w1", "name": "get_weather",
                    "arguments": '{"city":"Hanoi","unit":"celsius"}'}
    assert response["usage"] == {"input_tokens": 21, "output_tokens": 9, "total_tokens": 30,
                                 "input_tokens_details": {"cached_tokens": 5,
                                                          "cache_write_tokens": 0},
                                 "output_tokens_details": {"reasoning_tokens": 0}}
    assert (response["instructions"], response["metadata"], response["max_output_tokens"],
            response["store"]) == ("Be brief.", {"a": "b"}, 99, False)
    assert response["tools"] == [WEATHER_TOOL]


def test_a_length_cut_is_an_incomplete_response() -> None:
    response = from_chat(Answer(text="one two", finish="length").completion(),
                         request=parse_request(body(max_output_tokens=2)))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_the_response_id_is_stable_for_the_same_completion() -> None:
    req = parse_request(body())
    assert from_chat(Answer(text="a").completion(), request=req)["id"] == \
        from_chat(Answer(text="a").completion(), request=req)["id"]


# --- ResponsesStream ----------------------------------------------------------------------------

def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for raw in data.decode().split("\n\n"):
        if raw:
            name, payload = raw.split("\n", 1)
            parsed = orjson.loads(payload.removeprefix("data: "))
            assert parsed["type"] == name.removeprefix("event: ")
            out.append(parsed)
    return out


def run_stream(req: Any, answer: Answer) -> bytes:
    stream = ResponsesStream(req)
    return (stream.start() + b"".join(stream.feed(c) for c in answer.chunks())
            + stream.finish())


def test_the_stream_is_the_responses_event_sequence_with_sequence_numbers() -> None:
    answer = Answer(text="Checking.", calls=[weather_call()], finish="tool_calls")
    sent = events(run_stream(parse_request(body(tools=[WEATHER_TOOL])), answer))
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    kinds = [e["type"] for e in sent]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    after_text = kinds.index("response.output_text.done")
    assert kinds[after_text:after_text + 4] == [
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added"]
    pieces = [e["delta"] for e in sent if e["type"] == "response.function_call_arguments.delta"]
    assert pieces == weather_call().pieces
    done = next(e for e in sent if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == weather_call().arguments
    final = sent[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 30
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]


def test_a_length_cut_stream_ends_with_response_incomplete() -> None:
    sent = events(run_stream(parse_request(body()), Answer(text="one two", finish="length")))
    assert sent[-1]["type"] == "response.incomplete"
    assert sent[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_fail_sends_response_failed_and_nothing_after_it() -> None:
    stream = ResponsesStream(parse_request(body()))
    stream.start()
    stream.feed(Answer(text="partial").chunks()[1])
    sent = events(stream.fail(GatewayError(ErrorCode.STREAM_TRUNCATED, "cut")))
    assert [e["type"] for e in sent] == ["response.failed"]
    failed = sent[0]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "stream_truncated", "message": "cut"}
    assert failed["output"][0]["status"] == "incomplete"
    assert stream.finish() == b"" and stream.feed(Answer(text="x").chunks()[1]) == b""


# --- the official SDK and LangChain through the bridge ------------------------------------------

class Gateway:
    """The MockTransport handler: what the lead's route will do around the core."""

    def __init__(self, model: Model, *, fail_after: int | None = None) -> None:
        self.model = model
        self.fail_after = fail_after
        self.chats: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []

    def answer(self, content: bytes) -> tuple[int, bytes, str]:
        try:
            payload = orjson.loads(content)
            self.bodies.append(payload)
            req = parse_request(payload)
            chat = to_chat(req)
            self.chats.append(chat)
            answer = self.model(chat)
            if not req.stream:
                return 200, orjson.dumps(from_chat(answer.completion(), request=req)), \
                    "application/json"
            stream = ResponsesStream(req)
            chunks = answer.chunks()
            if self.fail_after is not None:
                data = stream.start() + b"".join(stream.feed(c)
                                                 for c in chunks[:self.fail_after])
                data += stream.fail(GatewayError(ErrorCode.STREAM_TRUNCATED, "cut"))
            else:
                data = stream.start() + b"".join(stream.feed(c) for c in chunks)
                data += stream.finish()
            return 200, data, "text/event-stream"
        except GatewayError as error:
            return error.status, orjson.dumps(error.body()), "application/json"

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        status, content, kind = self.answer(request.content)
        return httpx2.Response(status, content=content, headers={"content-type": kind})


def client(handler: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://gateway.test/v1", api_key="team-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_sdk_responses_create_gets_output_text_and_usage() -> None:
    response = client(Gateway(weather_model)).responses.create(
        model="gpt-4.1", instructions="Be kind.", input="Hello")
    assert response.output_text == "Echo: Hello"
    assert response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 9)


def test_sdk_function_call_round_trip_with_function_call_output() -> None:
    gateway = Gateway(weather_model)
    sdk = client(gateway)
    first = sdk.responses.create(model="gpt-4.1", input="Weather in Hanoi?",
                                 tools=[WEATHER_TOOL])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Hanoi", "unit": "celsius"}
    second = sdk.responses.create(model="gpt-4.1", tools=[WEATHER_TOOL], input=[
        {"role": "user", "content": "Weather in Hanoi?"}, *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": "31C"}])
    assert second.output_text == "The tool said: 31C"
    assert gateway.chats[1]["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id,
                                                "content": "31C"}


def test_sdk_responses_stream_final_response_and_text_deltas() -> None:
    answer = Answer(text="Let me check.", calls=[weather_call()], finish="tool_calls",
                    prompt_tokens=33, completion_tokens=17)
    with client(Gateway(lambda chat: answer)).responses.stream(
            model="gpt-4.1", input="Weather?", tools=[WEATHER_TOOL]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Let me check."
    assert final.output_text == "Let me check."
    assert final.output[1].type == "function_call"
    assert orjson.loads(final.output[1].arguments) == {"city": "Hanoi", "unit": "celsius"}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (33, 17)


def test_sdk_stream_that_fails_gives_no_final_response() -> None:
    sdk = client(Gateway(lambda chat: Answer(text="a long answer cut short"), fail_after=2))
    with sdk.responses.stream(model="gpt-4.1", input="x") as stream:
        kinds = [e.type for e in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert kinds[-1] == "response.failed"


def test_sdk_raises_bad_request_naming_the_field() -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(Gateway(weather_model)).responses.create(model="gpt-4.1", input="x", store=True)
    assert caught.value.body["param"] == "store"
    assert caught.value.code == "unsupported_parameter"


class AsgiGateway:
    """The same gateway for LangChain, which takes an ``httpx.Client``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status, content, kind = self.gateway.answer(request.read())
        return httpx.Response(status, content=content, headers={"content-type": kind})


def langchain(gateway: Gateway) -> Any:
    from langchain_openai import ChatOpenAI

    transport = httpx.MockTransport(AsgiGateway(gateway))
    return ChatOpenAI(model="gpt-4.1", base_url="http://gateway.test/v1", api_key="k",
                      use_responses_api=True, max_retries=0,
                      http_client=httpx.Client(transport=transport))


def test_langchain_responses_api_invoke_and_tool_call() -> None:
    gateway = Gateway(weather_model)
    llm = langchain(gateway)
    assert llm.invoke("Hello").text == "Echo: Hello"
    reply = llm.bind_tools([WEATHER_TOOL]).invoke("Weather in Hanoi?")
    assert reply.tool_calls[0]["name"] == "get_weather"
    assert reply.tool_calls[0]["args"] == {"city": "Hanoi", "unit": "celsius"}


def test_langchain_responses_api_stream_and_failure() -> None:
    llm = langchain(Gateway(lambda chat: Answer(text="streamed words here")))
    assert "".join(chunk.text for chunk in llm.stream("x")) == "streamed words here"
    failing = langchain(Gateway(lambda chat: Answer(text="cut short here"), fail_after=2))
    with pytest.raises(ValueError, match="cut"):
        list(failing.stream("x"))


def test_tool_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    stream = ResponsesStream(parse_request(body()))
    data = stream.start()
    for call_id, pieces in (("c1", ['{"a"', ": 1}"]), ("c2", ["{}"])):
        data += stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "f", "arguments": ""}}]}}]})
        for piece in pieces:
            data += stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"function": {"arguments": piece}}]}}]})
    data += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    final = events(data + stream.finish())[-1]["response"]
    assert [(i["call_id"], i["arguments"]) for i in final["output"]] == [("c1", '{"a": 1}'),
                                                                      ("c2", "{}")]


def test_sdk_responses_parse_with_a_pydantic_text_format() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    gateway = Gateway(lambda chat: Answer(text='{"name": "Hanoi", "population": 8500000}'))
    parsed = client(gateway).responses.parse(model="gpt-4.1", input="Biggest city?",
                                             text_format=City)
    assert parsed.output_parsed == City(name="Hanoi", population=8500000)
    response_format = gateway.chats[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["required"] == ["name", "population"]


def test_what_chat_completions_also_takes_goes_upstream_unchanged() -> None:
    req = parse_request(body(prompt_cache_key="repo-1", safety_identifier="hash-7",
                             service_tier="flex", text={"verbosity": "low"},
                             stream_options={"include_obfuscation": False}))
    chat = to_chat(req)
    assert (chat["prompt_cache_key"], chat["safety_identifier"], chat["service_tier"],
            chat["verbosity"]) == ("repo-1", "hash-7", "flex", "low")
    assert "stream_options" not in chat
    echoed = from_chat(Answer(text="x").completion(), request=req)
    assert echoed["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert echoed["prompt_cache_key"] == "repo-1"


def test_the_model_that_answered_can_be_named() -> None:
    req = parse_request(body())
    assert from_chat(Answer(text="x").completion(), request=req)["model"] == "gpt-4.1"
    assert from_chat(Answer(text="x").completion(), request=req,
                     model="gemini-2.5-flash")["model"] == "gemini-2.5-flash"
    stream = ResponsesStream(req, model="gemini-2.5-flash")
    assert events(stream.start())[0]["response"]["model"] == "gemini-2.5-flash"
