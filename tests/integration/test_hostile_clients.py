"""Careless and hostile clients cannot take the gateway from everyone else.

Through the real ``bentoml serve`` in front of the real fake provider, with raw sockets where an
HTTP client would not misbehave enough: slow bodies, clients that leave at every stage, streams
nobody reads, and protocol abuse. Each test also reads the gateway's log for what it wrote while
the test ran: no traceback, no ERROR line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
STALL_TIMEOUT_S = 2.0
CHAT = orjson.dumps({"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def provider(log_dir: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(log_dir)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(provider: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(log_dir, provider.base_url, env={
        "GATEWAY_BODY_TIMEOUT": str(BODY_TIMEOUT_S),
        "GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
        "GATEWAY_STREAM_IDLE_TIMEOUT": str(STALL_TIMEOUT_S),
        "GATEWAY_TIMEOUT": "30",
    })
    yield server
    server.stop()


class Log:
    """The part of the gateway's log written since the test began."""

    def __init__(self, gateway: GatewayServer) -> None:
        self.gateway = gateway
        self.start = len(gateway.process.log())

    def text(self) -> str:
        return self.gateway.process.log()[self.start:]

    def assert_clean(self) -> None:
        text = self.text()
        assert "Traceback" not in text, text[-3000:]
        assert "Exception in ASGI application" not in text, text[-3000:]
        assert "[ERROR]" not in text, text[-3000:]
        assert "returned without" not in text, text[-3000:]


@pytest.fixture
def log(gateway: GatewayServer, provider: FakeProvider) -> Iterator[Log]:
    provider.reset()
    watched = Log(gateway)
    yield watched
    watched.assert_clean()


def head(path: str = "/v1/chat/completions", length: int | None = len(CHAT),
         extra: bytes = b"", method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: gateway",
             f"Authorization: Bearer {CLIENT_KEY}".encode(), b"Content-Type: application/json"]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


async def connect(gateway: GatewayServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.port)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``timeout``, and whether it then closed."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
        return data, True
    except TimeoutError:
        return data, False
    except ConnectionError:
        return data, True


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def scrape(gateway: GatewayServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{gateway.url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(gateway: GatewayServer, name: str, **labels: str) -> float:
    return scrape(gateway).get((name, tuple(sorted(labels.items()))), 0.0)


def poll(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def worker_rss_mb(gateway: GatewayServer) -> float:
    root = psutil.Process(gateway.process.proc.pid)
    workers = [p for p in root.children(recursive=True)
               if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    assert len(workers) == 1, [p.cmdline() for p in workers]
    return float(workers[0].memory_info().rss) / 2**20


def normal_request(gateway: GatewayServer, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{gateway.v1}/chat/completions", content=CHAT, timeout=timeout,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}",
                               "Content-Type": "application/json"})


# --- slow bodies ---------------------------------------------------------------------------------

def test_slow_bodies_hold_no_admission_slot_and_get_408_after_the_body_timeout(
        gateway: GatewayServer, log: Log) -> None:
    refused_before = metric(gateway, "gateway_intake_refusals_total", reason="body_timeout")

    async def scenario() -> tuple[float, int, list[tuple[bytes, bool]], float]:
        slow = [await connect(gateway) for _ in range(200)]
        for _, writer in slow:  # headers and a few bytes of the body, then a byte at a time
            writer.write(head() + CHAT[:5])
        started = time.monotonic()

        async def trickle() -> None:
            for i in range(5, 5 + 8):
                await asyncio.sleep(0.5)
                for _, writer in slow:
                    writer.write(CHAT[i:i + 1])

        trickling = asyncio.ensure_future(trickle())
        await asyncio.sleep(0.3)  # every slow connection is in, reading its body
        sent = time.monotonic()
        answer = await asyncio.to_thread(normal_request, gateway)
        took = time.monotonic() - sent
        results = await asyncio.gather(*(read_until_closed(r, BODY_TIMEOUT_S + 5)
                                         for r, _ in slow))
        waited = time.monotonic() - started
        trickling.cancel()
        for _, writer in slow:
            writer.close()
        return took, answer.status_code, results, waited

    took, status, results, waited = asyncio.run(scenario())
    assert status == 200
    assert took < 1.0, f"a well-behaved request took {took:.2f} s"
    for data, closed in results:
        assert statuses(data) == [408], data[:200]
        assert b'"code":"request_body_timeout"' in data
        assert closed
    assert BODY_TIMEOUT_S <= waited < BODY_TIMEOUT_S + 3
    poll(lambda: metric(gateway, "gateway_intake_refusals_total",
                        reason="body_timeout") - refused_before == 200)


# --- clients that leave --------------------------------------------------------------------------

def stream_body(model: str) -> bytes:
    return orjson.dumps({"model": model, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})


def chat_body(model: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_clients_leaving_mid_body_mid_wait_and_mid_stream_are_counted_not_errors(
        gateway: GatewayServer, provider: FakeProvider, log: Log) -> None:
    before = {reason: metric(gateway, "gateway_client_disconnects_total", reason=reason)
              for reason in ("body", "waiting", "streaming")}
    provider.fault(model="gpt-4.1", kind="hang")
    provider.fault(model="gemini-2.5-flash", kind="trickle", delay_ms=300)

    async def leave_mid_body() -> None:
        connections = [await connect(gateway) for _ in range(50)]
        for _, writer in connections:
            writer.write(head() + CHAT[:10])
            await writer.drain()
        await asyncio.sleep(0.3)
        for _, writer in connections:
            writer.close()

    async def leave_while_waiting() -> None:
        body = chat_body("gpt-4.1")
        connections = [await connect(gateway) for _ in range(50)]
        for _, writer in connections:
            writer.write(head(length=len(body)) + body)
        deadline = time.monotonic() + 15
        while provider.stats()["in_flight"] < 50:  # every request is upstream, waiting
            assert time.monotonic() < deadline, provider.stats()
            await asyncio.sleep(0.05)
        for _, writer in connections:
            writer.close()

    async def leave_mid_stream() -> None:
        body = stream_body("gemini-2.5-flash")
        connections = [await connect(gateway) for _ in range(50)]
        for _, writer in connections:
            writer.write(head(length=len(body)) + body)
        for reader, _ in connections:  # the first event has arrived: the stream is running
            async with asyncio.timeout(15):
                while b"data: " not in await reader.read(65536):
                    pass
        for _, writer in connections:
            writer.close()

    asyncio.run(leave_mid_body())
    poll(lambda: metric(gateway, "gateway_client_disconnects_total", reason="body")
         - before["body"] == 50)
    asyncio.run(leave_while_waiting())
    poll(lambda: provider.stats()["cancelled"] == 50 and provider.stats()["in_flight"] == 0)
    asyncio.run(leave_mid_stream())
    poll(lambda: provider.stats()["cancelled"] == 100 and provider.stats()["in_flight"] == 0)
    def counted() -> dict[str, float]:
        return {reason: metric(gateway, "gateway_client_disconnects_total", reason=reason)
                - before[reason] for reason in before}

    try:
        poll(lambda: counted() == {"body": 50, "waiting": 50, "streaming": 50})
    finally:
        print(counted())
    assert provider.stats()["requests"] == {"gpt-4.1": 50, "gemini-2.5-flash": 50}
    assert normal_request(gateway).status_code == 200  # every admission slot came back


# --- streams nobody reads ------------------------------------------------------------------------

def stall(gateway: GatewayServer, count: int, body: bytes) -> float:
    """Open ``count`` streams whose clients read nothing; the worker's peak RSS until every one
    of them has been dropped."""
    before = metric(gateway, "gateway_client_disconnects_total", reason="stalled")
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(head(length=len(body)) + body)
        sockets.append(sock)
    peak = 0.0
    deadline = time.monotonic() + STALL_TIMEOUT_S + 15
    try:
        while metric(gateway, "gateway_client_disconnects_total",
                     reason="stalled") - before < count:
            assert time.monotonic() < deadline, "stalled readers were not dropped"
            peak = max(peak, worker_rss_mb(gateway))
            time.sleep(0.1)
        for sock in sockets:  # dropped: the gateway closed the connection
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(1 << 20):
                    pass
    finally:
        for sock in sockets:
            sock.close()
    return peak


def test_streaming_clients_that_never_read_hold_bounded_memory_and_are_dropped(
        gateway: GatewayServer, provider: FakeProvider, log: Log) -> None:
    # A 4 MB answer in 4,000 chunks for each of 20 clients that read nothing at all.
    provider.configure(content_chars=4_000_000, chunks=4_000)
    body = stream_body("deepseek-v3.2")

    async def read_twenty() -> None:  # what 20 such streams cost when their clients do read
        async with httpx.AsyncClient(timeout=60) as http:
            async def one() -> None:
                async with http.stream("POST", f"{gateway.v1}/chat/completions", content=body,
                                       headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as r:
                    async for _ in r.aiter_raw():
                        pass
            await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(read_twenty())
    baseline = worker_rss_mb(gateway)
    peaks = [stall(gateway, 20, body) for _ in range(3)]
    poll(lambda: provider.stats()["in_flight"] == 0)
    print(f"worker RSS: {baseline:.1f} MB after 20 read streams; peaks with 20 stalled, three "
          f"times over: {', '.join(f'{p:.1f}' for p in peaks)} MB")
    assert max(peaks) - baseline < 35, (baseline, peaks)
    assert abs(peaks[2] - peaks[1]) < 8, peaks  # a plateau: the memory is reused, nothing piles up
    assert normal_request(gateway).status_code == 200


# --- protocol abuse ------------------------------------------------------------------------------

ABUSE: dict[str, tuple[bytes, list[int], bool]] = {
    # name: (bytes sent, statuses expected in order, whether the server must close)
    "oversized header": (head(extra=b"X-Big: " + b"a" * 100_000 + b"\r\n") + CHAT, [431], True),
    "too many headers": (head(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(300))) + CHAT,
                         [431], True),
    "invalid chunked encoding": (head(length=None, extra=b"Transfer-Encoding: chunked\r\n")
                                 + b"zz\r\nnot hex\r\n0\r\n\r\n", [400], True),
    "content-length and chunked": (head(extra=b"Transfer-Encoding: chunked\r\n") + CHAT,
                                   [400], True),
    "content-length not a number": (head(length=None, extra=b"Content-Length: ten\r\n") + CHAT,
                                    [400], True),
    "content-length shorter than the body": (head(length=20) + CHAT, [400], True),
    "content-length longer than the body": (head(length=len(CHAT) + 50) + CHAT, [408], True),
    "pipelined requests": ((head() + CHAT) * 3, [200, 200, 200], False),
    "a body on a GET": (head("/v1/models", length=5, method="GET") + b"hello", [400], True),
    "non-UTF-8 JSON": (head(length=len(b'{"model": "\xff\xfe"}')) + b'{"model": "\xff\xfe"}',
                       [400], False),
    "headers that never end": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n",
                               [408], True),
    "nothing at all": (b"", [408], True),
}


@pytest.mark.parametrize("case", list(ABUSE))
def test_protocol_abuse_gets_a_4xx_or_a_closed_connection(
        gateway: GatewayServer, log: Log, case: str) -> None:
    sent, expected, must_close = ABUSE[case]

    async def exchange() -> tuple[bytes, bool]:
        reader, writer = await connect(gateway)
        writer.write(sent)
        try:
            return await read_until_closed(reader, max(BODY_TIMEOUT_S, HEADER_TIMEOUT_S) + 3)
        finally:
            writer.close()

    data, closed = asyncio.run(exchange())
    assert statuses(data) == expected, data[-400:]
    if must_close:
        assert closed
    assert b"Traceback" not in data
    assert normal_request(gateway).status_code == 200
