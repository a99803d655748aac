"""Several providers through the real ``bentoml serve``: three fake provider processes, each with
its own key, serving the same models as deployments of one catalog. Providers are told apart by
each fake process's own ``/_fake/stats`` counters.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer, Process, wait_http

ALPHA_KEY = "sk-alpha-provider-7d1e0b"
BETA_KEY = "sk-beta-provider-94c2aa"
GAMMA_KEY = "sk-gamma-provider-31f07c"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "which provider are you?"}]
COOLDOWN_S = 2.0


def catalog(alpha: FakeProvider, beta: FakeProvider,
            gamma: FakeProvider | None = None) -> dict[str, Any]:
    providers = {
        "alpha": {"base_url": alpha.base_url, "api_key_env": "ALPHA_KEY", "timeout_s": 0.5},
        "beta": {"base_url": beta.base_url, "api_key_env": "BETA_KEY", "timeout_s": 0.5},
    }
    three = {}
    if gamma is not None:
        providers["gamma"] = {"base_url": gamma.base_url, "api_key_env": "GAMMA_KEY",
                              "timeout_s": 0.5}
        three = {"claude-sonnet-4.5": {
            "owned_by": "anthropic", "upstream_model": "claude-sonnet-4.5",
            "input_usd_per_mtok": "15", "output_usd_per_mtok": "15",
            "deployments": [{"provider": "alpha"}, {"provider": "beta"}, {"provider": "gamma"}]}}
    both = [{"provider": "alpha"}, {"provider": "beta"}]
    return {
        "default_model": "deepseek-v3.2",
        "providers": providers,
        "models": {
            "deepseek-v3.2": {"owned_by": "deepseek", "upstream_model": "deepseek-v3.2",
                              "input_usd_per_mtok": "0.42", "output_usd_per_mtok": "0.42",
                              "deployments": both},
            "gpt-4.1": {"owned_by": "openai", "upstream_model": "gpt-4.1",
                        "input_usd_per_mtok": "8", "output_usd_per_mtok": "8",
                        "balancer": "weighted",
                        "deployments": [{"provider": "alpha", "weight": 3},
                                        {"provider": "beta", "weight": 1}]},
            "text-embedding-3-small": {"owned_by": "openai", "kind": "embedding",
                                       "upstream_model": "text-embedding-3-small",
                                       "input_usd_per_mtok": "0.02", "deployments": both},
            **three,
        },
    }


def start_fake(log_dir: Path, key: str, port: int | None = None) -> FakeProvider:
    """A fake provider with its own key (on ``port`` again, to bring a stopped one back)."""
    if port is None:
        return FakeProvider(log_dir, "--api-key", key)
    fake = FakeProvider.__new__(FakeProvider)
    fake.port, fake.url = port, f"http://127.0.0.1:{port}"
    fake.process = Process(
        [sys.executable, "-m", "loadtest.fake_provider", "--host", "127.0.0.1", "--port",
         str(port), "--api-key", key], log_dir / f"fake-{port}-again.log")
    wait_http(f"{fake.url}/_fake/stats", fake.process, timeout=30)
    return fake


@pytest.fixture(scope="module")
def fakes(log_dir: Path) -> Iterator[dict[str, FakeProvider]]:
    running = {"alpha": start_fake(log_dir, ALPHA_KEY), "beta": start_fake(log_dir, BETA_KEY),
               "gamma": start_fake(log_dir, GAMMA_KEY)}
    yield running
    for fake in running.values():
        fake.stop()


@pytest.fixture(scope="module")
def multi(fakes: dict[str, FakeProvider], log_dir: Path) -> Iterator[GatewayServer]:
    path = log_dir / "providers.yaml"
    path.write_text(yaml.safe_dump(catalog(fakes["alpha"], fakes["beta"], fakes["gamma"])))
    server = GatewayServer(log_dir, "http://127.0.0.1:9/v1", extra_env={
        "GATEWAY_CONFIG": str(path), "ALPHA_KEY": ALPHA_KEY, "BETA_KEY": BETA_KEY,
        "GAMMA_KEY": GAMMA_KEY,
        "HOLYSHEEP_API_KEY": "", "GATEWAY_BREAKER_FAILURES": "3",
        "GATEWAY_BREAKER_COOLDOWN": str(COOLDOWN_S), "GATEWAY_TIMEOUT": "10"})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "fakes" in request.fixturenames:
        for fake in request.getfixturevalue("fakes").values():
            fake.reset()


def chat(base: str, model: str = "deepseek-v3.2") -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers=AUTH, timeout=15,
                      json={"model": model, "messages": MESSAGES})


def total(fake: FakeProvider, model: str) -> int:
    return int(fake.stats()["requests"].get(model, 0))


def poll(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_the_answer_says_which_provider_and_deployment_answered(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    answered = {chat(multi.url).headers["x-gateway-provider"] for _ in range(20)}
    assert answered <= {"alpha", "beta"} and answered
    response = chat(multi.url)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == response.headers["x-gateway-provider"]


def test_weights_3_to_1_send_about_three_quarters_to_the_first(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    with httpx.Client(base_url=multi.url, headers=AUTH, timeout=15) as client:
        for _ in range(400):
            body = {"model": "gpt-4.1", "messages": MESSAGES}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    alpha, beta = total(fakes["alpha"], "gpt-4.1"), total(fakes["beta"], "gpt-4.1")
    assert alpha + beta == 400
    assert 0.65 <= alpha / 400 <= 0.85, alpha


def run_load(base: str, model: str, requests: int, threads: int) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=15) as client:
            for _ in range(count):
                answer = client.post("/v1/chat/completions",
                                     json={"model": model, "messages": MESSAGES})
                with lock:
                    answers.append(answer)

    pool = [threading.Thread(target=worker, args=(requests // threads,)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return answers


def test_least_in_flight_sends_less_to_a_slow_provider(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    fakes["alpha"].configure(latency_ms=200)
    answers = run_load(multi.url, "deepseek-v3.2", 240, 8)
    assert [a.status_code for a in answers] == [200] * 240
    slow, fast = total(fakes["alpha"], "deepseek-v3.2"), total(fakes["beta"], "deepseek-v3.2")
    assert slow + fast == 240
    assert slow < fast / 2, (slow, fast)


def test_streams_and_embeddings_route_across_providers(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    client = openai.OpenAI(base_url=multi.v1, api_key=CLIENT_KEY, max_retries=0)
    for _ in range(12):
        with client.chat.completions.with_streaming_response.create(
                model="deepseek-v3.2", messages=MESSAGES, stream=True) as response:
            assert response.headers["x-gateway-provider"] in ("alpha", "beta")
            text = "".join(chunk.choices[0].delta.content or ""
                           for chunk in response.parse() if chunk.choices)
        assert text.startswith("Fake answer")
    assert total(fakes["alpha"], "deepseek-v3.2") + total(fakes["beta"], "deepseek-v3.2") == 12
    fakes["alpha"].fault(model="text-embedding-3-small", kind="status", status=503)
    for index in range(6):
        vectors = client.embeddings.create(model="text-embedding-3-small", input=f"text {index}")
        assert len(vectors.data) == 1
    assert total(fakes["beta"], "text-embedding-3-small") >= 6  # alpha fails: beta answers
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="z")
    assert (raw.headers["x-gateway-provider"], raw.headers["x-gateway-deployment"]) == (
        "beta", "beta")


def test_with_three_providers_two_failing_the_third_answers_everything(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    fakes["beta"].fault(model="claude-sonnet-4.5", kind="status", status=503)
    fakes["gamma"].fault(model="claude-sonnet-4.5", kind="hang")
    answers = run_load(multi.url, "claude-sonnet-4.5", 60, 3)
    assert [a.status_code for a in answers] == [200] * 60
    assert {a.headers["x-gateway-provider"] for a in answers} == {"alpha"}
    assert total(fakes["alpha"], "claude-sonnet-4.5") == 60
    health = httpx.get(f"{multi.url}/health").json()["deployments"]["claude-sonnet-4.5"]
    states = {name: d["state"] for name, d in health["deployments"].items()}
    assert states["alpha"] == "closed"
    assert states["beta"] in ("open", "half_open") and states["gamma"] in ("open", "half_open")


def test_the_bridged_routes_route_across_providers_too(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    calls = [("/v1/messages", {"model": "deepseek-v3.2", "max_tokens": 50,
                               "messages": MESSAGES}),
             ("/v1/responses", {"model": "deepseek-v3.2", "input": "hello"}),
             ("/v1/completions", {"model": "deepseek-v3.2", "prompt": "hello"})]
    for path, body in calls:
        for _ in range(6):
            answer = httpx.post(f"{multi.url}{path}", json=body, timeout=15,
                                headers={**AUTH, "x-api-key": CLIENT_KEY})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-gateway-provider"] in ("alpha", "beta")
    assert total(fakes["alpha"], "deepseek-v3.2") + total(fakes["beta"], "deepseek-v3.2") == 18


def test_each_provider_gets_only_its_own_key_and_no_key_leaks(
    multi: GatewayServer, fakes: dict[str, FakeProvider],
) -> None:
    for _ in range(20):
        assert chat(multi.url).status_code == 200
    assert fakes["alpha"].stats()["last_authorization"] == f"Bearer {ALPHA_KEY}"
    assert fakes["beta"].stats()["last_authorization"] == f"Bearer {BETA_KEY}"
    assert poll(lambda: chat(multi.url, "claude-sonnet-4.5").status_code == 200
                and fakes["gamma"].stats()["last_authorization"] is not None)
    assert fakes["gamma"].stats()["last_authorization"] == f"Bearer {GAMMA_KEY}"
    # An upstream error quoting both keys reaches the client redacted.
    for fake in fakes.values():
        fake.fault(model="gpt-4.1", kind="status", status=400,
                   message=f"bad request from {ALPHA_KEY} / {BETA_KEY}")
    rejected = chat(multi.url, "gpt-4.1")
    assert rejected.status_code == 400
    assert rejected.json()["error"]["message"] == "bad request from [redacted] / [redacted]"
    seen = [rejected.text, str(rejected.headers),
            httpx.get(f"{multi.url}/metrics").text, httpx.get(f"{multi.url}/health").text,
            multi.process.log()]
    for text in seen:
        assert ALPHA_KEY not in text and BETA_KEY not in text and GAMMA_KEY not in text


def test_a_bad_catalog_stops_start_up_naming_file_entry_and_field(
    fakes: dict[str, FakeProvider], log_dir: Path,
) -> None:
    path = log_dir / "missing-key.yaml"
    path.write_text(yaml.safe_dump(catalog(fakes["alpha"], fakes["beta"])))
    with pytest.raises(RuntimeError) as caught:
        GatewayServer(log_dir, "http://127.0.0.1:9/v1",
                      extra_env={"GATEWAY_CONFIG": str(path), "ALPHA_KEY": ALPHA_KEY})
    assert (f"{path}: invalid model catalog: providers.beta.api_key_env: the environment "
            f"variable 'BETA_KEY' is not set") in str(caught.value)


def breaker_state(base: str, deployment: str) -> float | None:
    """``gateway_breaker_state`` of one deployment of deepseek-v3.2, from /metrics."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("gateway_breaker_state{") and 'model="deepseek-v3.2"' in line \
                and f'deployment="{deployment}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


class SteadyLoad:
    """Requests on the default model from 3 threads until stopped; every answer kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(3)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=15) as client:
            while not self._stop.is_set():
                answer = client.post("/v1/chat/completions",
                                     json={"model": "deepseek-v3.2", "messages": MESSAGES})
                self.answers.append((answer.status_code,
                                     answer.headers.get("x-gateway-provider", "")))

    def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.answers


def test_a_dying_provider_costs_no_client_error_and_comes_back_after_the_cooldown(
    multi: GatewayServer, fakes: dict[str, FakeProvider], log_dir: Path,
) -> None:
    load = SteadyLoad(multi.url)
    try:
        assert poll(lambda: {p for _, p in load.answers} == {"alpha", "beta"})
        # 1. refused: the process is gone.
        port = fakes["alpha"].port
        fakes["alpha"].stop()
        assert poll(lambda: breaker_state(multi.url, "alpha") == 2)
        mark = len(load.answers)
        time.sleep(1.0)
        assert {p for _, p in load.answers[mark:]} == {"beta"}
        # 2. back, but answering 503.
        fakes["alpha"] = start_fake(log_dir, ALPHA_KEY, port)
        fakes["alpha"].fault(model="deepseek-v3.2", kind="status", status=503)
        assert poll(lambda: total(fakes["alpha"], "deepseek-v3.2") >= 1)  # a probe, refused
        # 3. hanging: probes time out (0.5 s) and go to beta.
        fakes["alpha"].reset()
        fakes["alpha"].fault(model="deepseek-v3.2", kind="hang")
        assert poll(lambda: fakes["alpha"].stats()["cancelled"] >= 1, timeout=COOLDOWN_S * 4)
        assert breaker_state(multi.url, "alpha") == 2
        assert breaker_state(multi.url, "beta") in (None, 0)  # never failed
        health = httpx.get(f"{multi.url}/health").json()["deployments"]["deepseek-v3.2"]
        assert health["state"] == "closed"
        states = {name: d["state"] for name, d in health["deployments"].items()}
        assert states["alpha"] in ("open", "half_open") and states["beta"] == "closed"
        # 4. recovered: after the cooldown a probe succeeds and traffic comes back.
        fakes["alpha"].reset()
        assert poll(lambda: breaker_state(multi.url, "alpha") == 0, timeout=COOLDOWN_S * 4)
        mark = len(load.answers)
        assert poll(lambda: sum(p == "alpha" for _, p in load.answers[mark:]) >= 10)
    finally:
        answers = load.stop()
    failed = [status for status, _ in answers if status != 200]
    assert len(answers) > 100
    assert failed == []
