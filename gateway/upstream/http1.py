"""The upstream leg's default HTTP/1.1 client: httptools' parser (uvicorn's, on the server side)
on asyncio's transports, with a keep-alive pool.

Why not aiohttp's client: on this 2-core machine at 100 req/s, a pass-through on aiohttp's
client adds ~0.45 ms more to every request's p50 than the same pass-through on this one, about
half the gateway's whole latency budget (README, *Performance*). The gateway needs one method
(POST), a fixed set of headers and a known body, so most of a general client's work per request
(URL parsing, header merging, cookies, proxies, redirects, trace hooks) is work for nothing.
``GATEWAY_HTTP_CLIENT=aiohttp`` or ``httpx`` still selects those clients.

What it does: keep-alive connections per provider, LIFO (the warmest first), at most
``max_connections`` at once (more requests wait), each kept alive until it has been idle for
15 s, as aiohttp does (bounding idle ones lower makes a burst of answers close connections that
the next burst opens again); TLS with the system's trust store (``SSL_CERT_FILE`` too); an idle
read timeout (time without a byte, as aiohttp's ``sock_read``); chunked, length-delimited and
close-delimited answers; back-pressure on streams. A kept-alive connection that closes before a
byte of the answer is retried once on a new connection: an upstream closes idle connections
when it likes, and the request crossing that close is the usual way a pooled client loses one
(aiohttp would fail it and leave it to the router's retry). Every other failure is an
``UpstreamFailure`` of the same kind the other transports raise.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from gateway.eventloop import Within, running_loop
from gateway.upstream.failures import FailureKind, UpstreamFailure

MAX_HEAD_BYTES = 64 * 1024  # an upstream's status line and headers, at most
HIGH_WATER = 1 << 20  # a stream's unread bytes before the socket stops being read
IDLE_EXPIRY_S = 15.0  # an idle connection older than this is closed, not reused (aiohttp's)

CONNECT_FAILED = "could not connect to the upstream"
CLOSED_UNANSWERED = "the upstream closed the connection without answering"
DROPPED = "the upstream dropped the connection mid-answer"
NO_ANSWER = "the upstream did not answer in time"
STALLED = "the upstream stream stalled past the idle timeout"
MALFORMED = "the upstream sent a malformed HTTP answer"


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n:") or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} has a character a header cannot carry")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._begin(None)

    def _begin(self, stream: bool | None) -> None:
        self.streaming = bool(stream)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_bytes = 0
        self.received = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.failure: UpstreamFailure | None = None
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._last_read = 0.0

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes nobody asked for, on an idle connection: never reuse it
            self.close()
            return
        self.received = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamFailure(FailureKind.PROTOCOL, MALFORMED))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.failure is not None:
            return
        if self.head_done and self._close_delimited():
            self.complete = True
            self._wake()
        elif self.received:
            self._fail(UpstreamFailure(FailureKind.TRUNCATED, DROPPED))
        else:
            self._fail(UpstreamFailure(FailureKind.CONNECT, CLOSED_UNANSWERED))

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("the answer's headers are too large")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints, say): the real one follows
            self.headers = {}
            self._head_bytes = 0
            return
        self.status = status
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._buffered += len(body)
        if self.streaming and self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an interim answer
            return
        self.keep_alive = self._parser.should_keep_alive()  # only valid inside the callback
        self.complete = True
        self._stop_timer()
        self._wake()

    # --- one exchange ------------------------------------------------------------------------

    def send(self, data: bytes, timeout: float, *, stream: bool) -> None:
        self._begin(stream)
        self._timeout = timeout
        self._last_read = self._loop.time()
        if self.closed:  # closed between its last answer and now
            self.failure = UpstreamFailure(FailureKind.CONNECT, CLOSED_UNANSWERED)
            return
        self._timer = self._loop.call_later(timeout, self._check_idle)
        self.transport.write(data)  # type: ignore[union-attr]

    async def wait(self) -> None:
        """Until something new arrives (head, body, end) or the exchange fails."""
        if self.failure is not None:
            raise self.failure
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.failure is not None:
            raise self.failure

    def take(self) -> bytes | None:
        if not self.chunks:
            return None
        chunk = self.chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= HIGH_WATER // 4:
            self._paused = False
            self._last_read = self._loop.time()  # a slow reader is not a stalled upstream
            self.transport.resume_reading()  # type: ignore[union-attr]
        return chunk

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self._stop_timer()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _close_delimited(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        ).lower()

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last_read
        if self._paused or idle < self._timeout:
            self._timer = self._loop.call_later(max(self._timeout - idle, 0.001), self._check_idle)
            return
        self._timer = None
        self._fail(UpstreamFailure(FailureKind.TIMEOUT, STALLED if self.head_done and
                                   self.streaming else NO_ANSWER))
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, failure: UpstreamFailure) -> None:
        if self.failure is None and not self.complete:
            self.failure = failure
            self._stop_timer()
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def _head(conn: _Connection, request: bytes, read_timeout: float, stream: bool) -> None:
    """Send ``request`` on ``conn`` and wait for the answer's head."""
    conn.send(request, read_timeout, stream=stream)
    while not conn.head_done:
        await conn.wait()


class Http1Stream:
    """A streamed answer; its connection goes back to the pool when the answer is read to its
    end, and is closed if the stream is closed before that."""

    def __init__(self, pool: Http1Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            chunk = conn.take()
            if chunk is not None:
                yield chunk
            elif conn.complete:
                self._finish()
                return
            else:
                await conn.wait()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._finish()

    def _finish(self) -> None:
        if self._conn is not None:
            self._pool.release(self._conn)
            self._conn = None


class Http1Pool:
    """Keep-alive connections to one base URL; the ``Transport`` the gateway's upstreams use."""

    def __init__(self, base_url: str, headers: Mapping[str, str], max_connections: int,
                 connect_timeout_s: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = url.scheme == "https"
        self._ssl: ssl.SSLContext | None = None
        self._prefix = url.path.rstrip("/")
        if any(c in self._prefix for c in " \t\r\n") or url.query or url.fragment:
            raise ValueError(f"a base URL's path cannot hold whitespace, a query or a fragment: "
                             f"{base_url!r}")
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        fixed = {"host": host if default_port else f"{host}:{self._port}",
                 "user-agent": "llm-gateway", "accept": "*/*"}
        self._defaults = {**fixed, **{k.lower(): v for k, v in headers.items()}}
        self._head = _header_lines(self._defaults)
        self._connect_timeout = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def post(
        self, path: str, body: bytes, read_timeout: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        conn = await self._exchange(path, body, read_timeout, headers, stream=False)
        try:
            while not conn.complete:
                await conn.wait()
        except BaseException:
            self.release(conn)  # unfinished, so closed
            raise
        content = b"".join(conn.chunks)
        self.release(conn)
        return conn.status, conn.headers, content

    async def open(self, path: str, body: bytes, read_timeout: float,
                   headers: Mapping[str, str] | None = None) -> Http1Stream:
        return Http1Stream(self, await self._exchange(path, body, read_timeout, headers,
                                                      stream=True))

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    def release(self, conn: _Connection) -> None:
        """Give a connection's slot back; keep the connection if it can serve again."""
        if conn.reusable():
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)
        self._slots.release()

    async def _exchange(self, path: str, body: bytes, read_timeout: float,
                        headers: Mapping[str, str] | None, *, stream: bool) -> _Connection:
        """Send the request and return its connection once the answer's head is in."""
        request = self._request(path, body, headers)
        await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._reuse()
            fresh = conn is None
            if conn is None:
                conn = await self._connect()
            try:
                await _head(conn, request, read_timeout, stream)
            except UpstreamFailure as failure:
                if fresh or conn.received or failure.kind is not FailureKind.CONNECT:
                    raise
                # A kept-alive connection closed under the request, before any answer: once more
                # on a new one.
                self._open.discard(conn)
                conn = await self._connect()
                await _head(conn, request, read_timeout, stream)
            return conn
        except BaseException:
            if conn is not None:
                conn.close()
                self._open.discard(conn)
            self._slots.release()
            raise

    def _request(self, path: str, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        head = self._head
        if headers:
            extra = {k.lower(): v for k, v in headers.items()}
            head = _header_lines({**{k: v for k, v in self._defaults.items() if k not in extra},
                                  **extra})
        return b"".join((f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1"), head,
                         b"content-length: %d\r\n\r\n" % len(body), body))

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_EXPIRY_S:
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = running_loop()
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with Within(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise UpstreamFailure(FailureKind.CONNECT, CONNECT_FAILED + " in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamFailure(
                FailureKind.CONNECT, f"{CONNECT_FAILED} ({type(exc).__name__})"
            ) from None
        self._open.add(conn)
        return conn
