"""plan_chat: validation, the /call defaults versus OpenAI pass-through, and stream usage."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.catalog import load_catalog
from gateway.errors import GatewayError
from gateway.plan.chat import plan_chat

CATALOG = load_catalog()
MESSAGES = [{"role": "user", "content": "hi"}]


def refused(body: Any, *, catalog_defaults: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        plan_chat(CATALOG, body, catalog_defaults=catalog_defaults)
    return caught.value


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("catalog_defaults", [True, False])
def test_empty_messages_are_a_400_naming_messages(catalog_defaults: bool) -> None:
    error = refused({"model": "gpt-4.1", "messages": []}, catalog_defaults=catalog_defaults)
    assert (error.status, error.param, error.code, error.type) == (
        400,
        "messages",
        "invalid_value",
        "invalid_request_error",
    )
    assert error.message == "'messages' must contain at least one message."


@pytest.mark.parametrize("catalog_defaults", [True, False])
def test_missing_messages_are_a_400_naming_the_field(catalog_defaults: bool) -> None:
    error = refused({"model": "gpt-4.1"}, catalog_defaults=catalog_defaults)
    assert (error.status, error.param, error.code) == (400, "messages", "invalid_value")
    assert error.message == "Invalid value for 'messages': Field required."


def test_a_bad_role_is_a_400_naming_the_message_and_field() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]
    error = refused({"model": "gpt-4.1", "messages": messages})
    assert (error.status, error.param, error.code) == (400, "messages.1.role", "invalid_value")
    assert error.message.startswith("Invalid value for 'messages.1.role': Input should be ")


def test_a_message_without_a_role_is_a_400() -> None:
    error = refused({"model": "gpt-4.1", "messages": [{"content": "hi"}]})
    assert (error.status, error.param) == (400, "messages.0.role")
    assert error.message == "Invalid value for 'messages.0.role': Field required."


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.5), ("top_p", 1.5), ("n", 0), ("model", ""),
])
def test_out_of_range_parameters_are_a_400_naming_the_parameter(field: str, value: object) -> None:
    error = refused({"model": "gpt-4.1", "messages": MESSAGES, field: value})
    assert (error.status, error.param, error.code) == (400, field, "invalid_value")


@pytest.mark.parametrize(("field", "value"), [("max_tokens", 0), ("max_completion_tokens", -1)])
def test_token_limits_have_no_bound_of_the_gateways_own(field: str, value: int) -> None:
    # OpenAI's spec sets none (the schema fuzz found the gateway refusing these): the upstream
    # judges, and its answer is passed through.
    plan = plan_chat(CATALOG, {"model": "gpt-4.1", "messages": MESSAGES, field: value},
                     catalog_defaults=False)
    assert plan.payload[field] == value


@pytest.mark.parametrize("body", [[{"role": "user"}], "hello", None, 3])
def test_a_body_that_is_not_an_object_is_a_400(body: object) -> None:
    error = refused(body)
    assert (error.status, error.param, error.message) == (
        400,
        None,
        "The request body must be a JSON object.",
    )


@pytest.mark.parametrize("catalog_defaults", [True, False])
def test_an_unknown_model_is_a_404_model_not_found(catalog_defaults: bool) -> None:
    error = refused({"model": "gpt-5", "messages": MESSAGES}, catalog_defaults=catalog_defaults)
    assert (error.status, error.param, error.code, error.type) == (
        404,
        "model",
        "model_not_found",
        "invalid_request_error",
    )
    assert error.message == (
        "The model 'gpt-5' does not exist in this gateway's catalog (see GET /v1/models)."
    )


def test_an_embedding_model_is_not_a_chat_model() -> None:
    error = refused({"model": "text-embedding-3-small", "messages": MESSAGES})
    assert (error.status, error.param, error.code) == (400, "model", "model_not_supported")


# --- /call semantics ------------------------------------------------------------------------


def test_call_semantics_fill_the_default_model_and_its_defaults() -> None:
    plan = plan_chat(CATALOG, {"messages": MESSAGES}, catalog_defaults=True)
    assert plan.model == "deepseek-v3.2"
    assert plan.entry is CATALOG.models["deepseek-v3.2"]
    assert plan.payload == {"messages": MESSAGES, "max_tokens": 4096, "temperature": 0.7}
    assert (plan.stream, plan.wants_usage) == (False, False)


def test_call_semantics_use_the_requested_models_own_defaults() -> None:
    plan = plan_chat(
        CATALOG, {"model": "gemini-2.5-flash", "messages": MESSAGES}, catalog_defaults=True
    )
    assert plan.model == "gemini-2.5-flash"
    assert plan.payload == {
        "model": "gemini-2.5-flash",
        "messages": MESSAGES,
        "max_tokens": 8192,
        "temperature": 0.7,
    }


def test_call_semantics_keep_the_clients_values() -> None:
    body = {"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 50, "temperature": 0}
    plan = plan_chat(CATALOG, body, catalog_defaults=True)
    assert plan.payload == {
        "model": "gpt-4.1",
        "messages": MESSAGES,
        "max_tokens": 50,
        "temperature": 0,
    }


def test_call_semantics_fill_an_explicit_null() -> None:
    body = {"messages": MESSAGES, "max_tokens": None, "temperature": 1.1}
    plan = plan_chat(CATALOG, body, catalog_defaults=True)
    assert (plan.payload["max_tokens"], plan.payload["temperature"]) == (4096, 1.1)


def test_planning_does_not_change_the_clients_body() -> None:
    body = {"messages": MESSAGES, "stream": True}
    plan_chat(CATALOG, body, catalog_defaults=True)
    assert body == {"messages": MESSAGES, "stream": True}


# --- OpenAI semantics -----------------------------------------------------------------------


def test_openai_semantics_require_a_model() -> None:
    error = refused({"messages": MESSAGES}, catalog_defaults=False)
    assert (error.status, error.param, error.code, error.message) == (
        400,
        "model",
        "missing_required_parameter",
        "'model' is required.",
    )


def test_openai_semantics_add_no_defaults() -> None:
    body = {"model": "deepseek-v3.2", "messages": MESSAGES}
    plan = plan_chat(CATALOG, body, catalog_defaults=False)
    assert plan.model == "deepseek-v3.2"
    assert plan.payload == {"model": "deepseek-v3.2", "messages": MESSAGES}


# --- streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("catalog_defaults", [True, False])
def test_a_stream_always_asks_the_upstream_for_usage(catalog_defaults: bool) -> None:
    plan = plan_chat(
        CATALOG,
        {"model": "gpt-4.1", "messages": MESSAGES, "stream": True},
        catalog_defaults=catalog_defaults,
    )
    assert plan.stream is True
    assert plan.payload["stream_options"] == {"include_usage": True}
    assert plan.wants_usage is False


def test_wants_usage_reflects_the_clients_own_choice() -> None:
    asked = plan_chat(
        CATALOG,
        {
            "model": "gpt-4.1",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        catalog_defaults=False,
    )
    declined = plan_chat(
        CATALOG,
        {
            "model": "gpt-4.1",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": False},
        },
        catalog_defaults=False,
    )
    assert (asked.wants_usage, asked.payload["stream_options"]) == (True, {"include_usage": True})
    assert (declined.wants_usage, declined.payload["stream_options"]) == (
        False,
        {"include_usage": True},
    )


def test_other_stream_options_are_kept() -> None:
    plan = plan_chat(
        CATALOG,
        {
            "model": "gpt-4.1",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"vendor_flag": 1},
        },
        catalog_defaults=False,
    )
    assert plan.payload["stream_options"] == {"vendor_flag": 1, "include_usage": True}
    assert plan.wants_usage is False


def test_a_non_streaming_request_gets_no_stream_options() -> None:
    plan = plan_chat(
        CATALOG, {"model": "gpt-4.1", "messages": MESSAGES, "stream": False}, catalog_defaults=False
    )
    assert (plan.stream, plan.wants_usage) == (False, False)
    assert "stream_options" not in plan.payload


# --- pass-through ---------------------------------------------------------------------------


def test_unknown_fields_are_kept_in_the_payload() -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi", "name": "bob"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "seed": 7,
        "response_format": {"type": "json_object"},
        "vendor_extension": {"a": [1, 2]},
    }
    plan = plan_chat(CATALOG, body, catalog_defaults=False)
    assert plan.payload == body
    assert plan.payload is not body
