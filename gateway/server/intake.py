"""Intake: a POST is read in full, under its own deadline and bounds, before it is admitted.

Admission used to be taken as soon as the headers arrived, and reading a body had no deadline of
its own: sixty connections trickling a byte every few seconds held every one of the 50 slots,
and everyone else got 429 for as long as they trickled. Here a POST is, in order:

1. authorized (when the route needs a client key), so a wrong key never holds a reader;
2. read whole, within ``GATEWAY_BODY_TIMEOUT`` (else 408), ``GATEWAY_MAX_BODY_BYTES`` (else 413),
   as one of at most ``GATEWAY_MAX_BODY_READERS`` bodies being read at once, holding at most
   ``GATEWAY_MAX_BODY_BUFFER_BYTES`` of partial bodies between them (else 429); every refusal
   closes the connection, whose unread rest is of no use;
3. admitted against ``GATEWAY_MAX_CONCURRENCY`` (else 429 with ``Retry-After``);
4. handed to the app with a ``receive`` that replays the body once and then passes the real
   one through, so disconnect detection downstream keeps working.

A GET or HEAD with a body is refused (400, connection closed): no route reads one, and a body
nobody reads is a smuggling risk behind a proxy that disagrees about where it ends.

A client that leaves (mid-body, while its answer is awaited, mid-stream) or that is dropped for
not reading its stream is not an error: it is logged once at INFO and counted in
``gateway_client_disconnects_total{reason}``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorCode, GatewayError, body_too_large, error_response, overloaded
from gateway.eventloop import current_task, running_loop
from gateway.observability.metrics import Metrics

logger = logging.getLogger("gateway")

EXCHANGE_KEY = "gateway.exchange"
TRANSPORT_KEY = "gateway.transport"
TENANT_KEY = "gateway.tenant"  # who the key checked here belongs to: not checked twice


class Departure(StrEnum):
    """When a client left (or was dropped): the ``reason`` label of the disconnect metric."""

    BODY = "body"
    WAITING = "waiting"
    STREAMING = "streaming"
    STALLED = "stalled"


class IntakeRefusal(StrEnum):
    """Why intake refused a request before admitting it: the ``reason`` label."""

    BODY_TIMEOUT = "body_timeout"
    TOO_LARGE = "too_large"
    READERS_FULL = "readers_full"
    BUFFER_FULL = "buffer_full"


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_body_bytes: int
    body_timeout_s: float
    max_readers: int
    max_buffered_bytes: int
    max_concurrency: int


Authorize = Callable[[Scope], object]
MetricsSource = Callable[[], Metrics | None]
Book = Callable[[str, GatewayError], None]  # (endpoint, error): the request's books, closed


class _Refused(Exception):
    def __init__(self, reason: IntakeRefusal, error: GatewayError) -> None:
        self.reason = reason
        self.error = error


class _Gone(Exception):
    """The client disconnected before its body was complete."""


class Deadlines:
    """The body deadline of every request being read, enforced by one watcher task that wakes
    every ``tick`` (a quarter of the timeout, at most 1 s) while there are readers, and cancels
    the readers that are past due. A timer per request (``asyncio.timeout``) cost more than all
    the rest of intake; this costs a dict insert and delete. A body is cut between ``timeout``
    and ``timeout + tick`` after its headers."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(1.0, timeout_s / 4)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    def add(self, task: asyncio.Task[Any]) -> None:
        loop = running_loop()
        self._due[task] = loop.time() + self.timeout_s
        if self._watcher is None:
            self._watcher = loop.create_task(self._watch())

    def remove(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (taking that cancellation back)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    async def _watch(self) -> None:
        loop = running_loop()
        try:
            while self._due:
                await asyncio.sleep(self.tick_s)
                now = loop.time()
                for task, due in list(self._due.items()):
                    if due <= now:
                        del self._due[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watcher = None


class AdmittedRequest:
    """One admitted request's side of the wire: replays the buffered body once, then passes
    ``receive`` through, noting a disconnect and how far the response had got."""

    __slots__ = ("_body", "_receive", "_send", "complete", "left", "stalled", "started")

    def __init__(self, body: bytes, receive: Receive, send: Send) -> None:
        self._body: bytes | None = body
        self._receive = receive
        self._send = send
        self.started = False
        self.complete = False
        self.left: Departure | None = None  # when the client was seen to leave
        self.stalled = False

    def take_body(self) -> bytes | None:
        """The buffered body, if no one has read it yet (then ``receive`` passes through)."""
        body, self._body = self._body, None
        return body

    async def receive(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.complete and self.left is None:
            self.left = Departure.STREAMING if self.started else Departure.WAITING
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            await self._send(message)
            return
        await self._send(message)
        if not message.get("more_body", False):
            self.complete = True


def remember_transport(scope: Scope, send: Send) -> None:
    """Keep the connection's transport (uvicorn's ``send`` is a bound method of the request
    cycle that holds it) so a stalled stream can be cut without an error from uvicorn."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and callable(getattr(transport, "abort", None)):
        scope[TRANSPORT_KEY] = transport


def drop_stalled(scope: Scope) -> None:
    """Mark the request as dropped for not reading its stream, and cut its connection."""
    exchange: AdmittedRequest | None = scope.get(EXCHANGE_KEY)
    if exchange is not None:
        exchange.stalled = True
    transport: Any = scope.get(TRANSPORT_KEY)
    if transport is not None:
        transport.abort()


BODILESS = frozenset({"GET", "HEAD"})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return True
    return False


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class Intake:
    """ASGI middleware in front of the routes; see the module docstring for the order."""

    def __init__(self, app: ASGIApp, limits: IntakeLimits, *,
                 endpoints: frozenset[str] = frozenset(), authorize: Authorize | None = None,
                 metrics: MetricsSource | None = None, book: Book | None = None) -> None:
        """``endpoints``: the client routes, whose key is checked here (``authorize``) and whose
        refusals go in the books (``book``) like any other answer; other paths only get the
        body bounds."""
        self.app = app
        self.limits = limits
        self.endpoints = endpoints
        self.authorize = authorize
        self.metrics = metrics
        self.book = book
        self.readers = 0
        self.buffered = 0
        self.in_flight = 0
        self.deadlines = Deadlines(limits.body_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            if scope["type"] == "http" and scope["method"] in BODILESS and _has_body(scope):
                await _answer(GatewayError(
                    ErrorCode.INVALID_VALUE, f"A {scope['method']} request carries no body."),
                    scope, receive, send, close=True)
                return
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else None
        try:
            if self.authorize is not None and endpoint is not None:
                checked = self.authorize(scope)
                if inspect.isawaitable(checked):  # a key store lookup may need a round trip
                    checked = await checked
                scope[TENANT_KEY] = checked
            body = await self._read(scope, receive)
        except GatewayError as error:
            await self._refuse(endpoint, error, scope, receive, send, close=True)
            return
        except _Refused as refused:
            reason = refused.reason
            self._observe(lambda m: m.observe_intake_refusal(reason))
            await self._refuse(endpoint, refused.error, scope, receive, send, close=True)
            return
        except _Gone:
            self._departed(scope, Departure.BODY)
            return
        if self.in_flight >= self.limits.max_concurrency:
            await self._refuse(endpoint, overloaded(self.limits.max_concurrency), scope, receive,
                               send)
            return
        exchange = AdmittedRequest(body, receive, send)
        scope[EXCHANGE_KEY] = exchange
        self.in_flight += 1
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if exchange.left is None and not exchange.stalled:
                raise
            # The client had already left: whatever failed after that had no one to answer.
        finally:
            self.in_flight -= 1
        if exchange.stalled:
            self._departed(scope, Departure.STALLED)
        elif exchange.left is not None:
            self._departed(scope, exchange.left)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        limits = self.limits
        declared = declared_length(scope)
        if declared is not None and declared > limits.max_body_bytes:
            raise _Refused(IntakeRefusal.TOO_LARGE, body_too_large(limits.max_body_bytes))
        if self.readers >= limits.max_readers:
            raise _Refused(IntakeRefusal.READERS_FULL, GatewayError(
                ErrorCode.GATEWAY_OVERLOADED,
                "The gateway is reading as many request bodies as it allows; retry shortly.",
                headers={"Retry-After": "1"}))
        task = current_task()
        assert task is not None
        self.readers += 1
        self.deadlines.add(task)
        held = 0
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _Gone
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                if held + len(chunk) > limits.max_body_bytes:
                    raise _Refused(IntakeRefusal.TOO_LARGE, body_too_large(limits.max_body_bytes))
                if not more and not chunks:
                    return chunk  # the usual case: the whole body in one message
                if chunk:
                    if self.buffered + len(chunk) > limits.max_buffered_bytes:
                        raise _Refused(IntakeRefusal.BUFFER_FULL, GatewayError(
                            ErrorCode.GATEWAY_OVERLOADED,
                            "The gateway holds as many partial request bodies as it allows; "
                            "retry shortly.", headers={"Retry-After": "1"}))
                    self.buffered += len(chunk)
                    held += len(chunk)
                    chunks.append(chunk)
                if not more:
                    return b"".join(chunks)
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise
            raise _Refused(IntakeRefusal.BODY_TIMEOUT, GatewayError(
                ErrorCode.BODY_TIMEOUT,
                f"The request body did not arrive within {limits.body_timeout_s:g} s.")) from None
        finally:
            self.deadlines.remove(task)
            self.readers -= 1
            self.buffered -= held

    async def _refuse(self, endpoint: str | None, error: GatewayError, scope: Scope,
                      receive: Receive, send: Send, *, close: bool = False) -> None:
        if endpoint is not None and self.book is not None:
            self.book(endpoint, error)
        await _answer(error, scope, receive, send, close=close)

    def _departed(self, scope: Scope, reason: Departure) -> None:
        logger.info("client left (%s): %s %s", reason.value, scope["method"], scope["path"])
        self._observe(lambda m: m.observe_disconnect(reason))

    def _observe(self, record: Callable[[Metrics], None]) -> None:
        metrics = self.metrics() if self.metrics is not None else None
        if metrics is not None:
            record(metrics)


async def _answer(error: GatewayError, scope: Scope, receive: Receive, send: Send, *,
                  close: bool = False) -> None:
    """Send ``error`` in the shape of the API called; ``close`` ends the connection too (the
    body's unread rest is useless)."""
    if close:
        error.headers["connection"] = "close"
    await error_response(scope["path"], error)(scope, receive, send)
