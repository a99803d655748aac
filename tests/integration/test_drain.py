"""Graceful shutdown through real ``bentoml serve``: on SIGTERM ``/readyz`` fails while
requests are still served, a stream in flight finishes, the ledger and the access log are
flushed, and the process exits; a stream that outlasts the grace period is cut then, and
still booked."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "drain"}]}


@pytest.fixture(scope="module")
def slow_fake(log_dir: Path) -> Iterator[FakeProvider]:
    provider = FakeProvider(log_dir, "--chunks", "20", "--chunk-delay-ms", "150")  # 3 s streams
    yield provider
    provider.stop()


def stream_in_thread(gateway: GatewayServer, started: threading.Event,
                     out: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            with httpx.stream("POST", f"{gateway.v1}/chat/completions", headers=AUTH,
                              json={**BODY, "stream": True}, timeout=30) as answer:
                out["status"] = answer.status_code
                lines = []
                for line in answer.iter_lines():
                    started.set()
                    lines.append(line)
                out["lines"] = lines
        except httpx.HTTPError as exc:
            out["error"] = exc
        started.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def ledger_requests(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COALESCE(SUM(requests), 0) FROM ledger").fetchone()[0])


def test_sigterm_drains_then_finishes_a_stream_and_flushes_the_ledger(
        slow_fake: FakeProvider, log_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "tenants.db"
    gateway = GatewayServer(log_dir, slow_fake.base_url, env={
        "GATEWAY_SHUTDOWN_DRAIN": "1.5", "GATEWAY_SHUTDOWN_GRACE": "20",
        "GATEWAY_KEYS_DB": str(db)})
    try:
        started, out = threading.Event(), {}
        thread = stream_in_thread(gateway, started, out)
        assert started.wait(10)
        sent_at = time.monotonic()
        os.kill(gateway.process.proc.pid, signal.SIGTERM)
        served = 0
        ready = []
        while time.monotonic() - sent_at < 1.2:  # inside the drain time: still served
            ready.append(httpx.get(f"{gateway.url}/readyz", timeout=5).status_code)
            answer = httpx.post(f"{gateway.v1}/chat/completions", headers=AUTH, timeout=10,
                                json=BODY)
            assert answer.status_code == 200
            served += 1
            time.sleep(0.1)
        assert set(ready) == {503} and served >= 3
        thread.join(30)
        assert "error" not in out, out.get("error")
        assert out["status"] == 200 and "data: [DONE]" in out["lines"]  # type: ignore[operator]
        assert gateway.process.proc.wait(30) == 0
        took = time.monotonic() - sent_at
        assert 1.5 <= took < 15, took
        assert ledger_requests(db) == served + 1  # flushed before the exit
        log = gateway.process.log()
        assert log.count('"route":"/v1/chat/completions"') == served + 1
    finally:
        gateway.stop()


def test_a_stream_that_outlasts_the_grace_period_is_cut_and_the_process_exits(
        slow_fake: FakeProvider, log_dir: Path, tmp_path: Path) -> None:
    gateway = GatewayServer(log_dir, slow_fake.base_url, env={
        "GATEWAY_SHUTDOWN_DRAIN": "0", "GATEWAY_SHUTDOWN_GRACE": "1",
        "GATEWAY_KEYS_DB": str(tmp_path / "tenants.db")})
    try:
        started, out = threading.Event(), {}
        thread = stream_in_thread(gateway, started, out)
        assert started.wait(10)
        sent_at = time.monotonic()
        os.kill(gateway.process.proc.pid, signal.SIGTERM)
        thread.join(30)
        assert gateway.process.proc.wait(30) == 0
        assert time.monotonic() - sent_at < 2.8  # the stream needed 3 s
        assert "error" in out or "data: [DONE]" not in out.get("lines", [])
        # The cut stream is still booked: in the ledger, and in the access log as a 499.
        assert ledger_requests(tmp_path / "tenants.db") == 1
        assert '"status":499' in gateway.process.log()
    finally:
        gateway.stop()
