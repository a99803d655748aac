"""Teams as records: declared in the key file or made through the admin API, their budget held
for all of their keys together (in process here; across replicas in the integration tests),
alerts sent to the team's own webhook, and the dashboard's team budget bar."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.dashboard.data import LedgerView, budgets
from gateway.tenants.keys import KeyFileError, hash_secret, load_key_file
from gateway.tenants.teams import load_team_file

from .inprocess import in_process

ADMIN = "admin-teams"
AUTH = {"authorization": f"Bearer {ADMIN}"}


def test_the_key_file_declares_teams_beside_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"""
teams:
  growth:
    budget_monthly_usd: "25.00"
    rpm: 600
    models: ["gpt-*"]
    alert_webhooks: ["slack:https://hooks.slack.example/T1"]
keys:
  - name: growth-web
    team: growth
    key_sha256: {hash_secret("gk-file-secret")}
""")
    [key] = load_key_file(path)
    [team] = load_team_file(path)
    assert key.team == "growth" and team.name == "growth" and team.source == "file"
    assert team.rpm == 600 and str(team.budget_monthly_usd) == "25.00"
    assert team.allows("gpt-4.1") and not team.allows("deepseek-v3.2")
    path.write_text("teams:\n  growth:\n    budget_daily_usd: '0.0000001'\n")
    with pytest.raises(KeyFileError, match=r"teams.growth: budget_daily_usd: .*6 decimals"):
        load_team_file(path)
    assert load_key_file(path) == []


async def test_a_team_budget_holds_for_all_its_keys_and_alerts_the_teams_webhook(
        tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/team", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with in_process(GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_CACHE="false",
                              GATEWAY_KEYS_DB=str(tmp_path / "t.db"),
                              GATEWAY_ACCESS_LOG="false") as gw:
            made = await gw.http.post("/admin/teams", headers=AUTH, json={
                "name": "growth", "budget_daily_usd": "0.002",
                "alert_webhooks": [f"http://127.0.0.1:{port}/team"]})
            assert made.status_code == 201, made.text
            again = await gw.http.post("/admin/teams", headers=AUTH, json={"name": "growth"})
            assert again.status_code == 400
            keys = []
            for name in ("web", "batch"):
                key = await gw.http.post("/admin/keys", headers=AUTH,
                                         json={"name": name, "team": "growth"})
                keys.append({"authorization": f"Bearer {key.json()['key']}"})
            loner = await gw.http.post("/admin/keys", headers=AUTH, json={"name": "loner"})
            statuses, costs = [], []
            for i in range(6):  # $0.000864 a request: the team's third crosses $0.002
                answer = await gw.http.post("/v1/chat/completions", headers=keys[i % 2], json={
                    "model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello, how?"}]})
                statuses.append(answer.status_code)
                costs.append(Decimal(answer.headers.get("x-gateway-cost-usd", "0")))
            assert statuses == [200, 200, 200, 429, 429, 429]
            assert "team 'growth'" in answer.json()["error"]["message"]
            free = await gw.http.post("/v1/chat/completions",
                                      headers={"authorization": f"Bearer {loner.json()['key']}"},
                                      json={"model": "gpt-4.1",
                                            "messages": [{"role": "user", "content": "Hi"}]})
            assert free.status_code == 200

            # raised through the admin API: the keys work again at once
            patched = await gw.http.patch("/admin/teams/growth", headers=AUTH,
                                          json={"budget_daily_usd": "1.00"})
            assert patched.json()["budget_daily_usd"] == "1.00"
            answer = await gw.http.post("/v1/chat/completions", headers=keys[0], json={
                "model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello, how?"}]})
            assert answer.status_code == 200
            costs.append(Decimal(answer.headers["x-gateway-cost-usd"]))

            await gw.gateway.tenants.alerts.drain()
            assert [(a["type"], a["scope"], a["team"], a["key"]) for a in received] == [
                ("budget.soft_threshold", "team", "growth", None),
                ("budget.refused", "team", "growth", None)]

            await gw.gateway.tenants.ledger.buffer.flush()
            bars = await budgets(LedgerView(gw.gateway.tenants.admin), gw.gateway.tenants.admin,
                                 datetime.now(UTC).date())
            [bar] = [b for b in bars["data"] if b["scope"] == "team"]
            assert bar["team"] == "growth" and Decimal(bar["budget_usd"]) == 1
            assert Decimal(bar["spent_usd"]) == sum(costs) > 0  # four answers, both keys

            listed = await gw.http.get("/admin/teams", headers=AUTH)
            assert [t["name"] for t in listed.json()["data"]] == ["growth"]
            assert (await gw.http.delete("/admin/teams/growth", headers=AUTH)).status_code == 200
            assert (await gw.http.get("/admin/teams/growth", headers=AUTH)).status_code == 404
    finally:
        await runner.cleanup()
