"""The path every chat request shares, whichever API it came in by:
authenticate → read a bounded body → validate and plan → cache (lookup, coalescing) → router
(retries, fallbacks, deadline), and for streams the relay loop that turns an upstream failure
into a final error event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from starlette.requests import Request

from ..accounting import RequestBook
from ..cache.entry import CachedAnswer
from ..cache.keys import exact_key, semantic_scope
from ..cache.replay import Assembler, ReplayStream
from ..cache.semantic import conversation_text
from ..cache.tiers import Directives
from ..cache.verify import covered_language
from ..chat import ChatPlan, plan_chat
from ..context import Gateway
from ..deadline import Deadline
from ..errors import ErrorCode, GatewayError
from ..pricing import cost_usd, format_usd, read_usage
from ..router import Served
from ..schemas import Usage
from ..upstream import UpstreamFailure, UpstreamReply
from .requests import authorize, cancel_on_disconnect, read_json


class ChunkStream(Protocol):
    """An upstream stream or a cache replay: ``(raw_event, chunk)`` pairs, then the totals."""

    usage: dict[str, Any] | None
    finish_reason: str | None
    model: str | None

    def __aiter__(self) -> AsyncIterator[tuple[bytes, dict[str, Any]]]: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True)
class CacheTicket:
    """A request's place in the cache: its exact key, whether its answer may be stored, and
    (with the semantic tier) its scope, text and vector."""

    key: str
    store: bool
    scope: str | None = None
    text: str | None = None
    vector: Any = None


@dataclass(slots=True)
class ChatCall:
    gateway: Gateway
    book: RequestBook
    plan: ChatPlan
    served: Served
    cache_status: str | None = None  # hit | semantic-hit | coalesced | miss; None: cache off
    ticket: CacheTicket | None = None  # set when the answer may be stored
    similarity: float | None = None

    def headers(self) -> dict[str, str]:
        headers = {"x-gateway-model": self.served.name,
                   "x-gateway-attempts": str(self.served.attempts)}
        if self.served.provider:
            headers["x-gateway-provider"] = self.served.provider
            headers["x-gateway-deployment"] = self.served.deployment
        if self.cache_status is not None:
            headers["x-gateway-cache"] = self.cache_status
        if self.similarity is not None:
            headers["x-gateway-cache-similarity"] = f"{self.similarity:.4f}"
        if self.served.cached:
            headers["x-gateway-saved-usd"] = format_usd(self.saved())
        return headers

    def saved(self) -> Decimal:
        tokens = read_usage(self.served.result_usage())
        return cost_usd(self.served.entry, *tokens) if tokens else Decimal(0)

    @property
    def storing(self) -> bool:
        return self.ticket is not None and self.ticket.store

    def remember(self, body: bytes, usage: Any, finish_reasons: list[str | None]) -> None:
        """Store a complete answer, if this request may be stored and the answer deserves it."""
        cache, ticket = self.gateway.cache, self.ticket
        if cache is None or ticket is None or not ticket.store or not cache.storable(finish_reasons):
            return
        cache.save(ticket.key, _answer(self.served, body, usage))
        semantic = self.gateway.semantic
        if semantic is not None and ticket.vector is not None and ticket.scope and ticket.text:
            semantic.remember(ticket.scope, ticket.key, ticket.text, ticket.vector)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _from_cache(gateway: Gateway, plan: ChatPlan, answer: CachedAnswer) -> Served:
    entry = gateway.catalog.get(answer.model) or plan.entry
    result: Any = ReplayStream(answer) if plan.stream else UpstreamReply(200, answer.body, answer.data())
    return Served(answer.model if answer.model in gateway.catalog.models else plan.model,
                  entry, result, attempts=0, cached=True)


def _answer(served: Served, body: bytes, usage: Any) -> CachedAnswer:
    """A complete answer as the cache keeps it, with what it cost upstream."""
    tokens = read_usage(usage) or (0, 0)
    return CachedAnswer(body, served.name, *tokens, cost_usd(served.entry, *tokens), time.time())


def _share(served: Served) -> CachedAnswer:
    reply: UpstreamReply = served.result
    return _answer(served, reply.body, reply.data.get("usage"))


async def _semantic_lookup(gateway: Gateway, tenant: bytes | None, plan: ChatPlan,
                           ticket: CacheTicket) -> tuple[CachedAnswer, float] | None:
    """The semantic tier's answer, if it has a safe one; fills the ticket's vector either way,
    so the answer can be filed under it. Text the embedder does not cover skips the tier."""
    semantic, cache = gateway.semantic, gateway.cache
    if semantic is None or cache is None:
        return None
    text = conversation_text(plan.payload.get("messages") or [])
    if not covered_language(text):
        return None
    ticket.scope, ticket.text = semantic_scope(tenant, plan.model, plan.payload), text
    match = await semantic.lookup(ticket.scope, text)
    ticket.vector = match.vector
    if match.key is None:
        return None
    answer = await cache.lookup(match.key)
    if answer is None:  # expired or evicted from the store: drop it from the index too
        semantic.forget(ticket.scope, match.key)
        return None
    return answer, match.similarity


async def run_chat(request: Request, endpoint: str, *, seed_defaults: bool) -> ChatCall:
    """Everything up to the upstream's answer (or its opened stream, or the cache's)."""
    gateway = gateway_of(request)
    book = RequestBook(gateway.stats, gateway.metrics, endpoint)
    settings = gateway.settings
    try:
        tenant = authorize(request, settings.api_keys)
        body = await read_json(request, settings.max_body_bytes)
        plan = plan_chat(gateway.catalog, body, seed_defaults=seed_defaults)
        book.model = plan.model
        deadline = Deadline.after(settings.timeout_s, start=book.started)
        route = gateway.router.open_stream if plan.stream else gateway.router.complete
        cache = gateway.cache
        if cache is None:
            served = await cancel_on_disconnect(request, route(plan.model, plan.payload, deadline))
            book.served(plan.model, served)
            return ChatCall(gateway, book, plan, served)

        directives = Directives.parse(request.headers.get("cache-control"))
        ticket = CacheTicket(exact_key(tenant, plan.model, plan.payload), directives.store)
        if directives.lookup:
            answer = await cache.lookup(ticket.key)
            if answer is not None:
                cache.count("hit", answer)
                return ChatCall(gateway, book, plan, _from_cache(gateway, plan, answer), "hit")
            hit = await _semantic_lookup(gateway, tenant, plan, ticket)
            if hit is not None:
                answer, similarity = hit
                cache.count("semantic_hit", answer)
                return ChatCall(gateway, book, plan, _from_cache(gateway, plan, answer),
                                "semantic-hit", similarity=similarity)
        if plan.stream or not directives.lookup:
            served = await cancel_on_disconnect(request, route(plan.model, plan.payload, deadline))
        else:
            result = await cancel_on_disconnect(request, cache.coalesced(
                ticket.key, lambda: route(plan.model, plan.payload, deadline), _share))
            if isinstance(result, CachedAnswer):
                cache.count("coalesced")
                return ChatCall(gateway, book, plan, _from_cache(gateway, plan, result), "coalesced")
            served = result
        cache.count("miss")
    except GatewayError as error:
        book.close(error=error)
        raise
    book.served(plan.model, served)
    call = ChatCall(gateway, book, plan, served, "miss", ticket)
    if not plan.stream:
        data = served.result.data
        call.remember(served.result.body, data.get("usage"),
                      [c.get("finish_reason") for c in data.get("choices") or ()])
    return call


async def relay(
    call: ChatCall,
    render: Callable[[bytes, dict[str, Any]], bytes | None],
    finish: Callable[[Usage, Decimal | None], bytes],
) -> AsyncIterator[bytes]:
    """Relay the stream chunk by chunk through ``render``, then ``finish``. A failure after the
    first byte cannot fall back any more: it ends the stream with an error event and no
    ``[DONE]``, so no client mistakes a cut answer for a whole one. Only a stream that ended
    normally is offered to the cache."""
    stream: ChunkStream = call.served.result
    assembler = Assembler() if call.storing else None
    first = True
    try:
        async for raw, chunk in stream:
            if assembler is not None:
                assembler.feed(chunk)
            out = render(raw, chunk)
            if out:
                if first:
                    call.book.first_chunk()
                    first = False
                yield out
        usage, cost = call.book.charge(call.served, stream.usage)
        if assembler is not None and assembler.fit:
            call.remember(assembler.body(stream.usage), stream.usage, assembler.finish_reasons())
        yield finish(usage, cost)
        call.book.close()
    except UpstreamFailure as failure:
        error = GatewayError(
            ErrorCode(f"stream_{failure.kind}"),
            f"The upstream stream failed after it had started: {failure.describe()}",
        )
        call.book.close(error=error)
        yield error.sse_event()
    finally:
        await stream.aclose()
        call.book.close(status=499)  # the client left mid-stream; no-op if already closed
