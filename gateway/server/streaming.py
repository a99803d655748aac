"""The SSE response both streaming routes use.

Starlette's ``StreamingResponse`` cannot rely on ``send`` failing when the client leaves under
uvicorn (which speaks ASGI 2.3), so it runs every stream in an anyio task group with a second
task listening for the disconnect. ``EventStream`` sends from the request's own task and leaves
the listening to the one plain watcher task of ``cancel_when_gone``, which cancels the relay (and
with it the upstream stream) the moment the client goes away.

A client that stays connected but stops reading is held by back-pressure: uvicorn's ``send``
waits while its transport holds more than 64 KiB, so the relay stops pulling from the upstream
and nothing piles up in the gateway. A ``send`` that waits longer than the stream idle timeout
(``GATEWAY_STREAM_IDLE_TIMEOUT``) drops the client: its connection is cut and the upstream
stream closed, so a stalled reader holds neither an admission slot nor an upstream connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.eventloop import Within
from gateway.server.intake import drop_stalled
from gateway.server.requests import cancel_when_gone

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class LastChunk(bytes):
    """A stream's last bytes: ``EventStream`` writes them with the response's end, in one
    write. The iterator may still run after yielding one (to close its books) but yields no
    more."""


class _Stalled(Exception):
    """The client stopped reading for longer than the stall timeout."""


class EventStream(StreamingResponse):
    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str],
                 on_close: Callable[[], Awaitable[None]] | None = None, *,
                 stall_timeout_s: float | None = None) -> None:
        """``on_close`` runs however the response ends, even if ``events`` never started.
        ``stall_timeout_s`` defaults to the gateway's ``GATEWAY_STREAM_IDLE_TIMEOUT``."""
        super().__init__(events, media_type="text/event-stream",
                         headers={**SSE_HEADERS, **headers})
        self._on_close = on_close
        self.stall_timeout_s = stall_timeout_s

    async def stream_response(self, send: Send) -> None:
        """Starlette's, but a ``LastChunk`` ends the response with its own write."""
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        ended = False
        async for chunk in self.body_iterator:
            if ended:
                raise RuntimeError("a stream yielded bytes after its last chunk")
            ended = isinstance(chunk, LastChunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stall_s = self.stall_timeout_s or _configured_stall_timeout(scope)

        async def guarded(message: Message) -> None:
            try:
                async with Within(stall_s):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await cancel_when_gone(receive, self.stream_response(guarded if stall_s else send))
        except GatewayError as error:
            if error.status != 499:
                raise  # 499: the client left, there is no one to tell
        except _Stalled:
            drop_stalled(scope)
            await _disconnected(receive)
        finally:
            # Cancelled while sending, the relay sits at a yield: close it now (it closes the
            # upstream stream and the request's books), not whenever the GC gets to it.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            if self._on_close is not None:
                await self._on_close()


def _configured_stall_timeout(scope: Scope) -> float | None:
    gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
    settings = getattr(gateway, "settings", None)
    return getattr(settings, "stream_idle_timeout_s", None)


async def _disconnected(receive: Receive) -> None:
    """Wait (briefly) for the server to see the cut connection, so it does not report a
    response left incomplete."""
    try:
        async with Within(1.0):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass
