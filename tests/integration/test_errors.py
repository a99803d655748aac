"""Bad input and upstream failures: OpenAI-shaped errors with the right status, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY, FakeProvider, GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.text
    assert UPSTREAM_KEY not in response.text
    return dict(error)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/call"])
def test_malformed_json_is_400(client: httpx.Client, path: str) -> None:
    response = client.post(
        path, content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/call"])
def test_empty_messages_is_400_naming_the_field(client: httpx.Client, path: str) -> None:
    error = assert_openai_error(client.post(path, json={"model": "gpt-4.1", "messages": []}), 400)
    assert error["param"] == "messages"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4.1"}, "messages"),
        ({"model": "gpt-4.1", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "gpt-4.1", "messages": MESSAGES, "temperature": 7}, "temperature"),
        ({"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": "many"}, "max_tokens"),
    ],
)
def test_schema_errors_are_400_naming_the_field(
    client: httpx.Client, body: dict, param: str
) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param


def test_a_body_that_is_not_an_object_is_400(client: httpx.Client) -> None:
    assert_openai_error(client.post("/call", json=["not", "an", "object"]), 400)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/call"])
def test_unknown_model_is_404(client: httpx.Client, path: str, fake: FakeProvider) -> None:
    error = assert_openai_error(
        client.post(path, json={"model": "gpt-9-imaginary", "messages": MESSAGES}),
        404,
        "model_not_found",
    )
    assert "gpt-9-imaginary" in error["message"]
    assert fake.stats()["total"] == 0


def test_oversized_body_is_413(client: httpx.Client, fake: FakeProvider) -> None:
    huge = [{"role": "user", "content": "x" * (1 << 20)}]
    assert_openai_error(
        client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": huge}),
        413,
        "request_too_large",
    )
    assert fake.stats()["total"] == 0


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CLIENT_KEY}"}]
)
def test_missing_or_wrong_key_is_401(gateway: GatewayServer, headers: dict) -> None:
    for method, path in (
        ("POST", "/call"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ):
        response = httpx.request(
            method,
            gateway.url + path,
            headers=headers,
            json={"messages": MESSAGES} if method == "POST" else None,
        )
        assert_openai_error(response, 401, "invalid_api_key")


def test_sdk_sees_an_authentication_error(gateway: GatewayServer) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="gpt-4.1", messages=MESSAGES)


@pytest.mark.parametrize("path", ["/v1/assistants", "/nothing/here", "/v1"])
def test_unknown_path_is_404_in_openai_shape(client: httpx.Client, path: str) -> None:
    assert_openai_error(client.get(path), 404, "unknown_url")
    assert_openai_error(client.post(path, json={}), 404, "unknown_url")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/chat/completions"), ("DELETE", "/v1/models"), ("GET", "/call")],
)
def test_wrong_method_is_405_in_openai_shape(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert_openai_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]


def test_upstream_4xx_is_passed_through_with_its_status_and_message(
    client: httpx.Client, fake: FakeProvider
) -> None:
    fake.fault(model="gpt-4.1", kind="status", status=422, message="max_tokens is too large")
    error = assert_openai_error(
        client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": MESSAGES}), 422
    )
    assert "max_tokens is too large" in error["message"]
    assert fake.calls("gpt-4.1") == 1  # a client error is neither retried nor fallen back from


def test_upstream_5xx_everywhere_is_502_naming_each_model(
    client: httpx.Client, fake: FakeProvider
) -> None:
    fake.fault(model="*", kind="status", status=500)
    error = assert_openai_error(
        client.post("/v1/chat/completions", json={"model": "deepseek-v3.2", "messages": MESSAGES}),
        502,
    )
    for model in ("deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1"):
        assert model in error["message"]


def test_upstream_error_message_never_carries_the_upstream_key(
    client: httpx.Client, fake: FakeProvider
) -> None:
    fake.fault(
        model="gpt-4.1",
        kind="status",
        status=400,
        message=f"Incorrect API key provided: {UPSTREAM_KEY}",
    )
    error = assert_openai_error(
        client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": MESSAGES}), 400
    )
    assert "[redacted]" in error["message"]


@pytest.fixture
def impatient_gateway(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(
        log_dir,
        fake.base_url,
        env={"GATEWAY_UPSTREAM_TIMEOUT": "0.5", "GATEWAY_RETRY_ATTEMPTS": "1"},
    )
    yield server
    server.stop()


def test_upstream_timeouts_are_504(impatient_gateway: GatewayServer, fake: FakeProvider) -> None:
    fake.fault(model="*", kind="hang")
    response = httpx.post(
        f"{impatient_gateway.v1}/chat/completions",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "gpt-4.1", "messages": MESSAGES},
        timeout=10,
    )
    assert_openai_error(response, 504, "upstream_timeout")


def test_upstream_unreachable_is_502(log_dir: Path) -> None:
    server = GatewayServer(log_dir, "http://127.0.0.1:9/v1", env={"GATEWAY_RETRY_ATTEMPTS": "1"})
    try:
        response = httpx.post(
            f"{server.url}/call",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "gpt-4.1", "messages": MESSAGES},
            timeout=10,
        )
        assert_openai_error(response, 502, "upstream_connect")
        health = httpx.get(f"{server.url}/health").json()
        assert health["upstream"]["reachable"] is False
    finally:
        server.stop()


def test_the_upstream_key_never_reaches_a_log_line(
    gateway: GatewayServer, client: httpx.Client, fake: FakeProvider
) -> None:
    fake.fault(model="*", kind="status", status=503)
    client.post("/call", json={"messages": MESSAGES})
    client.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    metrics = httpx.get(gateway.url + "/metrics").text
    assert UPSTREAM_KEY not in metrics
    assert UPSTREAM_KEY not in gateway.process.log()
