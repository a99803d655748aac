"""The clients of the OpenAI-compatible providers: one pooled transport per provider and
worker, each sending only its own key, timeouts bounded by the request's budget, every failure
classified, streams read as chat chunks. Retries and fallbacks live in ``router.py``; the wire
itself in ``transports.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from gateway.catalog import HOLYSHEEP, Catalog
from gateway.eventloop import Within
from gateway.settings import Settings, read_environment
from gateway.upstream.failures import FailureKind, UpstreamFailure
from gateway.upstream.sse import EventDecoder
from gateway.upstream.transports import (
    RawStream,
    Wire,
    choose_proxy,
    default_headers,
    make_transport,
)

__all__ = [
    "Provider",
    "UpstreamClient",
    "UpstreamFailure",
    "UpstreamReply",
    "UpstreamStream",
    "Upstreams",
    "parse_retry_after",
]

HttpxTransports = httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider as the gateway runs it: its wire (key included), read timeout, capabilities."""

    name: str
    wire: Wire
    secret: str
    read_timeout_s: float
    completions: bool = False

    @classmethod
    def holysheep(cls, settings: Settings) -> Provider:
        return cls(
            HOLYSHEEP,
            Wire.from_settings(settings),
            settings.upstream_secret,
            settings.upstream_timeout_s,
        )


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
    """Talks to one provider (HolySheep from the settings by default) with its own key.

    ``transport`` is for tests: an httpx transport (respx's router) to answer in place of the
    network; it selects the httpx transport. ``secrets`` are every provider's keys: an upstream
    message quoting any of them is redacted."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        propagate_trace: bool = False,
        provider: Provider | None = None,
        secrets: Iterable[str] = (),
    ):
        self._settings = settings
        self.provider = provider or Provider.holysheep(settings)
        self._secrets = tuple(s for s in {self.provider.secret, *secrets} if s)
        self._transport = make_transport(settings, transport, self.provider.wire)
        self._propagate_trace = propagate_trace

    def _trace_headers(self) -> dict[str, str] | None:
        """With tracing on, the current span (the router's attempt span) as ``traceparent``, so
        an upstream that traces too joins the same trace."""
        if not self._propagate_trace:
            return None
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    async def aclose(self) -> None:
        await self._transport.aclose()

    def scrub(self, text: str) -> str:
        """Never let an upstream key leave the gateway, even inside an upstream message."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def _read_timeout(self, budget: float) -> float:
        return min(self.provider.read_timeout_s, budget)

    async def post_json(self, path: str, body: bytes, budget: float) -> UpstreamReply:
        """POST and return the parsed JSON answer; any failure raises UpstreamFailure."""
        try:
            async with Within(budget):
                status, headers, content = await self._transport.post(
                    path, body, self._read_timeout(budget), self._trace_headers()
                )
        except TimeoutError:
            raise UpstreamFailure(
                FailureKind.TIMEOUT, "the upstream did not answer in time"
            ) from None
        return UpstreamReply(status, content, self._json(status, headers, content))

    def _json(self, status: int, headers: Mapping[str, str], content: bytes) -> dict[str, Any]:
        if status >= 400:
            raise self._status_failure(status, content, headers)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                FailureKind.PROTOCOL, "the upstream answered with malformed JSON"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamFailure(
                FailureKind.PROTOCOL, "the upstream answered with JSON that is not an object"
            )
        return data

    async def open_stream(self, path: str, body: bytes, budget: float) -> UpstreamStream:
        """Send a streaming request and return once the upstream has answered with 200."""
        idle = self._settings.stream_idle_timeout_s
        try:
            async with Within(budget):
                raw = await self._transport.open(
                    path, body, min(idle, budget), self._trace_headers()
                )
        except TimeoutError:
            raise UpstreamFailure(
                FailureKind.TIMEOUT, "the upstream did not answer in time"
            ) from None
        if raw.status >= 400:
            try:
                async with Within(min(budget, 5.0)):
                    content = await raw.read()
            except (TimeoutError, UpstreamFailure):
                content = b""
            finally:
                await raw.aclose()
            raise self._status_failure(raw.status, content, raw.headers)
        return UpstreamStream(self, raw, idle)

    def _status_failure(
        self, status: int, content: bytes, headers: Mapping[str, str]
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
            FailureKind.STATUS,
            self.scrub(message),
            status=status,
            retry_after=parse_retry_after(headers.get("retry-after")),
            error_type=error_type,
            error_code=error_code,
            retryable=status in self._settings.retry_statuses,
        )


BATCH_BYTES = 4 * 1024  # the most of a stream's events relayed in one write


class UpstreamStream:
    """A 200 streaming answer, read as chat-completion chunks.

    Call ``start()`` first; ``batches()`` then yields, in order, the ``(raw_event, chunk)``
    pairs that arrived together (one socket read), so the relay writes them to the client in
    one send; iterating yields the pairs one by one. It raises UpstreamFailure when the
    connection drops, the stream stalls past the idle timeout, an event is not JSON or carries
    an error, or the stream ends before its terminal chunk (no ``finish_reason``, no
    ``[DONE]``); the events before a bad one are yielded first.
    """

    def __init__(self, client: UpstreamClient, raw: RawStream, idle_s: float) -> None:
        self._client = client
        self._raw = raw
        self._idle_s = idle_s
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.done = False
        self._iter = self._batches()
        self._first: list[tuple[bytes, dict[str, Any]]] | None = None

    async def aclose(self) -> None:
        await self._iter.aclose()
        await self._raw.aclose()

    async def start(self) -> None:
        """Read up to the first chunk, so a stream that fails at once can still fall back."""
        try:
            self._first = await anext(self._iter)
        except StopAsyncIteration:
            self._first = None
        except BaseException:
            await self.aclose()
            raise

    async def batches(self) -> AsyncIterator[list[tuple[bytes, dict[str, Any]]]]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for batch in self._iter:
            yield batch

    async def __aiter__(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
        async for batch in self.batches():
            for pair in batch:
                yield pair

    async def _batches(self) -> AsyncIterator[list[tuple[bytes, dict[str, Any]]]]:
        decoder = EventDecoder()
        raw_chunks = self._raw.chunks()
        try:
            while not self.done:
                try:
                    async with Within(self._idle_s):
                        data = await anext(raw_chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamFailure(
                        FailureKind.TIMEOUT,
                        f"the upstream stream stalled for more than {self._idle_s:g} s",
                    ) from None
                batch: list[tuple[bytes, dict[str, Any]]] = []
                size = 0
                for event in decoder.feed(data):
                    if event.is_done:
                        self.done = True
                        break
                    try:
                        batch.append((event.raw, self._inspect(event.data)))
                    except UpstreamFailure:
                        if batch:
                            yield batch
                        raise
                    size += len(event.raw)
                    if size >= BATCH_BYTES:  # a client that reads slowly holds one batch
                        yield batch
                        batch, size = [], 0
                if batch:
                    yield batch
        finally:
            await raw_chunks.aclose()
            await self._raw.aclose()
        if self.done:
            return
        if decoder.pending:
            raise UpstreamFailure(
                FailureKind.TRUNCATED, "the upstream stream ended inside an event"
            )
        if self.finish_reason is None:
            raise UpstreamFailure(
                FailureKind.TRUNCATED, "the upstream stream ended before its final chunk"
            )

    def _inspect(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                FailureKind.PROTOCOL, "the upstream sent a malformed stream event"
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamFailure(
                FailureKind.PROTOCOL, "the upstream sent a stream event that is not an object"
            )
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamFailure(
                FailureKind.PROTOCOL, self._client.scrub(f"upstream stream error: {message}")
            )
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return chunk


class Upstreams:
    """One client per provider the catalog's deployments name, built once per worker."""

    def __init__(self, clients: Mapping[str, UpstreamClient]) -> None:
        self._clients = dict(clients)

    @classmethod
    def build(
        cls,
        settings: Settings,
        catalog: Catalog,
        transport: HttpxTransports = None,
        *,
        propagate_trace: bool = False,
        environ: Callable[[str], str | None] = read_environment,
    ) -> Upstreams:
        """``transport`` is for tests: one httpx transport for every provider (respx routes by
        URL), or one per provider name."""
        providers = [
            cls._provider(settings, catalog, name, environ) for name in catalog.providers_used()
        ]
        secrets = [p.secret for p in providers]
        clients = {}
        for provider in providers:
            hook = transport.get(provider.name) if isinstance(transport, Mapping) else transport
            clients[provider.name] = UpstreamClient(
                settings, hook, propagate_trace=propagate_trace, provider=provider, secrets=secrets
            )
        return cls(clients)

    @staticmethod
    def _provider(
        settings: Settings, catalog: Catalog, name: str, environ: Callable[[str], str | None]
    ) -> Provider:
        entry = catalog.providers.get(name)
        if entry is None:
            return Provider.holysheep(settings)
        secret = (environ(entry.api_key_env) or "") if entry.api_key_env else ""
        wire = Wire(
            entry.base_url,
            default_headers(secret, entry.headers),
            entry.max_connections or settings.max_connections,
            settings.max_keepalive if entry.max_keepalive is None else entry.max_keepalive,
            entry.connect_timeout_s or settings.connect_timeout_s,
            choose_proxy(entry.base_url, entry.proxy, settings),
            entry.ca_bundle or (str(settings.ca_bundle) if settings.ca_bundle else None),
            settings.http2 if entry.http2 is None else entry.http2,
        )
        return Provider(
            name, wire, secret, entry.timeout_s or settings.upstream_timeout_s, entry.completions
        )

    def __getitem__(self, provider: str) -> UpstreamClient:
        return self._clients[provider]

    def __iter__(self) -> Iterator[UpstreamClient]:
        return iter(self._clients.values())

    def scrub(self, text: str) -> str:
        """Every provider's key redacted (each client knows them all)."""
        first = next(iter(self._clients.values()), None)
        return first.scrub(text) if first is not None else text

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
