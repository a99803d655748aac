"""A fix for BentoML 1.4's request-timeout middleware, applied at import by ``service.py``.

``bentoml._internal.server.http.traffic.TimeoutMiddleware`` arms a ``loop.call_later`` timer
for every request and never cancels it, so each request's timer (with its future) stays in the
event loop for the whole timeout after the request has ended: with a 300 s timeout under steady
load a worker holds tens of thousands of dead timers and grows until they expire. It also runs
every request in a task of its own. ``RequestTimeout`` keeps the behaviour (a 504 when nothing
was sent within the timeout, here in the OpenAI error shape) in the request's own task and
cancels its timer when the request ends; ``apply`` puts its ``__call__`` in place of BentoML's.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorCode, GatewayError
from gateway.eventloop import current_task, running_loop
from gateway.server.seams import Patch, check, replace


class RequestTimeout:
    """ASGI middleware: cancel a request that has sent nothing within ``timeout`` seconds."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        task = current_task()
        state = {"sent": False, "timed_out": False}

        def expire() -> None:
            if not state["sent"] and task is not None:
                state["timed_out"] = True
                task.cancel()

        async def _send(message: Message) -> None:
            state["sent"] = True
            await send(message)

        timer = running_loop().call_later(self.timeout, expire)
        try:
            await self.app(scope, receive, _send)
        except asyncio.CancelledError:
            if not state["timed_out"] or task is None or task.uncancel() > 0:
                raise  # not our timeout: someone else cancelled the request
            error = GatewayError(ErrorCode.REQUEST_TIMEOUT,
                                 f"The request was not answered within {self.timeout:g} s.")
            await error.to_response()(scope, receive, send)
        finally:
            timer.cancel()


def apply() -> Patch:
    """Put ``RequestTimeout.__call__`` in place of BentoML's (which keeps ``app`` and
    ``timeout`` as attributes too: checked, with the call's shape, before patching)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    check(TimeoutMiddleware, "__init__", ["self", "app", "timeout"], "the request-timeout fix")
    return replace(TimeoutMiddleware, "__call__", ["self", "scope", "receive", "send"],
                   "the request-timeout fix", lambda _: RequestTimeout.__call__)
