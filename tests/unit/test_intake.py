"""Intake, driven as an ASGI app with hand-made ``receive``/``send``: the body is read whole under
its own deadline and bounds before admission, and a client that leaves is counted, not raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import unauthorized
from gateway.observability.metrics import Metrics
from gateway.server.intake import EXCHANGE_KEY, TRANSPORT_KEY, Intake, IntakeLimits
from gateway.server.streaming import EventStream

Message = dict[str, Any]


def limits(**overrides: Any) -> IntakeLimits:
    values: dict[str, Any] = {"max_body_bytes": 1024, "body_timeout_s": 0.2, "max_readers": 4,
                              "max_buffered_bytes": 4096, "max_concurrency": 2}
    return IntakeLimits(**{**values, **overrides})


def scope(method: str = "POST", path: str = "/v1/chat/completions",
          headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


class Client:
    """One connection: feeds ``messages`` to the app (then waits, or says it left), records
    what the app sends."""

    def __init__(self, *messages: Message, then_leave: bool = False) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for message in messages:
            self.incoming.put_nowait(message)
        if then_leave:
            self.incoming.put_nowait({"type": "http.disconnect"})
        self.sent: list[Message] = []
        self.received = 0

    async def receive(self) -> Message:
        self.received += 1
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m for m in self.sent if m["type"] == "http.response.start")["headers"])

    def error(self) -> dict[str, Any]:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return dict(orjson.loads(body)["error"])


def chunk(body: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


class Echo:
    """The app behind intake: reads the body as a route would, answers it back; can be told to
    wait for a disconnect first, or to fail."""

    def __init__(self, wait_for_disconnect: bool = False, fail: bool = False) -> None:
        self.wait_for_disconnect = wait_for_disconnect
        self.fail = fail
        self.bodies: list[bytes] = []
        self.running = 0
        self.entered = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.running += 1
        self.entered.set()
        try:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.bodies.append(body)
            if self.wait_for_disconnect:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if self.fail:
                    raise RuntimeError("the upstream call failed after the client left")
            if self.fail:
                raise RuntimeError("a real bug")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            self.running -= 1


class Counted(Metrics):
    """Real metrics in a registry of their own, read back by name."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        super().__init__(self.registry)

    def disconnects(self, reason: str) -> float:
        return self.sample("gateway_client_disconnects_total", reason)

    def sample(self, name: str, reason: str) -> float:
        return self.registry.get_sample_value(name, {"reason": reason}) or 0.0


def intake_for(app: Any, metrics: Metrics | None = None, **overrides: Any) -> Intake:
    return Intake(app, limits(**overrides), metrics=lambda: metrics)


async def test_a_whole_body_is_replayed_to_the_app_once_then_receive_passes_through() -> None:
    app = Echo()
    client = Client(chunk(b'{"a": 1}'))
    await intake_for(app)(scope(), client.receive, client.send)
    assert app.bodies == [b'{"a": 1}']
    assert client.status == 200
    assert client.received == 1


async def test_a_body_that_arrives_in_pieces_reaches_the_app_joined() -> None:
    app = Echo()
    client = Client(chunk(b'{"a"', more=True), chunk(b"", more=True), chunk(b": 1}"))
    intake = intake_for(app)
    await intake(scope(), client.receive, client.send)
    assert app.bodies == [b'{"a": 1}']
    assert (intake.readers, intake.buffered, intake.in_flight) == (0, 0, 0)


async def test_a_body_that_does_not_arrive_in_time_is_408_and_closes_the_connection() -> None:
    metrics = Counted()
    app = Echo()
    client = Client(chunk(b'{"a"', more=True))
    intake = intake_for(app, metrics, body_timeout_s=0.05)
    await asyncio.wait_for(intake(scope(), client.receive, client.send), 2)
    assert client.status == 408
    assert client.error()["code"] == "request_body_timeout"
    assert client.headers[b"connection"] == b"close"
    assert app.bodies == []
    assert intake.readers == 0 and intake.buffered == 0
    assert metrics.sample("gateway_intake_refusals_total", "body_timeout") == 1


async def test_a_declared_oversized_body_is_413_before_anything_is_read() -> None:
    client = Client(chunk(b"x" * 10))
    headers = [(b"content-length", b"5000")]
    await intake_for(Echo())(scope(headers=headers), client.receive, client.send)
    assert client.status == 413 and client.received == 0
    assert client.headers[b"connection"] == b"close"


@pytest.mark.parametrize("pieces", [[b"x" * 1025], [b"x" * 600, b"x" * 600]])
async def test_an_oversized_body_without_a_length_is_413_as_soon_as_it_is_over(
        pieces: list[bytes]) -> None:
    client = Client(*[chunk(p, more=True) for p in pieces])
    intake = intake_for(Echo())
    await asyncio.wait_for(intake(scope(), client.receive, client.send), 2)
    assert client.status == 413
    assert intake.buffered == 0


async def test_slow_bodies_hold_no_admission_slot() -> None:
    app = Echo()
    intake = intake_for(app, max_concurrency=1)
    slow = [Client(chunk(b"{", more=True)) for _ in range(3)]
    readers = [asyncio.ensure_future(intake(scope(), c.receive, c.send)) for c in slow]
    await asyncio.sleep(0.01)
    assert intake.readers == 3 and intake.in_flight == 0
    fast = Client(chunk(b"{}"))
    await intake(scope(), fast.receive, fast.send)
    assert fast.status == 200
    await asyncio.gather(*readers)
    assert [c.status for c in slow] == [408, 408, 408]


async def test_the_concurrency_cap_is_429_with_retry_after_once_bodies_are_in() -> None:
    app = Echo(wait_for_disconnect=True)
    intake = intake_for(app, max_concurrency=1)
    first = Client(chunk(b"{}"))
    running = asyncio.ensure_future(intake(scope(), first.receive, first.send))
    await app.entered.wait()
    second = Client(chunk(b"{}"))
    await intake(scope(), second.receive, second.send)
    assert second.status == 429
    assert second.error()["code"] == "gateway_overloaded"
    assert second.headers[b"retry-after"] == b"1"
    first.leave()
    await running
    assert intake.in_flight == 0


async def test_readers_beyond_the_cap_are_refused_and_their_connection_closed() -> None:
    intake = intake_for(Echo(), max_readers=2)
    slow = [Client(chunk(b"{", more=True)) for _ in range(2)]
    readers = [asyncio.ensure_future(intake(scope(), c.receive, c.send)) for c in slow]
    await asyncio.sleep(0.01)
    third = Client(chunk(b"{}"))
    await intake(scope(), third.receive, third.send)
    assert third.status == 429 and third.received == 0
    assert third.headers[b"connection"] == b"close"
    await asyncio.gather(*readers)


async def test_partial_bodies_are_bounded_in_bytes_across_readers() -> None:
    intake = intake_for(Echo(), max_buffered_bytes=1500)
    first = Client(chunk(b"x" * 1000, more=True))
    reading = asyncio.ensure_future(intake(scope(), first.receive, first.send))
    await asyncio.sleep(0.01)
    assert intake.buffered == 1000
    second = Client(chunk(b"y" * 600, more=True))
    await intake(scope(), second.receive, second.send)
    assert second.status == 429
    await reading
    assert intake.buffered == 0


async def test_a_wrong_key_is_refused_before_the_body_is_read() -> None:
    def authorize(_: Any) -> None:
        raise unauthorized()

    booked: list[tuple[str, int]] = []
    client = Client(chunk(b"{}"))
    intake = Intake(Echo(), limits(), endpoints=frozenset({"/v1/chat/completions"}),
                    authorize=authorize,
                    book=lambda path, error: booked.append((path, error.status)))
    await intake(scope(), client.receive, client.send)
    assert client.status == 401 and client.received == 0
    assert intake.readers == 0
    assert booked == [("/v1/chat/completions", 401)]


async def test_paths_that_are_not_client_routes_are_not_authorized_here() -> None:
    def authorize(_: Any) -> None:
        raise unauthorized()

    client = Client(chunk(b"{}"))
    intake = Intake(Echo(), limits(), endpoints=frozenset({"/call"}), authorize=authorize)
    await intake(scope(path="/no-such-route"), client.receive, client.send)
    assert client.status == 200  # the app (its router) decides what an unknown path gets


async def test_a_client_that_leaves_mid_body_is_counted_and_nothing_is_sent() -> None:
    metrics = Counted()
    app = Echo()
    client = Client(chunk(b"{", more=True), then_leave=True)
    intake = intake_for(app, metrics)
    await intake(scope(), client.receive, client.send)
    assert client.sent == [] and app.bodies == []
    assert metrics.disconnects("body") == 1
    assert intake.readers == 0


async def test_a_client_that_leaves_while_waiting_is_counted_and_a_failure_after_is_quiet() -> None:
    metrics = Counted()
    app = Echo(wait_for_disconnect=True, fail=True)
    client = Client(chunk(b"{}"), then_leave=True)
    intake = intake_for(app, metrics)
    await intake(scope(), client.receive, client.send)  # must not raise
    assert metrics.disconnects("waiting") == 1
    assert intake.in_flight == 0


async def test_an_app_failure_with_the_client_still_there_is_not_swallowed() -> None:
    client = Client(chunk(b"{}"))
    with pytest.raises(RuntimeError, match="a real bug"):
        await intake_for(Echo(fail=True))(scope(), client.receive, client.send)


async def test_a_get_passes_through_untouched() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(receive)

    client = Client()
    intake = intake_for(app, max_readers=1)
    await intake(scope("GET", "/v1/models"), client.receive, client.send)
    assert seen == [client.receive]


async def test_a_get_with_a_body_is_400_and_closes_the_connection() -> None:
    client = Client()
    headers = [(b"content-length", b"5")]
    await intake_for(Echo())(scope("GET", "/v1/models", headers), client.receive, client.send)
    assert client.status == 400 and client.headers[b"connection"] == b"close"


async def test_a_stream_left_mid_way_counts_as_streaming() -> None:
    metrics = Counted()
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(10)
            yield b"data: 2\n\n"
        finally:
            closed.set()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the replayed body
        await EventStream(events(), {}, stall_timeout_s=5)(scope, receive, send)

    client = Client(chunk(b"{}"))
    intake = intake_for(app, metrics)
    running = asyncio.ensure_future(intake(scope(), client.receive, client.send))
    while len(client.sent) < 2:
        await asyncio.sleep(0.005)
    client.leave()
    await asyncio.wait_for(running, 2)
    assert closed.is_set()
    assert metrics.disconnects("streaming") == 1


class Transport:
    """Stands in for uvicorn's transport: ``abort`` makes the connection report it is gone."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.client.leave()


async def test_a_stream_whose_client_stops_reading_is_dropped_and_its_upstream_closed() -> None:
    metrics = Counted()
    closed = asyncio.Event()
    produced = 0

    async def events() -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield b"data: x\n\n"
        finally:
            closed.set()

    client = Client(chunk(b"{}"))
    blocked = asyncio.Event()

    async def send(message: Message) -> None:
        client.sent.append(message)
        if message["type"] == "http.response.body":
            await blocked.wait()  # the socket is full: uvicorn's send waits for a drain

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await EventStream(events(), {}, stall_timeout_s=0.05)(scope, receive, send)

    transport = Transport(client)
    request = {**scope(), TRANSPORT_KEY: transport}
    intake = intake_for(app, metrics)
    await asyncio.wait_for(intake(request, client.receive, send), 2)
    assert transport.aborted and closed.is_set()
    assert produced == 1
    assert request[EXCHANGE_KEY].stalled
    assert metrics.disconnects("stalled") == 1
    assert metrics.disconnects("streaming") == 0
