"""The SSE response both streaming routes use.

Starlette's ``StreamingResponse`` cannot rely on ``send`` failing when the client leaves under
uvicorn (which speaks ASGI 2.3), so it runs every stream in an anyio task group with a second
task listening for the disconnect. ``EventStream`` sends from the request's own task and leaves
the listening to the one plain watcher task of ``cancel_when_gone``, which cancels the relay (and
with it the upstream stream) the moment the client goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import GatewayError
from .requests import cancel_when_gone

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStream(StreamingResponse):
    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str],
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """``on_close`` runs however the response ends, even if ``events`` never started."""
        super().__init__(events, media_type="text/event-stream",
                         headers={**SSE_HEADERS, **headers})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await cancel_when_gone(receive, self.stream_response(send))
        except GatewayError as error:
            if error.status != 499:
                raise  # 499: the client left, there is no one to tell
        finally:
            # Cancelled while sending, the relay sits at a yield: close it now (it closes the
            # upstream stream and the request's books), not whenever the GC gets to it.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            if self._on_close is not None:
                await self._on_close()
