"""The HTTP client to the OpenAI-compatible provider: pooling, timeouts, error classification.

One ``httpx.AsyncClient`` per worker. By default it rides on aiohttp's connection pool
(``httpx-aiohttp``), which costs a fraction of httpx's own transport in CPU per request;
``GATEWAY_HTTP_CLIENT=httpx`` switches back. Retries and fallbacks live in ``router.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson

from .settings import Settings
from .sse import EventDecoder

# Failure kinds, each one a different story for the client and for retries.
STATUS = "status"
TIMEOUT = "timeout"
CONNECT = "connect"
PROTOCOL = "protocol"
TRUNCATED = "truncated"


class UpstreamFailure(Exception):
    """One failed upstream attempt, classified so the router can decide what to do next."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type
        self.error_code = error_code
        self.retryable = retryable

    @property
    def is_client_error(self) -> bool:
        """The request itself was refused (a 4xx other than 429): no retry, no fallback."""
        return self.kind == STATUS and self.status is not None and not self.retryable

    def describe(self) -> str:
        if self.kind == STATUS:
            return f"HTTP {self.status}: {self.message}"
        return self.message


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    data: dict[str, Any]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, given as seconds or as an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class UpstreamClient:
    """Talks to one OpenAI-compatible base URL with the gateway's upstream key."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._settings = settings
        self._secret = settings.upstream_secret
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive,
        )
        if transport is None and settings.http_client == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits, trust_env=False)
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if self._secret:
            headers["authorization"] = f"Bearer {self._secret}"
        self._client = httpx.AsyncClient(
            base_url=settings.upstream_base_url,
            headers=headers,
            limits=limits,
            transport=transport,
            timeout=httpx.Timeout(settings.upstream_timeout_s, connect=settings.connect_timeout_s),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def scrub(self, text: str) -> str:
        """Never let the upstream key leave the gateway, even inside an upstream message."""
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def _timeout(self, budget: float, read: float | None = None) -> httpx.Timeout:
        read = min(read or self._settings.upstream_timeout_s, budget)
        return httpx.Timeout(read, connect=min(self._settings.connect_timeout_s, budget))

    async def post_json(self, path: str, body: bytes, budget: float) -> UpstreamReply:
        """POST and return the parsed JSON answer; any failure raises UpstreamFailure."""
        try:
            async with asyncio.timeout(budget):
                response = await self._client.post(path, content=body, timeout=self._timeout(budget))
                content = await response.aread()
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            raise self._transport_failure(exc) from None
        if response.status_code >= 400:
            raise self._status_failure(response.status_code, content, response.headers)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(PROTOCOL, "the upstream answered with malformed JSON") from None
        if not isinstance(data, dict):
            raise UpstreamFailure(PROTOCOL, "the upstream answered with JSON that is not an object")
        return UpstreamReply(response.status_code, content, data)

    async def get_json(self, path: str, budget: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(budget):
                response = await self._client.get(path, timeout=self._timeout(budget))
                content = await response.aread()
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            raise self._transport_failure(exc) from None
        if response.status_code >= 400:
            raise self._status_failure(response.status_code, content, response.headers)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(PROTOCOL, "the upstream answered with malformed JSON") from None
        return data if isinstance(data, dict) else {}

    async def open_stream(self, path: str, body: bytes, budget: float) -> UpstreamStream:
        """Send a streaming request and return once the upstream has answered with 200."""
        request = self._client.build_request(
            "POST",
            path,
            content=body,
            timeout=self._timeout(budget, read=self._settings.stream_idle_timeout_s),
        )
        try:
            async with asyncio.timeout(budget):
                response = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            raise self._transport_failure(exc) from None
        if response.status_code >= 400:
            try:
                async with asyncio.timeout(min(budget, 5.0)):
                    content = await response.aread()
            except (TimeoutError, httpx.HTTPError, aiohttp.ClientError):
                content = b""
            finally:
                await response.aclose()
            raise self._status_failure(response.status_code, content, response.headers)
        return UpstreamStream(self, response, self._settings.stream_idle_timeout_s)

    def _status_failure(
        self, status: int, content: bytes, headers: httpx.Headers
    ) -> UpstreamFailure:
        message, error_type, error_code = f"the upstream answered HTTP {status}", None, None
        try:
            error = orjson.loads(content).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            error_code = str(error["code"]) if error.get("code") is not None else None
        elif isinstance(error, str):
            message = error
        return UpstreamFailure(
            STATUS,
            self.scrub(message),
            status=status,
            retry_after=parse_retry_after(headers.get("retry-after")),
            error_type=error_type,
            error_code=error_code,
            retryable=status in self._settings.retry_statuses,
        )

    def _transport_failure(self, exc: BaseException) -> UpstreamFailure:
        cause = exc.__cause__ or exc
        if isinstance(cause, aiohttp.ServerDisconnectedError | httpx.RemoteProtocolError):
            return UpstreamFailure(CONNECT, "the upstream closed the connection without answering")
        if isinstance(exc, TimeoutError | httpx.TimeoutException) or isinstance(
            cause, TimeoutError
        ):
            if isinstance(exc, httpx.ConnectTimeout) and not isinstance(cause, TimeoutError):
                return UpstreamFailure(CONNECT, "could not connect to the upstream")
            return UpstreamFailure(TIMEOUT, "the upstream did not answer in time")
        if isinstance(exc, httpx.ConnectError) or isinstance(cause, aiohttp.ClientConnectorError):
            return UpstreamFailure(CONNECT, "could not connect to the upstream")
        return UpstreamFailure(CONNECT, f"upstream connection failed ({type(cause).__name__})")


class UpstreamStream:
    """A 200 streaming answer, read as chat-completion chunks.

    Call ``start()`` first; iterating then yields ``(raw_event, chunk)`` pairs in order. It raises UpstreamFailure when the
    connection drops, the stream stalls past the idle timeout, an event is not JSON or carries
    an error, or the stream ends before its terminal chunk (no ``finish_reason``, no ``[DONE]``).
    """

    def __init__(self, client: UpstreamClient, response: httpx.Response, idle_s: float) -> None:
        self._client = client
        self._response = response
        self._idle_s = idle_s
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.done = False
        self._iter = self._chunks()
        self._first: tuple[bytes, dict[str, Any]] | None = None

    async def aclose(self) -> None:
        await self._iter.aclose()
        await self._response.aclose()

    async def start(self) -> None:
        """Read up to the first chunk, so a stream that fails at once can still fall back."""
        try:
            self._first = await anext(self._iter)
        except StopAsyncIteration:
            self._first = None
        except BaseException:
            await self.aclose()
            raise

    async def __aiter__(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for item in self._iter:
            yield item

    async def _chunks(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        decoder = EventDecoder()
        raw_chunks = self._response.aiter_raw()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_s):
                        data = await anext(raw_chunks)
                except StopAsyncIteration:
                    break
                for event in decoder.feed(data):
                    if event.is_done:
                        self.done = True
                        return
                    yield event.raw, self._inspect(event.data)
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            if isinstance(exc, TimeoutError | httpx.TimeoutException):
                raise UpstreamFailure(
                    TIMEOUT, f"the upstream stream stalled for more than {self._idle_s:g} s"
                ) from None
            raise UpstreamFailure(TRUNCATED, "the upstream dropped the connection mid-stream") from None
        finally:
            await self._response.aclose()
        if decoder.pending:
            raise UpstreamFailure(TRUNCATED, "the upstream stream ended inside an event")
        if self.finish_reason is None:
            raise UpstreamFailure(TRUNCATED, "the upstream stream ended before its final chunk")

    def _inspect(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(PROTOCOL, "the upstream sent a malformed stream event") from None
        if not isinstance(chunk, dict):
            raise UpstreamFailure(PROTOCOL, "the upstream sent a stream event that is not an object")
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamFailure(PROTOCOL, self._client.scrub(f"upstream stream error: {message}"))
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return chunk
