"""A sized answer's head and body leave in one write.

uvicorn's httptools cycle (0.55, pinned: ``seams.PINNED``) writes a response's status line and
headers with one ``transport.write`` and its body with another. With ``TCP_NODELAY`` each is a
send syscall and a segment the client wakes up for: a profile of a worker under load put a
seventh of its CPU in those writes. ``apply`` wraps ``RequestResponseCycle.send`` so that the
head of a response that declares its ``Content-Length`` is held (the cycle writes it into a
``_HeldHead`` in place of the transport) and goes out with the body's first write. Streams
of server-sent events are held the same way: the gateway reads an answer's first events
before it starts one, so its first body write follows the head at once. Other streams (no
length) and HEAD answers (no body write) are untouched; a close before the body (an answer that
failed after its head) lets the head go first, an abort drops it with the connection.
"""

from __future__ import annotations

import inspect
from typing import Any

from gateway.server.seams import check, mismatch

_applied: dict[str, Any] = {}


class _HeldHead:
    """Stands in for the cycle's transport from the head's write to the body's first one."""

    __slots__ = ("cycle", "head", "transport")

    def __init__(self, cycle: Any, transport: Any) -> None:
        self.cycle = cycle
        self.transport = transport
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.head is None:
            self.head = data
            return
        self.cycle.transport = self.transport
        self.transport.write(self.head + data)

    def _release(self) -> None:
        self.cycle.transport = self.transport
        if self.head is not None:
            self.transport.write(self.head)

    def close(self) -> None:
        self._release()
        self.transport.close()

    def abort(self) -> None:
        self.cycle.transport = self.transport
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _held(message: Any) -> bool:
    """Whether the answer's first body follows its head at once: it has a length, or it is
    the gateway's event stream."""
    for name, value in message.get("headers", ()):
        name = name.lower()
        if name == b"content-length" or (name == b"content-type"
                                         and value.startswith(b"text/event-stream")):
            return True
    return False


def apply() -> bool:
    """Wrap uvicorn's httptools ``RequestResponseCycle.send``; ``SeamError`` if it is not the
    shape this was written against (a held head could then never be written)."""
    if _applied:
        return True
    what = "the one-write answers"
    try:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    except ImportError as exc:
        raise mismatch(what, f"uvicorn's httptools protocol cannot be imported ({exc})",
                       "uvicorn") from None
    original = check(RequestResponseCycle, "send", ["self", "message"], what, "uvicorn")
    if "transport" not in inspect.signature(RequestResponseCycle.__init__).parameters:
        raise mismatch(what, "uvicorn's RequestResponseCycle keeps no transport", "uvicorn")

    async def send(self: Any, message: Any) -> None:
        if (message["type"] == "http.response.start" and not self.response_started
                and self.scope["method"] != "HEAD" and _held(message)):
            self.transport = _HeldHead(self, self.transport)
        await original(self, message)

    RequestResponseCycle.send = send
    _applied["send"] = original
    return True


def remove() -> None:
    """Undo ``apply`` (tests)."""
    original = _applied.pop("send", None)
    if original is not None:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

        RequestResponseCycle.send = original
