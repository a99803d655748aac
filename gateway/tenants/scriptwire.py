"""One Redis connection that runs one Lua script: each call's command is written to the socket
the moment it is made, replies are read by hiredis, and calls may overlap (Redis answers in
order, so a queue of handlers pairs them up). A reply reaches its caller's callback straight
from the socket's read, not through futures: each future step is one more turn of the event
loop, and at 100 req/s a turn runs cold.

The limits check is on the request path, and at 100 req/s every call runs cold: through
redis-py's client a round trip took over twice what it took on a bare asyncio stream (the
README's *Teams, keys and budgets* has the probe); the client's pool, retry and callback layers
are what the difference buys, and this one call needs none of them. Writing at
once also lets a check leave before the upstream call it is overlapped with. Everything else
that talks to Redis (keys, ledger, cache) stays on redis-py.

Failures raise redis-py's own exceptions (``ConnectionError``, ``TimeoutError``,
``ResponseError``), so callers treat them as any Redis failure; they never carry the URL. A call
that times out closes the connection (its reply could no longer be paired); the next call opens
a new one. ``NOSCRIPT`` (Redis restarted or its scripts flushed) is answered by sending the
script itself once.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.eventloop import Within, running_loop

Arg = bytes | str | int
Reply = bytes | BaseException  # what a call's ``done`` receives: the script's text, or the error
Handler = Callable[[object], None]


def command(*parts: Arg) -> bytes:
    """A RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Wire(asyncio.Protocol):
    """The socket: each reply (or the connection's failure) goes, in order, to the handler of
    the command it answers, called at once (no future, no extra turn of the event loop)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)  # an error reply is a value
        self.waiting: deque[Handler] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: not a subclass

    def send(self, data: bytes, handler: Handler) -> None:
        self.waiting.append(handler)
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (value := self.reader.gets()) is not False:
                if not self.waiting:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                _hand(self.waiting.popleft(), value)
        except hiredis.ProtocolError:
            self.close(RedisConnectionError("Redis sent a malformed reply"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(RedisConnectionError("the connection to Redis closed"))

    def close(self, error: Exception) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        while self.waiting:
            _hand(self.waiting.popleft(), error)


def _hand(handler: Handler, value: object) -> None:
    """A handler's own failure is the loop's to report; the replies after it still go out."""
    try:
        handler(value)
    except Exception as exc:
        running_loop().call_exception_handler(
            {"message": "a Redis reply handler failed", "exception": exc})


def _resolve(future: asyncio.Future[object]) -> Handler:
    return lambda value: None if future.done() else future.set_result(value)


class _Call:
    """One script call: ``done`` is called once, with the reply, an error or a timeout."""

    __slots__ = ("_done", "timer")

    def __init__(self, done: Callable[[Reply], None]) -> None:
        self._done: Callable[[Reply], None] | None = done
        self.timer: asyncio.TimerHandle | None = None

    @property
    def finished(self) -> bool:
        return self._done is None

    def finish(self, reply: Reply) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        done(reply)


class ScriptWire:
    """``call(keys, args, done)`` runs the script, ``submit`` the same as a future."""

    def __init__(self, url: str, script: str, timeout_s: float) -> None:
        options: dict[str, Any] = dict(parse_url(url))
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._db = int(options.get("db") or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._ssl: ssl.SSLContext | None = None
        if url.startswith("rediss://"):
            self._ssl = ssl.create_default_context()
            if str(options.get("ssl_cert_reqs", "required")).lower() == "none":
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._script = script.encode()
        self._sha = hashlib.sha1(self._script).hexdigest().encode()
        self.timeout_s = timeout_s
        self._wire: _Wire | None = None
        self._opening: asyncio.Task[_Wire] | None = None

    def call(self, keys: list[Arg], args: list[Arg], done: Callable[[Reply], None]) -> None:
        """Run the script; ``done`` gets its text or a Redis error, once, never before this
        returns. Written now if the connection is up."""
        loop = running_loop()
        call = _Call(done)
        call.timer = loop.call_later(self.timeout_s, self._expire, call)
        wire = self._wire
        if wire is not None and not wire.lost:
            self._send(wire, call, keys, args, by_sha=True)
            return
        if self._opening is None:
            self._opening = loop.create_task(self._open())
        self._opening.add_done_callback(lambda opened: self._opened(opened, call, keys, args))

    def submit(self, keys: list[Arg], args: list[Arg]) -> asyncio.Future[bytes]:
        """``call``, as a future of the script's text."""
        future: asyncio.Future[bytes] = running_loop().create_future()

        def done(reply: Reply) -> None:
            if future.done():
                return
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        self.call(keys, args, done)
        return future

    def _opened(self, opened: asyncio.Task[_Wire], call: _Call, keys: list[Arg],
                args: list[Arg]) -> None:
        if call.finished:
            return
        if opened.cancelled():
            call.finish(RedisConnectionError("the connection to Redis was not opened"))
        elif (error := opened.exception()) is not None:
            call.finish(error)
        else:
            self._send(opened.result(), call, keys, args, by_sha=True)

    def _send(self, wire: _Wire, call: _Call, keys: list[Arg], args: list[Arg], *,
              by_sha: bool) -> None:
        name, body = (b"EVALSHA", self._sha) if by_sha else (b"EVAL", self._script)

        def answered(value: object) -> None:
            if call.finished:
                return
            if isinstance(value, ResponseError) and by_sha and str(value).startswith("NOSCRIPT"):
                self._send(wire, call, keys, args, by_sha=False)
            elif isinstance(value, bytes | BaseException):
                call.finish(value)
            else:
                call.finish(ResponseError("the limits script returned no text"))

        wire.send(command(name, body, len(keys), *keys, *args), answered)

    def _expire(self, call: _Call) -> None:
        if call.finished:
            return
        error = RedisTimeoutError(f"Redis did not answer within {self.timeout_s:g} s")
        call.finish(error)
        if self._wire is not None:  # a late reply could no longer be paired with its call
            self._wire.close(error)
            self._wire = None

    async def _open(self) -> _Wire:
        loop = running_loop()
        wire: _Wire | None = None
        try:
            async with Within(self.timeout_s):
                if self._path is not None:
                    _, wire = await loop.create_unix_connection(_Wire, self._path)
                else:
                    _, wire = await loop.create_connection(_Wire, self._host, self._port,
                                                           ssl=self._ssl)
                hello: list[asyncio.Future[object]] = []
                if self._password is not None:
                    auth = ([self._username] if self._username else []) + [self._password]
                    hello.append(loop.create_future())
                    wire.send(command(b"AUTH", *auth), _resolve(hello[-1]))
                if self._db:
                    hello.append(loop.create_future())
                    wire.send(command(b"SELECT", self._db), _resolve(hello[-1]))
                for reply in hello:
                    if isinstance(await reply, BaseException):
                        raise RedisConnectionError("Redis refused AUTH or SELECT")
        except BaseException as exc:
            if wire is not None:
                wire.close(RedisConnectionError("the connection to Redis was not opened"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("connecting to Redis timed out") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(
                    f"cannot connect to Redis ({type(exc).__name__})") from None
            raise
        finally:
            self._opening = None
        self._wire = wire
        return wire

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._wire is not None:
            self._wire.close(RedisConnectionError("the limits connection was closed"))
            self._wire = None
