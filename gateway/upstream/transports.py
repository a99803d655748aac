"""How bytes reach the upstream: interchangeable HTTP transports behind one small interface,
each a maintained library.

``aiohttp`` (the default) sends over one ``aiohttp.ClientSession`` per provider; a provider set
to HTTP/2 gets ``httpx``'s client instead (aiohttp speaks HTTP/1.1 only). ``httpx`` uses an
``httpx.AsyncClient`` (and is what the respx unit tests drive). ``pyreqwest`` is Rust's reqwest
behind a Python API: the lowest added latency in the benchmark, but a cancelled call (a client
that left, a timeout) is not aborted upstream: the provider keeps running it, so it is not the
default. docs/connections.md has the benchmark and the reasons.

Whatever the transport: the proxy is the one ``Wire`` resolved (a provider's own, else
``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` names the host), TLS is verified (plus a CA
bundle where one is set), compressed answers are decoded, and a POST is sent once per attempt:
a connection that closes after the request was written is a failed attempt (``CONNECT``) for
the router to count and retry by its rules, never a silent second send. All map their errors
to the same ``UpstreamFailure`` kinds, so nothing above this module knows which one runs.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment

import aiohttp
import certifi
import httpx
import pyreqwest.exceptions as reqwest_errors
from pyreqwest.client import Client as ReqwestClient
from pyreqwest.client import ClientBuilder
from pyreqwest.proxy import ProxyBuilder
from pyreqwest.response import Response as ReqwestResponse

from gateway.eventloop import Within
from gateway.settings import Settings
from gateway.upstream.failures import FailureKind, UpstreamFailure

CONNECT_FAILED = "could not connect to the upstream"
CLOSED_UNANSWERED = "the upstream closed the connection without answering"
TLS_FAILED = "could not verify the upstream's TLS certificate"
PROXY_FAILED = "could not reach the upstream through the proxy"
DROPPED = "the upstream dropped the connection mid-answer"
NO_ANSWER = "the upstream did not answer in time"
STALLED = "the upstream stream stalled past the idle timeout"
# The most of a stream read at once: what is read is split into events at once, so a client
# that stops reading holds at most this much of them (the rest waits in the client's buffer).
READ_BYTES = 16 * 1024


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
    """No ``accept-encoding``: each library offers the encodings it decodes."""
    headers = {"content-type": "application/json", **(extra or {})}
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    return headers


def choose_proxy(base_url: str, own: str | None, settings: Settings) -> str | None:
    """The proxy for ``base_url``: the provider's own, else ``HTTPS_PROXY`` (``HTTP_PROXY`` for a
    plain-HTTP upstream) unless ``NO_PROXY`` names its host (curl's rules, as urllib reads them)."""
    if own:
        return own
    scheme = urlsplit(base_url).scheme
    proxy = settings.https_proxy if scheme == "https" else settings.http_proxy
    if not proxy:
        return None
    host = urlsplit(base_url).netloc.rpartition("@")[2]
    if settings.no_proxy and proxy_bypass_environment(host, {"no": settings.no_proxy}):
        return None
    return proxy


@dataclass(frozen=True, slots=True)
class Wire:
    """Where and how one provider is reached: its base URL, the headers every request carries
    (its own key among them), its connection pool, proxy, extra trusted CAs and HTTP version."""

    base_url: str
    headers: Mapping[str, str]
    max_connections: int
    max_keepalive: int
    connect_timeout_s: float
    proxy: str | None = None
    ca_bundle: str | None = None
    http2: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Wire:
        """HolySheep as configured by HOLYSHEEP_BASE_URL / HOLYSHEEP_API_KEY."""
        return cls(
            settings.upstream_base_url,
            default_headers(settings.upstream_secret),
            settings.max_connections,
            settings.max_keepalive,
            settings.connect_timeout_s,
            choose_proxy(settings.upstream_base_url, None, settings),
            str(settings.ca_bundle) if settings.ca_bundle else None,
            settings.http2,
        )


@cache
def _pem(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the CA bundle {path!r} ({exc.strerror})") from None


def ssl_context(wire: Wire) -> ssl.SSLContext:
    """certifi's roots, plus the wire's CA bundle: for the Python transports (aiohttp, httpx)."""
    context = ssl.create_default_context(cafile=certifi.where())
    if wire.ca_bundle:
        context.load_verify_locations(cadata=_pem(wire.ca_bundle).decode("ascii"))
    return context


def _causes(exc: BaseException) -> str:
    """Every message in an error's chain, lowercased, to classify it (never shown)."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 10:
        parts.append(str(seen))
        details = getattr(seen, "details", None)
        if isinstance(details, dict):
            parts.extend(str(c.get("message", c)) if isinstance(c, dict) else str(c)
                         for c in details.get("causes") or ())
        seen = seen.__cause__ or seen.__context__
    return " ".join(parts).lower()


def _connect_failure(exc: BaseException) -> UpstreamFailure:
    text = _causes(exc)
    if "certificate" in text or "ssl" in text or "tls" in text:
        return UpstreamFailure(FailureKind.CONNECT, TLS_FAILED)
    if "proxy" in text or "tunnel" in text:
        return UpstreamFailure(FailureKind.CONNECT, PROXY_FAILED)
    return UpstreamFailure(FailureKind.CONNECT, CONNECT_FAILED)


def _unknown_failure(exc: BaseException) -> UpstreamFailure:
    """An error no rule above names: a connection failure, named by its type only (its message
    can quote request data)."""
    return UpstreamFailure(FailureKind.CONNECT,
                           f"upstream connection failed ({type(exc).__name__})")


# --- pyreqwest ----------------------------------------------------------------------------------


def _reqwest_failure(exc: BaseException, *, streaming: bool = False) -> UpstreamFailure:
    if isinstance(exc, reqwest_errors.ConnectTimeoutError | reqwest_errors.PoolTimeoutError):
        return UpstreamFailure(FailureKind.CONNECT, f"{CONNECT_FAILED} in time")
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(FailureKind.TIMEOUT, STALLED if streaming else NO_ANSWER)
    if isinstance(exc, reqwest_errors.ConnectError):
        return _connect_failure(exc)
    if streaming or isinstance(exc, reqwest_errors.ReadError | reqwest_errors.DecodeError):
        return UpstreamFailure(FailureKind.TRUNCATED, DROPPED)
    if isinstance(exc, reqwest_errors.RequestError):
        return UpstreamFailure(FailureKind.CONNECT, CLOSED_UNANSWERED)
    return _unknown_failure(exc)


class _ReqwestStream:
    def __init__(self, response: ReqwestResponse, closer: object) -> None:
        self._response = response
        self._closer = closer
        self.status = response.status
        self.headers: Mapping[str, str] = _Headers(response)

    async def chunks(self) -> AsyncIterator[bytes]:
        reader = self._response.body_reader
        try:
            while (chunk := await reader.read_chunk()) is not None:
                yield bytes(chunk)
        except reqwest_errors.PyreqwestError as exc:
            raise _reqwest_failure(exc, streaming=True) from None

    async def read(self) -> bytes:
        try:
            return bytes(await self._response.bytes())
        except reqwest_errors.PyreqwestError as exc:
            raise _reqwest_failure(exc) from None

    async def aclose(self) -> None:
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer.__aexit__(None, None, None)  # type: ignore[attr-defined]


class _Headers(Mapping[str, str]):
    """A response's headers, looked up case-insensitively (the first value of each)."""

    def __init__(self, response: ReqwestResponse) -> None:
        self._response = response

    def __getitem__(self, name: str) -> str:
        value = self._response.get_header(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: object = None) -> str | None:  # type: ignore[override]
        value = self._response.get_header(name)
        return value if value is not None else default  # type: ignore[return-value]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._response.headers.keys())

    def __len__(self) -> int:
        return len(self._response.headers)


class ReqwestTransport:
    """pyreqwest's client: one per provider and worker, built inside the worker's loop."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._base = wire.base_url
        self._client: ReqwestClient | None = None

    def _build(self) -> ReqwestClient:
        wire = self._wire
        builder = (
            ClientBuilder()
            .default_headers(dict(wire.headers))
            .max_connections(wire.max_connections)
            .pool_max_idle_per_host(wire.max_keepalive)
            .pool_idle_timeout(timedelta(seconds=15))
            .connect_timeout(timedelta(seconds=wire.connect_timeout_s))
            .follow_redirects(False)
            .referer(False)
            .default_cookie_store(False)  # upstream cookies must not travel between clients
            .gzip(True).brotli(True).deflate(True).zstd(True)
            .http1_lower_case_headers()
            .no_proxy()  # the proxy is the one the Wire resolved, not reqwest's own reading
        )
        if wire.proxy:
            builder = builder.proxy(ProxyBuilder.all(wire.proxy))
        if wire.ca_bundle:
            builder = builder.add_root_certificate_pem(_pem(wire.ca_bundle))
        builder = builder.http2(True) if wire.http2 else builder.http1_only()
        return builder.build()

    def _request(self, path: str, body: bytes, headers: Mapping[str, str] | None):  # type: ignore[no-untyped-def]
        if self._client is None:
            self._client = self._build()
        request = self._client.post(self._base + path).body_bytes(body)
        return request.headers(dict(headers)) if headers else request

    async def post(
        self,
        path: str,
        body: bytes,
        read_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        request = self._request(path, body, headers).build()
        try:  # our own timeout: pyreqwest reports its request timeout as a connect timeout
            async with Within(read_timeout):
                try:
                    response = await request.send()
                    content = bytes(await response.bytes())
                except reqwest_errors.PyreqwestError as exc:
                    raise _reqwest_failure(exc) from None
        except TimeoutError:
            raise UpstreamFailure(FailureKind.TIMEOUT, NO_ANSWER) from None
        return response.status, _Headers(response), content

    async def open(
        self, path: str, body: bytes, read_timeout: float, headers: Mapping[str, str] | None = None
    ) -> RawStream:
        # pyreqwest reads a streamed body ahead into a buffer (and holds its first bytes until
        # that fills or the stream ends): one byte makes each chunk reach us as it arrives.
        streamed = self._request(path, body, headers).streamed_read_buffer_limit(1) \
            .build_streamed()
        try:
            async with Within(read_timeout):
                try:
                    response = await streamed.__aenter__()
                except reqwest_errors.PyreqwestError as exc:
                    raise _reqwest_failure(exc) from None
        except TimeoutError:
            raise UpstreamFailure(FailureKind.TIMEOUT, NO_ANSWER) from None
        return _ReqwestStream(response, streamed)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


# --- aiohttp ------------------------------------------------------------------------------------


def _aiohttp_failure(exc: BaseException, *, streaming: bool = False) -> UpstreamFailure:
    if isinstance(exc, TimeoutError):  # aiohttp's socket timeouts are TimeoutErrors too
        if streaming:
            return UpstreamFailure(FailureKind.TIMEOUT, STALLED)
        return UpstreamFailure(FailureKind.TIMEOUT, NO_ANSWER)
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        streaming and isinstance(exc, aiohttp.ClientConnectionError)
    ):
        return UpstreamFailure(FailureKind.TRUNCATED, DROPPED)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamFailure(FailureKind.CONNECT, CLOSED_UNANSWERED)
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamFailure(FailureKind.CONNECT, TLS_FAILED)
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return UpstreamFailure(FailureKind.CONNECT, PROXY_FAILED)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(FailureKind.CONNECT, CONNECT_FAILED)
    return _unknown_failure(exc)


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(READ_BYTES):
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
                connector=aiohttp.TCPConnector(limit=self._wire.max_connections, ttl_dns_cache=300,
                                               ssl=ssl_context(self._wire)),
                headers=self._headers,
                trust_env=False,  # the proxy is the one the Wire resolved
                proxy=self._wire.proxy,
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
            return UpstreamFailure(FailureKind.TIMEOUT, STALLED)
        return UpstreamFailure(FailureKind.TIMEOUT, NO_ANSWER)
    if streaming and isinstance(exc, httpx.TransportError):
        return UpstreamFailure(FailureKind.TRUNCATED, DROPPED)
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamFailure(FailureKind.CONNECT, CLOSED_UNANSWERED)
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return _connect_failure(exc)
    return _unknown_failure(exc)


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
            async for chunk in self._response.aiter_bytes():
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
            trust_env=False,  # the proxy is the one the Wire resolved
            proxy=wire.proxy,
            verify=ssl_context(wire),
            http2=wire.http2,
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
    if settings.http_client == "pyreqwest":
        return ReqwestTransport(wire)
    if wire.http2:  # aiohttp speaks HTTP/1.1 only: an HTTP/2 provider gets httpx's client
        return HttpxTransport(wire)
    return AiohttpTransport(wire)
