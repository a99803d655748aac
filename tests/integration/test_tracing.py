"""Spans around upstream calls, exported through BentoML's Zipkin exporter to a collector the
test runs: one span per request, one client span per attempt, the caller's trace continued."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY, FakeProvider, GatewayServer, free_port

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector:
    """A Zipkin v2 endpoint on a free loopback port that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.raw.append(body)
                collector.spans.extend(json.loads(body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, name: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """Spans are exported in batches every few seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s["name"] == name]
            if len(found) >= count:
                return found
            time.sleep(0.2)
        pytest.fail(f"{count} {name!r} spans expected, got {len(found)}")


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def traced(fake: FakeProvider, log_dir: Path, collector: Collector) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, fake.base_url, env={
        "GATEWAY_TRACING_EXPORTER": "zipkin",
        "GATEWAY_TRACING_ENDPOINT": f"http://127.0.0.1:{collector.port}/api/v2/spans"})
    yield server
    server.stop()


def test_a_retried_request_is_one_trace_under_the_callers_span(
    traced: GatewayServer, fake: FakeProvider, collector: Collector
) -> None:
    fake.fault(model="deepseek-v3.2", kind="status", status=503, times=1)
    answer = httpx.post(
        traced.v1 + "/chat/completions",
        json={"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "trace me"}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}",
                 "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert answer.status_code == 200

    request = next(s for s in collector.wait_for("gateway chat", 1)
                   if s["traceId"] == CALLER_TRACE)
    assert request["parentId"] == CALLER_SPAN
    assert request["tags"]["gateway.requested_model"] == "deepseek-v3.2"
    assert request["tags"]["gateway.attempts"] == "2"
    attempts = sorted((s for s in collector.wait_for("upstream chat", 2)
                       if s["traceId"] == CALLER_TRACE), key=lambda s: s["tags"]["gateway.attempt"])
    assert [s["parentId"] for s in attempts] == [request["id"]] * 2
    assert [s["kind"] for s in attempts] == ["CLIENT"] * 2
    assert attempts[0]["tags"]["http.response.status_code"] == "503"
    assert attempts[0]["tags"]["otel.status_code"] == "ERROR"
    assert "gateway.failure" not in attempts[1]["tags"]
    # The upstream was told which attempt called it, so its own spans can join the trace.
    assert fake.stats()["last_traceparent"] == f"00-{CALLER_TRACE}-{attempts[1]['id']}-01"


def test_spans_never_carry_a_key(traced: GatewayServer, collector: Collector) -> None:
    httpx.post(traced.v1 + "/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
               json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
    collector.wait_for("upstream chat", 1)
    exported = b"".join(collector.raw)
    assert UPSTREAM_KEY.encode() not in exported and CLIENT_KEY.encode() not in exported
