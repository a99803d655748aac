"""The legacy completions bridge: its 400s, the translation to chat and back, the chunk
translator, and the official ``openai`` SDK's ``completions.create`` (plain and streamed)
through it over a MockTransport."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest

from gateway.bridges.completions import CompletionsStream, from_chat, parse_request, to_chat
from gateway.errors import ErrorCode, GatewayError

from .bridges_fakes import Answer, Model


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "deepseek-v3.2", "prompt": "Once upon a time", **extra}


def refused(payload: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_request(payload)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(("field", "value"), [
    ("prompt", [1, 2, 3]), ("prompt", [[1, 2]]), ("prompt", ["a", "b"]), ("prompt", []),
    ("logprobs", 2), ("suffix", "end."), ("best_of", 3), ("functions", [])])
def test_what_chat_cannot_do_is_unsupported_and_named(field: str, value: Any) -> None:
    error = refused(body(**{field: value}))
    assert (error.error_code, error.param) == (ErrorCode.UNSUPPORTED_PARAMETER, field)


@pytest.mark.parametrize("field", ["stream", "max_tokens", "best_of", "suffix", "logprobs",
                                   "stop", "seed", "user"])
def test_a_null_parameter_means_absent(field: str) -> None:
    # The schema fuzz found ``"stream": null`` refused here as it once was on chat.
    assert parse_request(body(**{field: None})) == parse_request(body())


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("prompt", None, ""), ("best_of", 0, 0), ("max_tokens", 0, 0)])
def test_spec_valid_edge_values_are_accepted(field: str, value: Any, expected: Any) -> None:
    assert getattr(parse_request(body(**{field: value})), field) == expected


@pytest.mark.parametrize(("field", "value", "code"), [
    ("prompt", None, ErrorCode.MISSING_PARAMETER),
    ("max_tokens", -1, ErrorCode.INVALID_VALUE),
    ("temperature", 3, ErrorCode.INVALID_VALUE),
    ("n", 0, ErrorCode.INVALID_VALUE),
    ("stream_options", {"include_usage": True, "x": 1}, ErrorCode.UNSUPPORTED_PARAMETER),
])
def test_a_bad_value_is_named(field: str, value: Any, code: ErrorCode) -> None:
    payload = body(**{field: value})
    if value is None:
        del payload[field]
    error = refused(payload)
    assert error.error_code is code and error.param is not None
    assert error.param.startswith(field)


def test_the_prompt_is_one_user_message_and_parameters_pass_through() -> None:
    chat = to_chat(parse_request(body(prompt=["Say hi"], stop="\n", n=2, temperature=0.5,
                                      top_p=0.9, presence_penalty=0.1, frequency_penalty=0.2,
                                      seed=7, logit_bias={"50256": -100}, user="u",
                                      best_of=1, logprobs=None)))
    assert chat == {"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "Say hi"}],
                    "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "stop": "\n", "n": 2,
                    "presence_penalty": 0.1, "frequency_penalty": 0.2, "seed": 7,
                    "logit_bias": {"50256": -100}, "user": "u"}


def test_max_tokens_defaults_to_sixteen_and_a_stream_asks_for_usage() -> None:
    chat = to_chat(parse_request(body(stream=True)))
    assert chat["max_tokens"] == 16
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_from_chat_gives_a_text_completion() -> None:
    answer = Answer(text=" there was a gateway.", finish="length")
    completion = from_chat(answer.completion(), request=parse_request(body()))
    assert completion["object"] == "text_completion" and completion["id"].startswith("cmpl-")
    assert completion["choices"] == [{"text": " there was a gateway.", "index": 0,
                                      "logprobs": None, "finish_reason": "length"}]
    assert completion["usage"] == {"prompt_tokens": 21, "completion_tokens": 9,
                                   "total_tokens": 30}
    assert completion["model"] == "up-model"


def test_echo_puts_the_prompt_in_front() -> None:
    completion = from_chat(Answer(text=" there was").completion(),
                           request=parse_request(body(echo=True)))
    assert completion["choices"][0]["text"] == "Once upon a time there was"


def test_a_completion_without_choices_is_an_upstream_protocol_error() -> None:
    with pytest.raises(GatewayError) as caught:
        from_chat({"id": "x", "choices": []}, request=parse_request(body()))
    assert caught.value.error_code is ErrorCode.UPSTREAM_PROTOCOL


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(raw.removeprefix(b"data: ")) for raw in data.split(b"\n\n") if raw]


def test_the_stream_gives_text_chunks_and_usage_only_when_asked() -> None:
    answer = Answer(text="abcdef", finish="stop")
    plain = CompletionsStream(parse_request(body(stream=True)))
    sent = chunks_of(b"".join(plain.feed(c) for c in answer.chunks()))
    assert "".join(c["choices"][0]["text"] for c in sent) == "abcdef"
    assert sent[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "text_completion" and "usage" not in c for c in sent)
    asked = CompletionsStream(parse_request(body(stream=True,
                                                 stream_options={"include_usage": True})))
    last = chunks_of(b"".join(asked.feed(c) for c in answer.chunks()))[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 30


def test_the_stream_echoes_the_prompt_first() -> None:
    stream = CompletionsStream(parse_request(body(stream=True, echo=True)))
    sent = chunks_of(b"".join(stream.feed(c) for c in Answer(text="!").chunks()))
    assert "".join(c["choices"][0]["text"] for c in sent) == "Once upon a time!"


def test_fail_is_an_openai_error_event_and_nothing_after_it() -> None:
    stream = CompletionsStream(parse_request(body(stream=True)))
    sent = stream.fail(GatewayError(ErrorCode.STREAM_TRUNCATED, "cut"))
    assert orjson.loads(sent.removeprefix(b"data: "))["error"]["code"] == "stream_truncated"
    assert stream.feed(Answer(text="x").chunks()[1]) == b""


class Gateway:
    def __init__(self, model: Model, *, fail_after: int | None = None) -> None:
        self.model = model
        self.fail_after = fail_after
        self.chats: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/completions"
        try:
            req = parse_request(orjson.loads(request.content))
            chat = to_chat(req)
            self.chats.append(chat)
            answer = self.model(chat)
            if not req.stream:
                return httpx2.Response(200, json=from_chat(answer.completion(), request=req))
            stream = CompletionsStream(req)
            chunks = answer.chunks()
            if self.fail_after is None:
                data = b"".join(stream.feed(c) for c in chunks) + b"data: [DONE]\n\n"
            else:
                data = b"".join(stream.feed(c) for c in chunks[:self.fail_after])
                data += stream.fail(GatewayError(ErrorCode.STREAM_TRUNCATED, "cut"))
            return httpx2.Response(200, content=data,
                                   headers={"content-type": "text/event-stream"})
        except GatewayError as error:
            return httpx2.Response(error.status, json=error.body())


def client(handler: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://gateway.test/v1", api_key="k", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_sdk_completions_create() -> None:
    gateway = Gateway(lambda chat: Answer(text=" a fox.", finish="length"))
    completion = client(gateway).completions.create(model="deepseek-v3.2",
                                                    prompt="Once upon", max_tokens=3)
    assert completion.choices[0].text == " a fox."
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.total_tokens == 30
    assert gateway.chats[0]["max_tokens"] == 3


def test_sdk_completions_stream_with_usage() -> None:
    stream = client(Gateway(lambda chat: Answer(text="streamed text"))).completions.create(
        model="deepseek-v3.2", prompt="x", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "streamed text"
    assert chunks[-1].usage.completion_tokens == 9


def test_sdk_completions_stream_that_fails_raises() -> None:
    stream = client(Gateway(lambda chat: Answer(text="cut short here"), fail_after=2)
                    ).completions.create(model="deepseek-v3.2", prompt="x", stream=True)
    with pytest.raises(openai.APIError, match="cut"):
        list(stream)


def test_sdk_raises_bad_request_for_several_prompts() -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(Gateway(lambda chat: Answer(text="x"))).completions.create(
            model="deepseek-v3.2", prompt=["a", "b"])
    assert caught.value.body["param"] == "prompt"
