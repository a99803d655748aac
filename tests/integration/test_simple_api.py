"""The seed's own API: ``/call`` (JSON and SSE), ``/models``, ``/health``, BentoML's probes."""

from __future__ import annotations

import json

import httpx

from gateway.catalog import load_catalog
from gateway.pricing import cost_usd, to_micro
from loadtest.harness import FakeProvider, GatewayServer

CATALOG = load_catalog()
MESSAGES = [{"role": "system", "content": "You are a coder."},
            {"role": "user", "content": "Viết hàm quicksort bằng Python"}]


def test_call_answers_in_the_seed_shape_with_exact_cost(
    client: httpx.Client, fake: FakeProvider
) -> None:
    response = client.post("/call", json={"messages": MESSAGES})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"id", "model", "content", "usage", "latency_ms", "cost_usd"}
    assert body["model"] == "deepseek-v3.2"  # the seed's default model
    assert body["content"].startswith("Fake answer to: Viết hàm quicksort")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    exact = cost_usd(CATALOG.models["deepseek-v3.2"], usage["prompt_tokens"],
                     usage["completion_tokens"])
    assert body["cost_usd"] == float(to_micro(exact))
    assert body["latency_ms"] > 0
    assert fake.calls("deepseek-v3.2") == 1


def test_call_takes_the_models_default_max_tokens_unless_given(client: httpx.Client) -> None:
    # The fake provider cuts its answer at max_tokens and says finish_reason "length".
    short = client.post("/call", json={"model": "gpt-4.1", "messages": MESSAGES,
                                       "max_tokens": 5}).json()
    assert short["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 5
    full = client.post("/call", json={"model": "gpt-4.1", "messages": MESSAGES}).json()
    assert full["finish_reason"] == "stop"
    assert full["usage"]["completion_tokens"] > 5


def test_call_streams_deltas_then_a_closing_event_with_cost(client: httpx.Client) -> None:
    with client.stream("POST", "/call", json={"model": "gemini-2.5-flash",
                                              "messages": MESSAGES, "stream": True}) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    deltas, closing = events[:-1], events[-1]
    assert len(deltas) >= 2 and all("content" in e for e in deltas)
    assert "".join(e["content"] for e in deltas).startswith("Fake answer to: Viết hàm")
    assert closing["finish_reason"] == "stop"
    usage = closing["usage"]
    exact = cost_usd(CATALOG.models["gemini-2.5-flash"], usage["prompt_tokens"],
                     usage["completion_tokens"])
    assert closing["cost_usd"] == float(to_micro(exact))
    assert closing["latency_ms"] > 0


def test_models_lists_the_catalog_with_prices(client: httpx.Client) -> None:
    body = client.get("/models").json()
    prices = {m["id"]: (m["provider"], m["input_usd_per_mtok"]) for m in body["models"]}
    assert prices == {"deepseek-v3.2": ("deepseek", 0.42), "gemini-2.5-flash": ("google", 2.5),
                      "gpt-4.1": ("openai", 8.0), "claude-sonnet-4.5": ("anthropic", 15.0),
                      "text-embedding-3-small": ("openai", 0.02)}
    assert body["currency"] == "USD"
    assert "¥1 = $1" in body["note"]


def test_health_counts_requests_and_sees_the_upstream(client: httpx.Client) -> None:
    before = client.get("/health").json()
    client.post("/call", json={"messages": MESSAGES})
    after = client.get("/health").json()
    assert after["status"] == "healthy"
    assert after["requests_served"] == before["requests_served"] + 1
    assert after["mean_latency_ms"] > 0
    assert after["uptime_s"] > 0
    assert after["upstream"]["reachable"] is True
    assert set(after["breakers"]) == set(CATALOG.models)


def test_bentoml_probes_and_metrics_are_kept(gateway: GatewayServer) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert httpx.get(gateway.url + path).status_code == 200, path
