"""Keys, limits, budgets and the ledger through real ``bentoml serve`` replicas sharing a real
``redis-server``, driven with httpx and the ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer, RedisServer, throwaway_tls

ADMIN = "gw-admin-SECRET-77"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def gateway_env(redis: RedisServer | None, **extra: str) -> dict[str, str]:
    env = {"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_MAX_CONCURRENCY": "300",
           "GATEWAY_CACHE": "true", **extra}
    if redis is not None:
        env["REDIS_URL"] = redis.url
    return env


@pytest.fixture(scope="module", params=["tcp with a password", "tls", "unix socket"])
def redis(log_dir: Path, tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """Every test here runs on each ``REDIS_URL`` form, through the one Redis client."""
    if request.param == "tls":
        server = RedisServer(log_dir, tls=throwaway_tls(tmp_path_factory.mktemp("redis-tls")))
    else:
        server = RedisServer(log_dir, password="redis-pw-SECRET-3" if request.param.startswith(
            "tcp") else None, unix=request.param == "unix socket")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(fake: FakeProvider, redis: RedisServer,
             log_dir: Path) -> Iterator[tuple[GatewayServer, GatewayServer]]:
    a = GatewayServer(log_dir, fake.base_url, env=gateway_env(redis))
    b = GatewayServer(log_dir, fake.base_url, env=gateway_env(redis))
    yield a, b
    a.stop()
    b.stop()


def create_key(base: str, **spec: Any) -> dict[str, Any]:
    response = httpx.post(f"{base}/admin/keys", json={"name": "team-key", **spec},
                          headers=ADMIN_AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def chat(base: str, key: str, content: str, *, model: str = "gpt-4.1",
         **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": content}],
                            **extra})


async def spread(bases: list[str], key: str, count: int, *,
                 width: int = 24) -> list[httpx.Response]:
    """``count`` distinct requests at once, alternating between the replicas."""
    gate = asyncio.Semaphore(width)
    async with httpx.AsyncClient(timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        async def one(i: int) -> httpx.Response:
            async with gate:
                return await http.post(f"{bases[i % len(bases)]}/v1/chat/completions", json={
                    "model": "deepseek-v3.2",
                    "messages": [{"role": "user", "content": f"request {i} {time.time()}"}]})
        return await asyncio.gather(*(one(i) for i in range(count)))


def test_rpm_holds_exactly_across_two_replicas(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    key = create_key(a.url, rpm=60)["key"]
    started = time.monotonic()
    answers = asyncio.run(spread([a.url, b.url], key, 120))
    assert time.monotonic() - started < 55  # all inside the minute
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) == 60 and len(refused) == 60
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(60))
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"60"}


def test_a_check_overlapped_with_its_upstream_call_still_refuses(
        replicas: tuple[GatewayServer, GatewayServer], fake: FakeProvider) -> None:
    """Replica A's last decision left the key plenty of room, so A checks its next request
    beside the upstream call; meanwhile B spent the key: A's client gets the 429 all the same
    (the upstream saw the request: that is what overlapping means, and why it needs room)."""
    a, b = replicas
    key = create_key(a.url, rpm=20)["key"]
    assert chat(a.url, key, f"first on A {time.time()}").status_code == 200
    assert chat(b.url, key, f"first on B {time.time()}").status_code == 200  # B's check in line
    for i in range(18):
        assert chat(b.url, key, f"B spends {i} {time.time()}").status_code == 200
    content = f"A, late {time.time()}"
    late = chat(a.url, key, content)
    assert late.status_code == 429, late.text
    assert late.json()["error"]["code"] == "rate_limit_exceeded"
    assert late.headers["x-ratelimit-remaining-requests"] == "0"
    assert any(r["body"]["messages"][-1]["content"] == content for r in fake.received())
    after = f"A, after {time.time()}"
    assert chat(a.url, key, after).status_code == 429  # no room left now: checked first
    assert not any(r["body"]["messages"][-1]["content"] == after for r in fake.received())


def test_headers_count_down_on_both_replicas(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    key = create_key(a.url, rpm=10, tpm=100_000)["key"]
    seen = []
    for i in range(4):
        answer = chat((a, b)[i % 2].url, key, f"count down {i} {time.time()}")
        assert answer.status_code == 200
        seen.append(int(answer.headers["x-ratelimit-remaining-requests"]))
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert seen == [9, 8, 7, 6]


def test_tpm_is_charged_from_the_estimate_then_corrected_from_usage(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    key = create_key(a.url, tpm=2000)["key"]
    spent = 0
    served = 0
    for i in range(40):
        content = f"tokens {i:03d} " + "x" * 389
        answer = chat((a, b)[i % 2].url, key, content, max_tokens=200)
        estimate = len(content) // 4 + 200  # the documented estimate: characters / 4 + max_tokens
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "rate_limit_exceeded"
            assert spent + estimate > 2000  # refused only when the estimate does not fit
            break
        assert answer.status_code == 200, answer.text
        # Remaining = limit - real usage of the earlier requests - this request's estimate.
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) == 2000 - spent - estimate
        usage = answer.json()["usage"]
        spent += usage["prompt_tokens"] + usage["completion_tokens"]
        served += 1
    else:
        pytest.fail("the TPM limit never refused")
    assert served >= 3


def test_a_budget_stops_the_key_after_the_request_that_crosses_it(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    key = create_key(a.url, budget_daily_usd="0.01")["key"]
    costs: list[Decimal] = []
    for i in range(200):
        answer = chat((a, b)[i % 2].url, key, f"spend {i} " + "y" * 2000, model="gpt-4.1")
        if answer.status_code != 200:
            break
        costs.append(Decimal(answer.headers["x-gateway-cost-usd"]))
    else:
        pytest.fail("the budget never stopped the key")
    assert sum(costs[:-1]) < Decimal("0.01") <= sum(costs)  # the last one served crossed it
    error = answer.json()["error"]
    assert answer.status_code == 429 and error["code"] == "insufficient_quota"
    assert "daily budget of $0.010000" in error["message"] and "resets at" in error["message"]
    assert int(answer.headers["retry-after"]) <= 86400


def test_the_openai_sdk_retries_after_the_retry_after_it_was_given(
        replicas: tuple[GatewayServer, GatewayServer], fake: FakeProvider) -> None:
    a, b = replicas
    key = create_key(a.url, max_parallel=1)["key"]
    fake.fault(model="claude-sonnet-4.5", kind="trickle", delay_ms=1500, times=1)
    with httpx.Client(timeout=30) as http:
        slow = threading.Thread(target=lambda: chat(a.url, key, "slow one",
                                                    model="claude-sonnet-4.5"))
        slow.start()
        deadline = time.monotonic() + 10
        while fake.stats()["in_flight"] == 0:  # the slow request holds the key's only slot
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = http.post(f"{b.url}/v1/chat/completions",
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": "deepseek-v3.2",
                                  "messages": [{"role": "user", "content": "refused"}]})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        client = openai.OpenAI(base_url=b.v1, api_key=key, max_retries=4)
        raw = client.chat.completions.with_raw_response.create(
            model="deepseek-v3.2", messages=[{"role": "user", "content": "patient"}])
        slow.join()
    assert raw.http_response.status_code == 200
    assert raw.retries_taken >= 1


def test_a_key_made_on_one_replica_works_on_the_other_and_revocation_lands_within_a_second(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    made = create_key(a.url, name="fresh")
    assert chat(b.url, made["key"], f"at once {time.time()}").status_code == 200
    assert chat(a.url, made["key"], f"warm a {time.time()}").status_code == 200
    revoked = httpx.post(f"{b.url}/admin/keys/{made['id']}/revoke", headers=ADMIN_AUTH)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    at = time.monotonic()
    for base in (a.url, b.url):
        while chat(base, made["key"], f"after {time.time()}").status_code != 401:
            assert time.monotonic() - at < 1.0, "a revoked key worked for over a second"
            time.sleep(0.05)
    rotated_key = create_key(a.url, name="rotating")
    rotated = httpx.post(f"{a.url}/admin/keys/{rotated_key['id']}/rotate", headers=ADMIN_AUTH)
    assert chat(b.url, rotated.json()["key"], f"new {time.time()}").status_code == 200
    assert chat(b.url, rotated_key["key"], f"old {time.time()}").status_code == 401


def test_expired_keys_get_key_expired(replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, _ = replicas
    made = create_key(a.url, expires_at="2020-01-01T00:00:00Z")
    answer = chat(a.url, made["key"], "too late")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "key_expired"


def test_keys_survive_a_restart_with_redis(fake: FakeProvider, redis: RedisServer,
                                           log_dir: Path) -> None:
    first = GatewayServer(log_dir, fake.base_url, env=gateway_env(redis))
    try:
        made = create_key(first.url, name="durable")
    finally:
        first.stop()
    second = GatewayServer(log_dir, fake.base_url, env=gateway_env(redis))
    try:
        assert chat(second.url, made["key"], f"still here {time.time()}").status_code == 200
    finally:
        second.stop()


def test_keys_survive_a_restart_without_redis(fake: FakeProvider, log_dir: Path,
                                              tmp_path: Path) -> None:
    env = gateway_env(None, GATEWAY_KEYS_DB=str(tmp_path / "tenants.db"))
    first = GatewayServer(log_dir, fake.base_url, env=env)
    try:
        made = create_key(first.url, name="durable-sqlite", rpm=5)
        assert chat(first.url, made["key"], "before").status_code == 200
    finally:
        first.stop()
    second = GatewayServer(log_dir, fake.base_url, env=env)
    try:
        answer = chat(second.url, made["key"], f"after restart {time.time()}")
        assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "5"
        listed = httpx.get(f"{second.url}/admin/keys", headers=ADMIN_AUTH).json()["data"]
        assert "durable-sqlite" in [k["name"] for k in listed]
    finally:
        second.stop()


def _stream_cost(base: str, key: str, content: str) -> Decimal:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    cost = None
    for chunk in client.chat.completions.create(
            model="deepseek-v3.2", messages=[{"role": "user", "content": content}], stream=True,
            stream_options={"include_usage": True}):
        if chunk.usage is not None:
            cost = Decimal(str(chunk.usage.model_extra["cost_usd"]))
    assert cost is not None
    return cost


def test_the_ledger_equals_what_clients_were_charged_to_the_micro_dollar(
        replicas: tuple[GatewayServer, GatewayServer], fake: FakeProvider) -> None:
    a, b = replicas
    made = create_key(a.url, name="ledger-key", team="ledger-team")
    key = made["key"]
    fake.fault(model="gemini-2.5-flash", kind="status", status=400, message="bad")
    charged = Decimal(0)
    sent = errors = hits = 0
    for i in range(240):
        base = (a, b)[i % 2].url
        kind = i % 6
        if kind == 5:
            charged += _stream_cost(base, key, f"stream {i}")
        else:
            model = "gemini-2.5-flash" if kind == 4 else "deepseek-v3.2"
            # kinds 2 and 3 repeat one prompt: all but the first are cache hits (cost 0)
            content = "the same question" if kind in (2, 3) else f"question {i}"
            answer = chat(base, key, content, model=model)
            if answer.status_code == 200:
                charged += Decimal(answer.headers["x-gateway-cost-usd"])
                hits += answer.headers["x-gateway-cache"] == "hit"
            else:
                assert answer.status_code == 400
                errors += 1
        sent += 1
    assert hits > 50 and errors == 40
    deadline = time.monotonic() + 10
    while True:  # the ledger is written in the background: poll until every request is in
        rows = httpx.get(f"{a.url}/admin/usage", headers=ADMIN_AUTH,
                         params={"key": made["id"], "group_by": "key"}).json()["data"]
        if rows and rows[0]["requests"] == sent:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    row = rows[0]
    assert Decimal(row["cost_usd"]) == charged
    assert row["errors"] == errors
    assert Decimal(row["saved_usd"]) > 0
    by_model = httpx.get(f"{b.url}/admin/usage", headers=ADMIN_AUTH, params={
        "team": "ledger-team", "group_by": "team,model", "format": "csv"})
    assert by_model.headers["content-type"].startswith("text/csv")
    lines = by_model.text.strip().splitlines()
    assert lines[0].startswith("team,model,requests,errors")
    assert sum(Decimal(line.split(",")[-2]) for line in lines[1:]) == charged
    own = httpx.get(f"{b.url}/v1/usage", headers={"Authorization": f"Bearer {key}"},
                    params={"group_by": "model"}).json()["data"]
    assert sum(r["requests"] for r in own) == sent


def test_a_key_reads_only_its_own_usage_and_never_the_admin_api(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, _ = replicas
    mine = create_key(a.url, name="mine")
    other = create_key(a.url, name="other")
    assert chat(a.url, other["key"], f"other's {time.time()}").status_code == 200
    assert chat(a.url, mine["key"], f"mine {time.time()}").status_code == 200
    auth = {"Authorization": f"Bearer {mine['key']}"}
    peek = httpx.get(f"{a.url}/v1/usage", headers=auth, params={"key": other["id"]})
    assert peek.status_code == 403 and peek.json()["error"]["code"] == "permission_denied"
    deadline = time.monotonic() + 5
    while True:  # poll for the ledger write before asserting what the key sees
        own = httpx.get(f"{a.url}/v1/usage", headers=auth, params={"group_by": "key"})
        assert own.status_code == 200
        if own.json()["data"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [r["key"] for r in own.json()["data"]] == [mine["id"]]
    assert httpx.get(f"{a.url}/admin/keys", headers=auth).status_code == 403
    assert httpx.get(f"{a.url}/admin/usage", headers=auth).status_code == 403
    nobody = httpx.post(f"{a.url}/admin/keys", json={"name": "x"},
                        headers={"Authorization": "Bearer not-a-key"})
    assert nobody.status_code == 401 and nobody.json()["error"]["code"] == "invalid_api_key"
    listed = httpx.get(f"{a.url}/admin/keys", headers=ADMIN_AUTH).text
    assert mine["key"] not in listed and "key_sha256" not in listed


def test_a_name_with_html_round_trips_as_text_and_control_characters_are_refused(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    name = "<img src=x onerror=alert(1)>"
    made = create_key(a.url, name=name, team='"quoted" & <b>')
    fetched = httpx.get(f"{b.url}/admin/keys/{made['id']}", headers=ADMIN_AUTH)
    assert fetched.headers["content-type"] == "application/json"
    assert fetched.json()["name"] == name and made["prefix"] == made["key"][:6] + "…"
    assert "key" not in fetched.json()
    assert chat(a.url, made["key"], f"html {time.time()}").status_code == 200
    bad = httpx.post(f"{a.url}/admin/keys", json={"name": "line\nbreak"}, headers=ADMIN_AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    deadline = time.monotonic() + 5
    while True:  # the access line names the key and never holds its secret
        lines = [json.loads(line) for line in a.process.log().splitlines()
                 if line.startswith('{"time"')]
        mine = [entry for entry in lines if entry["key"] == name]
        if mine:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert mine[0]["status"] == 200 and mine[0]["route"] == "/v1/chat/completions"
    assert made["key"] not in a.process.log() and ADMIN not in a.process.log()


def test_admin_patch_changes_limits_at_once(replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    made = create_key(a.url, name="patched")
    assert "x-ratelimit-limit-requests" not in chat(b.url, made["key"], "free").headers
    patched = httpx.patch(f"{a.url}/admin/keys/{made['id']}", headers=ADMIN_AUTH,
                          json={"rpm": 7, "models": ["deepseek-*"], "metadata": {"owner": "x"}})
    assert patched.status_code == 200 and patched.json()["rpm"] == 7
    deadline = time.monotonic() + 1.0  # replica b may hold the old record for up to 0.5 s
    while True:
        answer = chat(b.url, made["key"], f"limited {time.time()}", model="deepseek-v3.2")
        if "x-ratelimit-limit-requests" in answer.headers:
            break
        assert time.monotonic() < deadline, "the new limit never applied"
        time.sleep(0.05)
    assert answer.headers["x-ratelimit-limit-requests"] == "7"
    forbidden = chat(b.url, made["key"], "other model", model="gpt-4.1")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "model_not_allowed"


def test_plain_gateway_api_keys_keep_working_without_limits(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, _ = replicas
    answer = chat(a.url, CLIENT_KEY, f"plain {time.time()}")
    assert answer.status_code == 200 and "x-ratelimit-limit-requests" not in answer.headers
    anthropic_style = httpx.post(f"{a.url}/v1/chat/completions", headers={"x-api-key": CLIENT_KEY},
                                 json={"model": "gpt-4.1",
                                       "messages": [{"role": "user", "content": "x-api-key"}]})
    assert anthropic_style.status_code == 200


def test_each_item_of_a_batch_counts_against_the_key(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, _ = replicas
    key = create_key(a.url, rpm=2)["key"]
    answer = httpx.post(f"{a.url}/batch", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                        json={"requests": [{"messages": [{"role": "user", "content": f"b{i}"}]}
                                           for i in range(3)]})
    assert answer.status_code == 200
    statuses = sorted(r["status"] for r in answer.json()["results"])
    assert statuses == [200, 200, 429]


def test_limits_fail_open_while_redis_is_away_and_apply_again_when_it_returns(
        fake: FakeProvider, log_dir: Path) -> None:
    import redis as redis_sync

    own = RedisServer(log_dir)
    server = GatewayServer(log_dir, fake.base_url, env=gateway_env(own))
    try:
        key = create_key(server.url, rpm=2)["key"]
        assert [chat(server.url, key, f"up {i} {time.time()}").status_code
                for i in range(3)] == [200, 200, 429]
        with redis_sync.Redis.from_url(own.url) as control:
            control.client_pause(3000)  # every other client's command now times out
        down = [chat(server.url, key, f"down {i} {time.time()}") for i in range(3)]
        # The key was seen before, so it still authenticates; the limit cannot be checked.
        assert [r.status_code for r in down] == [200, 200, 200]
        assert "x-ratelimit-limit-requests" not in down[0].headers
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'gateway_limits_unavailable_total{decision="fail_open"} 3.0' in metrics
        assert server.process.log().count("limits: the store is unreachable") == 1
        deadline = time.monotonic() + 15
        while (answer := chat(server.url, key, f"back {time.time()}")).status_code == 200:
            assert time.monotonic() < deadline, "limits never came back"
            time.sleep(0.2)
        # Back: the window still holds the two requests counted before the outage.
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limit_exceeded"
        assert "limits: the store is reachable again" in server.process.log()
    finally:
        server.stop()
        own.stop()


def test_an_upstream_error_after_admission_still_carries_the_rate_headers(
        replicas: tuple[GatewayServer, GatewayServer], fake: FakeProvider) -> None:
    a, _ = replicas
    key = create_key(a.url, rpm=5)["key"]
    fake.fault(model="gemini-2.5-flash", kind="status", status=400, message="bad")
    answer = chat(a.url, key, f"fails {time.time()}", model="gemini-2.5-flash")
    assert answer.status_code == 400
    assert answer.headers["x-ratelimit-remaining-requests"] == "4"


def create_team(base: str, **spec: Any) -> dict[str, Any]:
    response = httpx.post(f"{base}/admin/teams", json=spec, headers=ADMIN_AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_team_budget_stops_all_its_keys_on_every_replica_when_the_team_crosses_it(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    """Three keys of one team, spread over two replicas: the team's $0.01 monthly budget stops
    them together exactly when the team's spend crosses it; one key's own tighter budget stops
    that key first; another team's key is untouched."""
    a, b = replicas
    stamp = f"{time.time():.6f}"
    team, other = f"growth-{stamp}", f"search-{stamp}"
    create_team(a.url, name=team, budget_monthly_usd="0.01")
    create_team(b.url, name=other, budget_monthly_usd="0.01")
    keys = [create_key(a.url, team=team)["key"], create_key(b.url, team=team)["key"],
            create_key(a.url, team=team, budget_daily_usd="0.002")["key"]]
    outsider = create_key(a.url, team=other)["key"]
    time.sleep(0.5)  # a team made on one replica holds on the others within 0.25 s
    costs: list[Decimal] = []
    tight_stopped = False
    live = list(keys)
    for i in range(100):
        key = live[i % len(live)]
        answer = chat((a, b)[i % 2].url, key, f"team spend {i} {stamp}")
        if answer.status_code == 200:
            costs.append(Decimal(answer.headers["x-gateway-cost-usd"]))
            continue
        error = answer.json()["error"]
        assert answer.status_code == 429 and error["code"] == "insufficient_quota", answer.text
        if key == keys[2] and "key 'team-key'" in error["message"]:
            assert not tight_stopped and sum(costs) < Decimal("0.01")
            assert "daily budget of $0.002000" in error["message"]
            tight_stopped = True
            live.remove(key)
            continue
        assert f"team '{team}'" in error["message"], error["message"]
        assert "monthly budget of $0.010000" in error["message"]
        break
    else:
        pytest.fail("the team's budget never stopped its keys")
    assert tight_stopped
    assert sum(costs[:-1]) < Decimal("0.01") <= sum(costs)  # the last one served crossed it
    for key in keys:
        for replica in (a, b):
            refused = chat(replica.url, key, f"after {stamp}")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "insufficient_quota"
    for replica in (a, b):
        assert chat(replica.url, outsider, f"other team {stamp}").status_code == 200
    time.sleep(0.3)  # the ledger's writes are batched every 0.1 s
    usage = httpx.get(f"{a.url}/admin/usage", params={"group_by": "team", "team": team},
                      headers=ADMIN_AUTH, timeout=10).json()["data"]
    assert Decimal(usage[0]["cost_usd"]) == sum(costs)


def test_a_team_rpm_and_its_models_hold_for_all_its_keys(
        replicas: tuple[GatewayServer, GatewayServer]) -> None:
    a, b = replicas
    stamp = f"{time.time():.6f}"
    team = f"ops-{stamp}"
    create_team(a.url, name=team, rpm=6, models=["gpt-*"])
    keys = [create_key(a.url, team=team)["key"], create_key(b.url, team=team, rpm=2)["key"]]
    time.sleep(0.5)  # a team made on one replica holds on the others within 0.25 s
    statuses = [chat((a, b)[i % 2].url, keys[i % 2], f"rpm {i} {stamp}").status_code
                for i in range(4)]
    assert statuses == [200, 200, 200, 200]
    third = chat(b.url, keys[1], f"own rpm {stamp}")  # the key's own 2 a minute, tighter
    assert third.status_code == 429 and "key 'team-key'" in third.json()["error"]["message"]
    assert [chat(a.url, keys[0], f"more {i} {stamp}").status_code for i in range(3)] == \
        [200, 200, 429]
    wrong = chat(a.url, keys[0], f"model {stamp}", model="deepseek-v3.2")
    assert wrong.status_code in (400, 403) and f"Team '{team}'" in wrong.json()["error"]["message"]
