"""How bytes reach the upstream: three interchangeable HTTP transports behind one small interface.

``http1`` (the default, ``gateway/upstream/http1.py``) is httptools' parser on asyncio's transports;
``aiohttp`` talks to aiohttp's connection pool directly; ``httpx`` uses an ``httpx.AsyncClient``
(and is what the respx unit tests drive). Measured on the 2-core machine through the whole
gateway (50 VUs, instant fake provider, one worker): ~1,270 req/s on aiohttp, ~880 on httpx's
API over aiohttp's pool (httpx-aiohttp), ~390 on httpx's own transport; README, *Performance*,
for http1 against aiohttp. All map their errors to the same ``UpstreamFailure`` kinds, so
nothing above this module knows which one runs.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx

from gateway.settings import Settings
from gateway.upstream.failures import FailureKind, UpstreamFailure
from gateway.upstream.http1 import Http1Pool


class RawStream(Protocol):
    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class Transport(Protocol):
    """``headers`` add to (or override) the defaults for one request (say, a ``traceparent``)."""

    async def post(
        self,
        path: str,
        body: bytes,
        read_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]: ...
    async def open(
        self, path: str, body: bytes, read_timeout: float, headers: Mapping[str, str] | None = None
    ) -> RawStream: ...
    async def aclose(self) -> None: ...


def default_headers(secret: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept-encoding": "identity", **(extra or {})}
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    return headers


@dataclass(frozen=True, slots=True)
class Wire:
    """Where and how one provider is reached: its base URL, the headers every request carries
    (its own key among them), and its connection pool."""

    base_url: str
    headers: Mapping[str, str]
    max_connections: int
    max_keepalive: int
    connect_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Wire:
        """HolySheep as configured by HOLYSHEEP_BASE_URL / HOLYSHEEP_API_KEY."""
        return cls(
            settings.upstream_base_url,
            default_headers(settings.upstream_secret),
            settings.max_connections,
            settings.max_keepalive,
            settings.connect_timeout_s,
        )


# --- aiohttp ------------------------------------------------------------------------------------


def _aiohttp_failure(exc: BaseException, *, streaming: bool = False) -> UpstreamFailure:
    if isinstance(exc, TimeoutError):  # aiohttp's socket timeouts are TimeoutErrors too
        if streaming:
            return UpstreamFailure(
                FailureKind.TIMEOUT, "the upstream stream stalled past the idle timeout"
            )
        return UpstreamFailure(FailureKind.TIMEOUT, "the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        streaming and isinstance(exc, aiohttp.ClientConnectionError)
    ):
        return UpstreamFailure(
            FailureKind.TRUNCATED, "the upstream dropped the connection mid-answer"
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamFailure(
            FailureKind.CONNECT, "the upstream closed the connection without answering"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(FailureKind.CONNECT, "could not connect to the upstream")
    return UpstreamFailure(
        FailureKind.CONNECT, f"upstream connection failed ({type(exc).__name__})"
    )


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_failure(exc, streaming=True) from None

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_failure(exc) from None

    async def aclose(self) -> None:
        self._response.close()


class AiohttpTransport:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._base = wire.base_url
        self._headers = dict(wire.headers)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily, inside the worker's running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._wire.max_connections, ttl_dns_cache=300),
                headers=self._headers,
                auto_decompress=False,
                trust_env=False,
                # Upstream cookies must not travel from one client's request to another's.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _timeout(self, read: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, sock_read=read, sock_connect=min(self._wire.connect_timeout_s, read)
        )

    async def post(
        self,
        path: str,
        body: bytes,
        read_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with self._client().post(
                self._base + path, data=body, headers=headers, timeout=self._timeout(read_timeout)
            ) as response:
                return response.status, response.headers, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_failure(exc) from None

    async def open(
        self, path: str, body: bytes, read_timeout: float, headers: Mapping[str, str] | None = None
    ) -> RawStream:
        try:
            response = await self._client().post(
                self._base + path, data=body, headers=headers, timeout=self._timeout(read_timeout)
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_failure(exc) from None
        return _AiohttpStream(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# --- httpx --------------------------------------------------------------------------------------


def _httpx_failure(exc: BaseException, *, streaming: bool = False) -> UpstreamFailure:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamFailure(FailureKind.CONNECT, "could not connect to the upstream in time")
        if streaming:
            return UpstreamFailure(
                FailureKind.TIMEOUT, "the upstream stream stalled past the idle timeout"
            )
        return UpstreamFailure(FailureKind.TIMEOUT, "the upstream did not answer in time")
    if streaming and isinstance(exc, httpx.TransportError):
        return UpstreamFailure(
            FailureKind.TRUNCATED, "the upstream dropped the connection mid-answer"
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamFailure(
            FailureKind.CONNECT, "the upstream closed the connection without answering"
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamFailure(FailureKind.CONNECT, "could not connect to the upstream")
    return UpstreamFailure(
        FailureKind.CONNECT, f"upstream connection failed ({type(exc).__name__})"
    )


class _HttpxStream:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._response.is_stream_consumed:  # a transport that answered with the whole body
            yield self._response.content
            return
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc, streaming=True) from None

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that accepts nothing: upstream cookies must not travel between clients' requests."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class HttpxTransport:
    def __init__(self, wire: Wire, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._wire = wire
        self._client = httpx.AsyncClient(
            base_url=wire.base_url,
            headers=dict(wire.headers),
            limits=httpx.Limits(
                max_connections=wire.max_connections, max_keepalive_connections=wire.max_keepalive
            ),
            transport=transport,
            trust_env=False,
            cookies=_no_cookies(),
        )

    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(read, connect=min(self._wire.connect_timeout_s, read))

    async def post(
        self,
        path: str,
        body: bytes,
        read_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            response = await self._client.post(
                path, content=body, headers=headers, timeout=self._timeout(read_timeout)
            )
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None
        return response.status_code, response.headers, response.content

    async def open(
        self, path: str, body: bytes, read_timeout: float, headers: Mapping[str, str] | None = None
    ) -> RawStream:
        request = self._client.build_request(
            "POST", path, content=body, headers=headers, timeout=self._timeout(read_timeout)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None
        return _HttpxStream(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def make_transport(
    settings: Settings,
    httpx_transport: httpx.AsyncBaseTransport | None = None,
    wire: Wire | None = None,
) -> Transport:
    """The configured transport to ``wire`` (HolySheep's from the settings by default); an
    explicit httpx transport (respx's, in tests) forces httpx."""
    wire = wire or Wire.from_settings(settings)
    if httpx_transport is not None or settings.http_client == "httpx":
        return HttpxTransport(wire, httpx_transport)
    if settings.http_client == "aiohttp":
        return AiohttpTransport(wire)
    return Http1Pool(wire.base_url, wire.headers, wire.max_connections, wire.connect_timeout_s)
