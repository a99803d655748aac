"""The http1 transport against real loopback servers that answer, stall, drop and lie on cue."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from gateway.upstream import http1
from gateway.upstream.failures import FailureKind, UpstreamFailure
from gateway.upstream.http1 import Http1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


class Upstream:
    """A loopback server: ``handler`` runs once per connection; requests are recorded."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@asynccontextmanager
async def upstream(handler: Callable[[Upstream, asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]],
                   tls: ssl.SSLContext | None = None, **pool: object) -> AsyncIterator[
                       tuple[Upstream, Http1Pool]]:
    up = Upstream(lambda r, w: handler(up, r, w))
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    host = "localhost" if tls else "127.0.0.1"
    options = {"max_connections": 10, "connect_timeout_s": 2.0} | pool
    client = Http1Pool(f"{'https' if tls else 'http'}://{host}:{port}/v1",
                       {"authorization": "Bearer sk-up", "content-type": "application/json"},
                       **options)  # type: ignore[arg-type]
    try:
        yield up, client
    finally:
        await client.aclose()
        server.close()


async def answer_each(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    while True:
        await up.read_request(reader)
        writer.write(OK)
        await writer.drain()


async def test_answers_and_keeps_the_connection_alive() -> None:
    async with upstream(answer_each) as (up, client):
        for _ in range(3):
            status, headers, body = await client.post("/chat/completions", b'{"a":1}', 5)
            assert (status, headers["content-type"], body) == (200, "application/json",
                                                               b'{"ok":true}')
    assert up.connections == 1


async def test_a_burst_of_answers_keeps_every_connection_for_the_next_burst() -> None:
    async with upstream(answer_each, max_connections=40) as (up, client):
        for _ in range(2):
            await asyncio.gather(*(client.post("/chat/completions", b"{}", 5) for _ in range(30)))
    assert up.connections == 30


async def test_the_request_on_the_wire() -> None:
    async with upstream(answer_each) as (up, client):
        await client.post("/chat/completions", b'{"a":1}', 5, {"traceparent": "00-ab-cd-01",
                                                               "Authorization": "Bearer other"})
    head, _, body = up.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["host"].startswith("127.0.0.1:")
    assert fields["traceparent"] == "00-ab-cd-01"
    assert fields["authorization"] == "Bearer other"  # a request's header overrides the default
    assert list(fields).count("authorization") == 1
    assert (fields["content-length"], body) == ("7", b'{"a":1}')


def test_a_header_that_could_split_the_request_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        Http1Pool("http://127.0.0.1:9/v1", {"x-a": "b\r\nx-injected: 1"}, 1, 1.0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v 1", "http://127.0.0.1:9/v1?a=1",
                                 "ftp://127.0.0.1/v1", "http:///v1"])
def test_a_base_url_that_cannot_make_a_request_line_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Http1Pool(url, {}, 1, 1.0)


async def test_a_chunked_stream_arrives_as_it_is_sent() -> None:
    go_on = asyncio.Event()

    async def chunked(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await answer_each(up, reader, writer)

    async with upstream(chunked) as (up, client):
        stream = await client.open("/chat/completions", b"{}", 5)
        chunks = stream.chunks()
        assert await anext(chunks) == b"first"  # before the upstream has sent the rest
        go_on.set()
        assert [c async for c in chunks] == [b"second"]
        assert (await client.post("/chat/completions", b"{}", 5))[0] == 200
    assert up.connections == 1  # read to its end, the stream's connection served again


async def test_a_closed_stream_closes_its_connection() -> None:
    async def endless(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n")
        await writer.drain()
        await reader.read()  # until the client closes

    async with upstream(endless) as (up, client):
        stream = await client.open("/chat/completions", b"{}", 5)
        assert await anext(stream.chunks()) == b"x"
        await stream.aclose()
        await asyncio.sleep(0.05)
        assert up.open_now == 0


async def test_a_big_stream_read_slowly_arrives_whole() -> None:
    size = 3 * http1.HIGH_WATER

    async def big(up: Upstream, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for i in range(size // 65536):
            writer.write(bytes([i % 251]) * 65536)
            await writer.drain()

    async with upstream(big) as (_, client):
        stream = await client.open("/chat/completions", b"{}", 1.0)
        received = bytearray()
        async for chunk in stream.chunks():
            received += chunk
            await asyncio.sleep(0.001)  # a slow client: the socket is paused, not timed out
        assert len(received) == size
        assert received[::65536] == bytes(i % 251 for i in range(size // 65536))


async def test_a_kept_alive_connection_closed_by_the_upstream_is_replaced() -> None:
    async def one_answer(up: Upstream, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.read(1)  # then closes while the client keeps it idle (or as it sends)

    async with upstream(one_answer) as (up, client):
        for _ in range(3):
            assert (await client.post("/chat/completions", b"{}", 5))[0] == 200
    assert up.connections == 3


async def test_a_connection_closed_without_an_answer_is_a_connect_failure() -> None:
    async def hang_up(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)

    async with upstream(hang_up) as (_, client):
        with pytest.raises(UpstreamFailure) as failure:
            await client.post("/chat/completions", b"{}", 5)
    assert (failure.value.kind, failure.value.message) == (FailureKind.CONNECT,
                                                           http1.CLOSED_UNANSWERED)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_drop_mid_body_is_truncated(stream: bool) -> None:
    async def cut(up: Upstream, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()

    async with upstream(cut) as (_, client):
        with pytest.raises(UpstreamFailure) as failure:
            if stream:
                await (await client.open("/chat/completions", b"{}", 5)).read()
            else:
                await client.post("/chat/completions", b"{}", 5)
    assert failure.value.kind is FailureKind.TRUNCATED


async def test_an_interim_answer_is_skipped() -> None:
    async def early_hints(up: Upstream, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(OK)
        await answer_each(up, reader, writer)

    async with upstream(early_hints) as (up, client):
        for _ in range(2):
            status, headers, body = await client.post("/chat/completions", b"{}", 5)
            assert (status, body, "link" in headers) == (200, b'{"ok":true}', False)
    assert up.connections == 1


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    async def chatty(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(OK)  # an answer to nothing
        await answer_each(up, reader, writer)

    async with upstream(chatty) as (up, client):
        assert (await client.post("/chat/completions", b"{}", 5))[0] == 200
        await asyncio.sleep(0.2)
        assert (await client.post("/chat/completions", b"{}", 5))[2] == b'{"ok":true}'
    assert up.connections == 2


async def test_an_answer_delimited_by_close_is_whole() -> None:
    async def old_style(up: Upstream, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"whole\":1}")
        await writer.drain()

    async with upstream(old_style) as (_, client):
        assert (await client.post("/chat/completions", b"{}", 5))[2] == b'{"whole":1}'


@pytest.mark.parametrize(("stream", "message"), [(False, http1.NO_ANSWER),
                                                 (True, http1.STALLED)])
async def test_silence_past_the_read_timeout(stream: bool, message: str) -> None:
    async def stall(up: Upstream, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        if stream:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    async with upstream(stall) as (_, client):
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamFailure) as failure:
            if stream:
                await (await client.open("/chat/completions", b"{}", 0.3)).read()
            else:
                await client.post("/chat/completions", b"{}", 0.3)
        waited = asyncio.get_running_loop().time() - started
    assert (failure.value.kind, failure.value.message) == (FailureKind.TIMEOUT, message)
    assert 0.3 <= waited < 2


async def test_a_trickle_is_not_a_stall() -> None:
    async def trickle(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        for byte in b"slow":
            await asyncio.sleep(0.2)
            writer.write(bytes([byte]))
            await writer.drain()

    async with upstream(trickle) as (_, client):  # 0.8 s in all, never 0.3 s without a byte
        assert (await client.post("/chat/completions", b"{}", 0.3))[2] == b"slow"


@pytest.mark.parametrize("answer", [b"NOT HTTP AT ALL\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n"])
async def test_a_malformed_answer_is_a_protocol_failure(answer: bytes) -> None:
    async def lie(up: Upstream, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(1)

    async with upstream(lie) as (_, client):
        with pytest.raises(UpstreamFailure) as failure:
            await client.post("/chat/completions", b"{}", 5)
    assert (failure.value.kind, failure.value.message) == (FailureKind.PROTOCOL, http1.MALFORMED)


async def test_nobody_listening_is_a_connect_failure() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = Http1Pool(f"http://127.0.0.1:{port}/v1", {}, 1, 1.0)
    with pytest.raises(UpstreamFailure) as failure:
        await client.post("/chat/completions", b"{}", 5)
    assert failure.value.kind is FailureKind.CONNECT
    assert failure.value.message.startswith(http1.CONNECT_FAILED)


async def test_requests_beyond_max_connections_wait_for_a_free_one() -> None:
    async def slow(up: Upstream, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        while True:
            await up.read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async with upstream(slow, max_connections=2) as (up, client):
        answers = await asyncio.gather(*(client.post("/chat/completions", b"{}", 5)
                                         for _ in range(6)))
    assert [a[0] for a in answers] == [200] * 6
    assert up.most_open == 2


async def test_a_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    async def slow_first(up: Upstream, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        if up.connections == 1:
            await asyncio.sleep(5)
        writer.write(OK)
        await writer.drain()
        await answer_each(up, reader, writer)

    async with upstream(slow_first, max_connections=1) as (up, client):
        task = asyncio.create_task(client.post("/chat/completions", b"{}", 5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Its half-read answer must not reach the next request: that one gets a new connection.
        assert (await client.post("/chat/completions", b"{}", 5))[0] == 200
    assert up.connections == 2


async def test_tls_with_the_system_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    with ca.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # how a deployment adds a private CA
        async with upstream(answer_each, tls=server_ctx) as (up, client):
            assert (await client.post("/chat/completions", b"{}", 5))[0] == 200
            assert up.requests[0].split(b"\r\n")[1].startswith(b"host: localhost:")
        monkeypatch.delenv("SSL_CERT_FILE")
        async with upstream(answer_each, tls=server_ctx) as (up, client):
            with pytest.raises(UpstreamFailure) as failure:  # an unknown CA is not trusted
                await client.post("/chat/completions", b"{}", 5)
            assert failure.value.kind is FailureKind.CONNECT
            assert up.requests == []
