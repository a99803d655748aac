"""What a newcomer meets first, against a real ``bentoml serve``: ``GET /`` describes the
gateway's own routes, and browser apps on allowed origins may call it (CORS, off by default),
proved in a real headless Chromium."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_api

from gateway.api.index import DESCRIPTIONS
from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PREFLIGHT = {"access-control-request-method": "POST",
             "access-control-request-headers": "authorization,content-type"}
CHAT = {"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "from a browser"}]}


class BrowserApp:
    """A page on its own origin (another loopback port) for the browser to run a web app on."""

    def __init__(self) -> None:
        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = b"<!doctype html><title>app</title><p>a web app</p>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def apps() -> Iterator[tuple[BrowserApp, BrowserApp]]:
    allowed, other = BrowserApp(), BrowserApp()
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture(scope="module")
def cors_gateway(fake: FakeProvider, log_dir: Path,
                 apps: tuple[BrowserApp, BrowserApp]) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url,
                           env={"GATEWAY_CORS_ORIGINS": f"{apps[0].origin},https://app.example"})
    yield server
    server.stop()


def test_the_front_page_lists_the_gateways_own_routes(gateway: GatewayServer) -> None:
    page = httpx.get(f"{gateway.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/health",
                 "/admin/keys", "/readyz", "/metrics"):
        assert f"<code>{path}</code>" in page.text, path
    assert "swagger" not in page.text.lower()
    listing = httpx.get(f"{gateway.url}/", headers={"Accept": "application/json"}).json()
    rows = {(row["method"], row["path"]): row["description"] for row in listing["data"]}
    assert rows[("POST", "/v1/chat/completions")] == DESCRIPTIONS["/v1/chat/completions"]
    assert ("PATCH", "/admin/keys/{key_id}") in rows and ("GET", "/v1/models") in rows
    assert not [key for key in rows if key[1].startswith("/dashboard/")]


def test_cors_is_off_by_default(gateway: GatewayServer) -> None:
    preflight = httpx.options(f"{gateway.url}/v1/chat/completions",
                              headers={"Origin": "https://app.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                        headers={"Origin": "https://app.example",
                                 "Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name.startswith("access-control-")]


def test_cors_answers_allowed_origins_only(cors_gateway: GatewayServer) -> None:
    url = f"{cors_gateway.url}/v1/chat/completions"
    allowed = httpx.options(url, headers={"Origin": "https://app.example", **PREFLIGHT})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = httpx.options(url, headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # An error answer carries the header too, so the app can read why it was refused.
    unauthorized = httpx.post(url, json=CHAT, headers={"Origin": "https://app.example"})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == "https://app.example"


FETCH = """async ([url, key]) => {
  try {
    const r = await fetch(url, {method: "POST", headers: {
      "Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify(%s)});
    const body = await r.json();
    return {status: r.status, cost: r.headers.get("x-gateway-cost-usd"),
            content: body.choices[0].message.content};
  } catch (e) { return {error: String(e)}; }
}"""


@pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                    reason="needs Debian's chromium (scripts/setup.sh installs it)")
def test_a_browser_app_on_an_allowed_origin_calls_the_gateway_and_others_cannot(
    cors_gateway: GatewayServer, apps: tuple[BrowserApp, BrowserApp],
) -> None:
    script = FETCH % json.dumps(CHAT)
    url = f"{cors_gateway.url}/v1/chat/completions"
    results = []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        for app in apps:
            page.goto(app.origin)
            results.append(page.evaluate(script, [url, CLIENT_KEY]))
        browser.close()
    allowed, other = results
    assert allowed.get("status") == 200, allowed
    assert allowed["content"].startswith("Fake answer to: from a browser")
    assert allowed["cost"] is not None and float(allowed["cost"]) > 0  # exposed to the app
    assert other == {"error": "TypeError: Failed to fetch"}  # the browser blocked it
