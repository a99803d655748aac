"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
a real ``bentoml serve`` with traffic from the ``openai`` SDK and httpx: login, charts, the
ledger's totals on the page, escaping, the session cookie, and screenshots (into a temporary
folder: tests never rewrite tracked files)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright import sync_api as playwright_api

from loadtest.harness import ROOT, FakeProvider, GatewayServer

ADMIN = "gw-admin-DASHBOARD-SECRET-91"
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_TEAM = "<img src=x onerror=window.__xss=1>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
API = ("session", "spend", "traffic", "cache", "budgets", "health", "requests")
SCRIPT = ROOT / "gateway" / "dashboard" / "static" / "dashboard.js"

# scripts/setup.sh installs it; only a hand-made environment may lack it, never CI.
pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium (scripts/setup.sh installs it)")


def usd(amount: Decimal) -> str:
    """The page's dollar format (dashboard.js ``usd``), for amounts under a cent: exact."""
    assert amount < Decimal("0.01"), "the test's traffic stays under a cent"
    return "$0.00" if amount == 0 else "$" + f"{amount:.6f}".rstrip("0")


@pytest.fixture(scope="module")
def server(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    gateway = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_CACHE": "true", "GATEWAY_BREAKER_FAILURES": "1000",
        "GATEWAY_BREAKER_MIN_CALLS": "1000"})
    yield gateway
    gateway.stop()


def admin_post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}{path}", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text
    return dict(response.json())


def ledger(base: str) -> dict[str, Decimal]:
    today = datetime.now(UTC).date()
    response = httpx.get(f"{base}/admin/usage", timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN}"},
                         params={"from": (today - timedelta(days=29)).isoformat(),
                                 "to": today.isoformat(), "group_by": "day"})
    response.raise_for_status()
    rows = response.json()["data"]
    return {"requests": Decimal(sum(r["requests"] for r in rows)),
            "cost": sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))}


@pytest.fixture(scope="module")
def traffic(server: GatewayServer, fake: FakeProvider) -> dict[str, Any]:
    """Several keys and models, an exact cache hit, a fallback, an upstream error and a budget
    refusal; returns the keys and how many requests the ledger must hold."""
    alice = admin_post(server.url, "/admin/keys", {"name": "alice", "team": "research",
                                                   "budget_monthly_usd": "0.02"})
    bob = admin_post(server.url, "/admin/keys", {"name": "bob", "team": "platform",
                                                 "budget_daily_usd": "0.0012"})
    xss = admin_post(server.url, "/admin/keys", {"name": XSS_NAME, "team": XSS_TEAM,
                                                 "budget_daily_usd": "0.00005"})
    admitted = 0
    for key, model, text in ((alice, "gpt-4.1", "hello"), (alice, "gpt-4.1", "hello"),
                             (alice, "deepseek-v3.2", "one"), (alice, "gemini-2.5-flash", "two"),
                             (bob, "deepseek-v3.2", "three"), (bob, "gpt-4.1", "four"),
                             (xss, "gpt-4.1", "five")):
        client = openai.OpenAI(base_url=server.v1, api_key=key["key"], max_retries=0)
        reply = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}])
        assert reply.http_response.status_code == 200
        admitted += 1
    hit = httpx.post(f"{server.v1}/chat/completions", timeout=30,
                     headers={"Authorization": f"Bearer {alice['key']}"},
                     json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello"}]})
    assert hit.headers["x-gateway-cache"] == "hit"
    admitted += 1
    fake.fault(model="deepseek-v3.2", kind="status", status=503)
    fell = httpx.post(f"{server.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {bob['key']}"},
                      json={"model": "deepseek-v3.2",
                            "messages": [{"role": "user", "content": "fall back"}]})
    assert fell.status_code == 200 and fell.headers["x-gateway-model"] == "gemini-2.5-flash"
    admitted += 1
    fake.reset()
    fake.fault(model="gpt-4.1", kind="status", status=500)
    failed = httpx.post(f"{server.v1}/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {bob['key']}"},
                        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    assert failed.status_code >= 500
    admitted += 1
    fake.reset()
    refused = httpx.post(f"{server.v1}/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {xss['key']}"},
                         json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "y"}]})
    assert refused.status_code == 429  # its daily budget is spent: never admitted, not billed
    deadline = time.monotonic() + 10
    while ledger(server.url)["requests"] != admitted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ledger(server.url)["requests"] == admitted
    return {"keys": [alice, bob, xss], "admitted": admitted}


def test_data_endpoints_answer_401_without_a_session(server: GatewayServer) -> None:
    forged = {"gw_dashboard": f"abc.{int(time.time()) + 3600}.forgedmac"}
    for name in API:
        for cookies in (None, forged):
            response = httpx.get(f"{server.url}/dashboard/api/{name}", cookies=cookies)
            assert response.status_code == 401, name
            assert response.json()["error"]["code"] == "invalid_api_key"
    # The admin key as a bearer header is not a session either: the page holds no key.
    response = httpx.get(f"{server.url}/dashboard/api/spend",
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 401


def test_a_wrong_admin_key_is_refused(server: GatewayServer) -> None:
    response = httpx.post(f"{server.url}/dashboard/login", data={"admin_key": "not-the-key"},
                          headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    plain = httpx.post(f"{server.url}/dashboard/login", data={"admin_key": "not-the-key"})
    assert plain.status_code == 303 and plain.headers["location"] == "/dashboard?login=failed"
    assert "set-cookie" not in plain.headers


def test_the_page_is_served_with_a_strict_policy(server: GatewayServer) -> None:
    response = httpx.get(f"{server.url}/dashboard")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in response.text and "style=" not in response.text
    assert httpx.get(f"{server.url}/dashboard/").headers["location"] == "/dashboard"
    assert httpx.get(f"{server.url}/dashboard/static/dashboard.js").status_code == 200
    assert httpx.get(f"{server.url}/dashboard/static/data.py").status_code == 404  # allowlist


def browser_context(pw: Any, **options: Any) -> Any:
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    return browser, browser.new_context(**options)


def test_a_gateway_without_traffic_says_what_to_do(server: GatewayServer) -> None:
    """Runs before the module's traffic: every panel shows its empty state."""
    login = httpx.post(f"{server.url}/dashboard/login", data={"admin_key": ADMIN},
                       headers={"Accept": "application/json"})
    assert login.status_code == 200
    assert httpx.get(f"{server.url}/dashboard/api/traffic",
                     cookies=login.cookies).json()["hour"]["requests"] == 0
    with playwright_api.sync_playwright() as pw:
        browser, context = browser_context(pw, viewport={"width": 1280, "height": 800})
        context.add_cookies([{"name": "gw_dashboard", "value": login.cookies["gw_dashboard"],
                              "url": f"{server.url}/dashboard"}])
        page = context.new_page()
        page.goto(f"{server.url}/dashboard")
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        for panel in ("spend", "traffic", "latency", "cache", "requests", "budgets"):
            assert page.is_visible(f"#{panel}-empty"), panel
        assert "send a request to /v1/chat/completions" in page.inner_text("#traffic-empty")
        assert page.text_content("#total-cost") == "$0.00"
        assert page.is_visible("#health-table")  # the catalog's models, all closed
        assert page.locator("#health-table .pill.closed").count() >= 1
        browser.close()


def test_the_dashboard_shows_the_ledger_escapes_names_and_logs_out(
        server: GatewayServer, traffic: dict[str, Any], tmp_path: Path) -> None:
    secrets = [ADMIN] + [k["key"] for k in traffic["keys"]]
    total = ledger(server.url)
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as pw:
        browser, context = browser_context(pw, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        bodies: list[str] = []
        page.on("response", lambda r: bodies.append(r.text())
                if "/dashboard/api/" in r.url and r.status == 200 else None)
        page.goto(f"{server.url}/dashboard")
        page.wait_for_selector("#login-form", state="visible")
        page.fill("#admin-key", "wrong-key")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error", state="visible")
        assert page.is_hidden("#dashboard")
        assert "not the admin key" in page.text_content("#login-error")

        page.fill("#admin-key", ADMIN)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        page.wait_for_selector("#spend-chart svg rect")
        page.wait_for_selector("#traffic-chart svg rect")
        assert page.url.endswith("/dashboard")  # the key never went into a URL
        cookie = next(c for c in context.cookies() if c["name"] == "gw_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/dashboard" and ADMIN not in cookie["value"]

        # The totals shown are the ledger's.
        assert page.text_content("#total-cost") == usd(total["cost"])
        assert page.text_content("#total-requests") == f"{int(total['requests']):,}"
        # Two sources, each named: the ledger's totals (admitted requests, all workers) and the
        # last hour of this worker's traffic, which also counts the refused request.
        tiles = page.inner_text("section.tiles")
        assert "ledger" in page.inner_text("#totals-source")
        assert "refused" in page.inner_text("#totals-source")
        assert "Requests in the ledger" in tiles and "Errors in the ledger" in tiles
        hour = page.inner_text("#traffic-card .stats")
        assert "last hour, this worker" in hour.lower()
        assert int(page.text_content("#hour-requests") or "0") > traffic["admitted"]
        # The key named like markup is text in the legend, the budgets and the requests table.
        page.click(".toggle button[data-dim=by_key]")
        assert XSS_NAME in page.locator("#spend-legend").inner_text()
        assert page.locator("#budgets-table td.name", has_text=XSS_NAME).count() == 1
        assert page.locator("#requests-table td.key", has_text=XSS_NAME).count() >= 1
        page.click(".toggle button[data-dim=by_team]")
        assert XSS_TEAM in page.locator("#spend-legend").inner_text()
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("window.__xss") is None and dialogs == []
        # Budgets: the spent one first; health: the fallback and the error are shown.
        first_budget = page.locator("#budgets-table tbody tr").first
        assert XSS_NAME in first_budget.inner_text() and "alert" in (
            first_budget.get_attribute("class") or "")
        deepseek = page.locator("#health-table tbody tr", has_text="deepseek-v3.2").first
        assert "1 → gemini-2.5-flash ×1" in deepseek.inner_text()
        gpt = page.locator("#health-table tbody tr", has_text="gpt-4.1").first
        assert "5" in gpt.locator("td").nth(4).inner_text()
        assert page.text_content("#cache-exact") not in ("0%", "–")
        assert page.locator("#requests-table tbody tr").count() == traffic["admitted"] + 1
        page.click(".toggle button[data-dim=by_model]")
        page.screenshot(path=str(tmp_path / "dashboard-desktop.png"), full_page=True)

        phone = browser.new_context(viewport={"width": 390, "height": 844},
                                    color_scheme="dark")
        phone.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path",
                                                   "httpOnly", "sameSite")}])
        small = phone.new_page()
        small.goto(f"{server.url}/dashboard")
        small.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        small.wait_for_selector("#spend-chart svg rect")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
        small.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
        phone.close()

        for text in [page.content(), *bodies]:
            for secret in secrets:
                assert secret not in text
            assert "key_sha256" not in text

        # Logout: the same cookie no longer opens the data.
        page.click("#logout-form button[type=submit]")
        page.wait_for_selector("#login-form", state="visible")
        stale = httpx.get(f"{server.url}/dashboard/api/spend",
                          cookies={"gw_dashboard": cookie["value"]})
        assert stale.status_code == 401
        browser.close()


@pytest.mark.parametrize("counts", [[1], [2], [3], [2, 6], [7], [13], [0, 250]])
def test_the_requests_axis_labels_sit_on_their_gridlines(counts: list[int]) -> None:
    """Each label of the requests-per-minute axis is the exact value of its gridline: whole
    requests, evenly spaced from 0, the top one at or above the busiest minute."""
    with playwright_api.sync_playwright() as pw:
        browser, context = browser_context(pw, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_content('<div id="host"></div>')
        page.add_script_tag(content=SCRIPT.read_text(encoding="utf-8"))
        labels = page.evaluate("""(counts) => {
            const host = document.getElementById("host");
            const minutes = counts.map((n, i) => ({t: 1700000000 + 60 * i, requests: n,
                                                   errors: 0, error_rate: 0}));
            trafficChart(host, minutes);
            return [...host.querySelectorAll("svg text[text-anchor=end]")]
                .map((t) => t.textContent);
        }""", counts)
        browser.close()
    assert len(labels) == 5
    values = [int(label.replace(",", "")) for label in labels]  # whole numbers, as shown
    step = values[1]
    assert step > 0 and values == [i * step for i in range(5)], labels
    assert values[-1] >= max(counts)


def as_ms(label: str) -> float:
    number, unit = label.split()
    return float(number) * (1000 if unit == "s" else 1)


@pytest.mark.parametrize("slowest_ms", [0.03, 0.6, 1.5, 3.2, 32, 170, 1200, 31_000])
def test_the_latency_axis_labels_sit_on_their_gridlines(slowest_ms: float) -> None:
    """Each label of the latency axis, as the page formats it, is its gridline's value."""
    with playwright_api.sync_playwright() as pw:
        browser, context = browser_context(pw, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_content('<div id="host"></div><ul id="latency-legend"></ul>')
        page.add_script_tag(content=SCRIPT.read_text(encoding="utf-8"))
        labels = page.evaluate("""(slowest) => {
            const host = document.getElementById("host");
            const minutes = [0, 1].map((i) => ({t: 1700000000 + 60 * i,
                added_p50_ms: slowest / 8, added_p99_ms: slowest / 2,
                upstream_p50_ms: slowest / 4, upstream_p99_ms: slowest}));
            latencyChart(host, minutes);
            return [...host.querySelectorAll("svg text[text-anchor=end]")]
                .map((t) => t.textContent);
        }""", slowest_ms)
        browser.close()
    values = [as_ms(label) for label in labels]
    assert len(values) == 5 and values[0] == 0
    step = values[1]
    assert all(abs(v - i * step) < 1e-9 for i, v in enumerate(values)), labels
    assert values[-1] >= slowest_ms
