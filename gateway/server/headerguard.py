"""Bounds on the header phase of a request, which uvicorn's httptools protocol does not have.

BentoML 1.4.39 serves with uvicorn (0.55, pinned: ``seams.PINNED``) and its ``auto`` HTTP
protocol, httptools when it is installed. That parser takes headers of any size and any number
(a 2 MB header and 1,000 headers were both answered 200 when measured), and a connection that
never finishes its headers, or sends nothing at all, stays open for ever: uvicorn's only timer
is the keep-alive one, armed after a response. ``apply`` wraps seven methods of
``HttpToolsProtocol`` so that:

- the headers must be complete within ``GATEWAY_HEADER_TIMEOUT`` of the connection opening or
  of the request's first byte, else 408 and the connection is closed;
- more than ``GATEWAY_MAX_HEADER_BYTES`` of request line and headers, or more than
  ``GATEWAY_MAX_HEADERS`` headers, is 431 and the connection is closed.

Both answers are in the OpenAI error shape. Everything else (bad framing, a lying
Content-Length, invalid chunked encoding) uvicorn already answers with 400 and a close.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.errors import ErrorCode, GatewayError
from gateway.server.seams import check, mismatch

# The methods wrapped, with the parameters they take in the pinned uvicorn.
WRAPPED = {"connection_made": ["self", "transport"], "connection_lost": ["self", "exc"],
           "data_received": ["self", "data"], "on_message_begin": ["self"],
           "on_header": ["self", "name", "value"], "on_headers_complete": ["self"],
           "send_400_response": ["self", "msg"]}
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _HeadersTooLarge(Exception):
    """Raised inside the parser's ``on_header`` to stop it; uvicorn then calls
    ``send_400_response``, which answers 431 instead."""


def raw_error(error: GatewayError) -> bytes:
    """``error`` as a complete HTTP/1.1 response that closes the connection."""
    body = orjson.dumps(error.body())
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (error.status, REASONS[error.status]),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n", body])


def apply(header_timeout_s: float, max_header_bytes: int, max_headers: int) -> bool:
    """Wrap uvicorn's httptools protocol; ``SeamError`` if it is not the shape this was written
    against (the limits would silently be off)."""
    what = "the header limits"
    try:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:
        raise mismatch(what, f"uvicorn's httptools protocol cannot be imported ({exc})",
                       "uvicorn") from None
    if AutoHTTPProtocol is not HttpToolsProtocol:
        raise mismatch(what, "uvicorn's automatic HTTP protocol is not the httptools one",
                       "uvicorn")
    for name, parameters in WRAPPED.items():
        check(HttpToolsProtocol, name, parameters, what, "uvicorn")
    if getattr(HttpToolsProtocol, "_gateway_header_guard", False):
        return True

    too_large = raw_error(GatewayError(
        ErrorCode.HEADERS_TOO_LARGE,
        f"The request line and headers are larger than {max_header_bytes} bytes or more than "
        f"{max_headers} headers."))
    too_slow = raw_error(GatewayError(
        ErrorCode.HEADER_TIMEOUT,
        f"The request headers did not arrive within {header_timeout_s:g} s."))
    original = {name: getattr(HttpToolsProtocol, name) for name in WRAPPED}

    def refuse(self: Any, response: bytes) -> None:
        self._gw_in_headers = False
        _disarm(self)
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def expire(self: Any) -> None:
        self._gw_timer = None
        if self._gw_in_headers:
            refuse(self, too_slow)

    def arm(self: Any) -> None:
        self._gw_in_headers = True
        self._gw_header_bytes = 0  # raw bytes of a head not yet complete
        self._gw_header_sizes = 0  # names and values of the headers parsed so far
        self._gw_headers = 0
        if self._gw_timer is None:
            self._gw_timer = self.loop.call_later(header_timeout_s, expire, self)

    def connection_made(self: Any, transport: asyncio.Transport) -> None:
        self._gw_timer = None
        original["connection_made"](self, transport)
        arm(self)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        _disarm(self)
        original["connection_lost"](self, exc)

    def data_received(self: Any, data: bytes) -> None:
        original["data_received"](self, data)
        if self._gw_in_headers:  # the whole packet went to an unfinished request head
            self._gw_header_bytes += len(data)
            if self._gw_header_bytes > max_header_bytes:
                refuse(self, too_large)

    def on_message_begin(self: Any) -> None:
        original["on_message_begin"](self)
        arm(self)

    def on_header(self: Any, name: bytes, value: bytes) -> None:
        self._gw_headers += 1
        self._gw_header_sizes += len(name) + len(value)
        if self._gw_headers > max_headers or self._gw_header_sizes > max_header_bytes:
            self._gw_refusal = too_large
            raise _HeadersTooLarge
        original["on_header"](self, name, value)

    def on_headers_complete(self: Any) -> None:
        self._gw_in_headers = False
        _disarm(self)
        original["on_headers_complete"](self)

    def send_400_response(self: Any, msg: str) -> None:
        refusal = getattr(self, "_gw_refusal", None)
        if refusal is None:
            original["send_400_response"](self, msg)
        else:
            refuse(self, refusal)

    for name, wrapper in [("connection_made", connection_made),
                          ("connection_lost", connection_lost),
                          ("data_received", data_received),
                          ("on_message_begin", on_message_begin),
                          ("on_header", on_header),
                          ("on_headers_complete", on_headers_complete),
                          ("send_400_response", send_400_response)]:
        setattr(HttpToolsProtocol, name, wrapper)
    HttpToolsProtocol._gateway_header_guard = original  # type: ignore[attr-defined]
    return True


def remove() -> None:
    """Put uvicorn's own methods back (tests apply the guard with their own limits)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    original = getattr(HttpToolsProtocol, "_gateway_header_guard", None)
    if original:
        for name, method in original.items():
            setattr(HttpToolsProtocol, name, method)
        del HttpToolsProtocol._gateway_header_guard  # type: ignore[attr-defined]


def _disarm(protocol: Any) -> None:
    timer = getattr(protocol, "_gw_timer", None)
    if timer is not None:
        timer.cancel()
        protocol._gw_timer = None
