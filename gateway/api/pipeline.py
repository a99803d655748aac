"""The path every chat request shares, whichever API it came in by:
authenticate → read a bounded body → plan → cache (lookup, coalescing, store) → router (retries,
fallbacks, deadline) → account (the one place that prices). Edges only translate shapes: they
hand ``start_exchange`` a parser that turns their body into a ``ChatPlan``, and a
``StreamRenderer`` that turns chat chunks into their wire format.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.assembly import Gateway
from gateway.books.accounting import Charge, RequestAccount
from gateway.cache.entry import CachedAnswer
from gateway.cache.replay import Assembler, ReplayStream
from gateway.cache.service import CacheOutcome, Directives
from gateway.errors import ErrorCode, GatewayError
from gateway.plan.chat import ChatPlan
from gateway.pricing import format_usd, read_usage
from gateway.routing.deadline import Deadline
from gateway.routing.router import Served
from gateway.server.intake import TENANT_KEY
from gateway.server.requests import cancel_on_disconnect, read_json
from gateway.server.streaming import EventStream, LastChunk
from gateway.upstream.client import UpstreamFailure, UpstreamReply


class ChunkStream(Protocol):
    """An upstream stream or a cache replay: ``(raw_event, chunk)`` pairs in batches of those
    already in hand, then the totals."""

    usage: dict[str, Any] | None
    finish_reason: str | None
    model: str | None
    done: bool  # its end was read: nothing follows the last batch

    def batches(self) -> AsyncIterator[list[tuple[bytes, dict[str, Any]]]]: ...
    async def aclose(self) -> None: ...


class StreamRenderer(Protocol):
    """How an edge writes a chat stream in its own wire format."""

    def start(self) -> bytes | None: ...
    def chunk(self, raw: bytes, chunk: dict[str, Any]) -> bytes | None: ...
    def finish(self, charge: Charge | None, finish_reason: str | None) -> bytes: ...
    def fail(self, error: GatewayError) -> bytes: ...


@dataclass(slots=True)
class ChatExchange:
    """One chat request on its way back: the plan, what answered, what the cache did, and
    the account that prices it."""

    gateway: Gateway
    account: RequestAccount
    plan: ChatPlan
    served: Served
    outcome: CacheOutcome[Served]

    def headers(self) -> dict[str, str]:
        headers = {"x-gateway-model": self.served.name,
                   "x-gateway-attempts": str(self.served.attempts)}
        if self.served.provider:
            headers["x-gateway-provider"] = self.served.provider
            headers["x-gateway-deployment"] = self.served.deployment
        if self.outcome.result is not None:
            headers["x-gateway-cache"] = self.outcome.result.value
        if self.outcome.similarity is not None:
            headers["x-gateway-cache-similarity"] = f"{self.outcome.similarity:.4f}"
        if self.outcome.cached:
            charge = self.account.charge(self.served.result_usage())
            headers["x-gateway-saved-usd"] = format_usd(charge.saved if charge else 0)
        if self.account.tenancy is not None:
            headers.update(self.account.tenancy.rate_headers())
        return headers

    def complete(self, body: bytes, usage: Any, finish_reasons: list[str | None]) -> None:
        """Hand a missed request's complete answer to the cache (to store it if it may, and to
        requests coalesced behind it). An answer without readable usage cannot be priced as a
        saving later, so it is not offered."""
        tokens = read_usage(usage)
        if tokens is None:
            self.outcome.abandon()
            return
        self.outcome.complete(CachedAnswer(body, self.served.name, *tokens, time.time(),
                                           self.served.deployment),
                              finish_reasons)


    async def discard(self) -> None:
        """An answer refused after all (its overlapped admission said no): followers stop
        waiting and an opened upstream stream is closed; nothing reaches the client."""
        self.outcome.abandon()
        if self.plan.stream:
            await self.served.result.aclose()

    async def release(self) -> None:
        """However a stream ends (even one never started): followers stop waiting, the
        upstream stream is closed, the account is closed (499 if nothing else closed it)."""
        self.outcome.abandon()  # no-op once completed
        await self.served.result.aclose()
        self.account.close(status=499)


def stream_response(exchange: ChatExchange, renderer: StreamRenderer) -> EventStream:
    return EventStream(relay(exchange, renderer), exchange.headers(), on_close=exchange.release)


JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class Answered(Response):
    """A complete JSON answer whose books (metrics, access log, ledger, the key's settlement)
    close once its bytes are written, so the client never waits for them; they close even if
    writing failed."""

    media_type = "application/json"

    def __init__(self, body: bytes | str, headers: dict[str, str],
                 account: RequestAccount) -> None:
        """Headers as Starlette's ``init_headers`` would make them, without its lower-casing
        and scans (the gateway's names are lower-case already; uvicorn lower-cases the wire's
        anyway), and with the length first, where ``onewrite`` looks for it."""
        self.status_code = 200
        self.background = None
        self.body = body.encode() if isinstance(body, str) else body
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), JSON_CONTENT_TYPE,
                            *[(k.encode("latin-1"), v.encode("latin-1"))
                              for k, v in headers.items()]]
        self.account = account

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.account.close()


def cost_headers(charge: Charge | None) -> dict[str, str]:
    if charge is None:
        return {}
    headers = {"x-gateway-cost-usd": format_usd(charge.cost)}
    if charge.saved:
        headers["x-gateway-saved-usd"] = format_usd(charge.saved)
    return headers


BYPASS = Directives(lookup=False, store=False)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _shared(served: Served) -> CachedAnswer:
    """A leader's answer as its coalesced followers get it."""
    reply: UpstreamReply = served.result
    tokens = read_usage(reply.data.get("usage")) or (0, 0)
    return CachedAnswer(reply.body, served.name, *tokens, time.time(), served.deployment)


def _from_cache(gateway: Gateway, plan: ChatPlan, answer: CachedAnswer) -> Served:
    entry = gateway.catalog.get(answer.model) or plan.entry
    result: Any = ReplayStream(answer) if plan.stream else \
        UpstreamReply(200, answer.body, answer.data())
    name = answer.model if answer.model in gateway.catalog.models else plan.model
    deployment = next((d for d in gateway.catalog.deployments(name)
                       if d.name == answer.deployment), None)
    return Served(name, entry, result, attempts=0, cached=True,
                  provider=deployment.provider if deployment else "",
                  deployment=deployment.name if deployment else "",
                  deployment_price=deployment.price if deployment else None)


async def answer(gateway: Gateway, account: RequestAccount, plan: ChatPlan, tenant: str,
                 directives: Directives, deadline: Deadline) -> ChatExchange:
    """Everything from the plan to the answer (or its opened stream): cache, then router."""
    route = gateway.router.open_stream if plan.stream else gateway.router.complete
    outcome = await gateway.cache.serve(
        plan, tenant, directives if plan.cacheable else BYPASS,
        lambda: route(plan.model, plan.payload, deadline, path=plan.path), _shared)
    cache = outcome.result.value if outcome.result else None
    if outcome.answer is not None:
        served = _from_cache(gateway, plan, outcome.answer)
        account.answered_by(plan.model, served.name, served.entry, cached=True, cache=cache)
    else:
        assert outcome.served is not None
        served = outcome.served
        account.answered_by(plan.model, served.name, served.price, upstream_s=served.upstream_s,
                            attempts=served.attempts, cache=cache)
    exchange = ChatExchange(gateway, account, plan, served, outcome)
    if not plan.stream and outcome.wants_answer:
        reply: UpstreamReply = served.result
        exchange.complete(reply.body, reply.data.get("usage"),
                          [c.get("finish_reason") for c in reply.data.get("choices") or ()])
    return exchange


async def start_exchange(request: Request, endpoint: str,
                         parse: Callable[[Gateway, Any], ChatPlan]) -> ChatExchange:
    """Authenticate, read and plan the request, then answer it; the client leaving cancels the
    upstream call. Any error closes the account before it propagates to the edge."""
    gateway = gateway_of(request)
    tenancy = gateway.tenants.tenancy(endpoint, request.headers)
    account = RequestAccount(gateway.stats, gateway.metrics, endpoint, tenancy)
    try:
        tenant = (await tenancy.authenticate(request.scope.get(TENANT_KEY))).scope
        body = await read_json(request, gateway.settings.max_body_bytes)
        plan = parse(gateway, body)
        account.model = plan.model
        pending = await tenancy.admit_or_overlap(plan.model, plan.payload)
        directives = Directives.parse(request.headers.get("cache-control"))
        deadline = Deadline.after(gateway.settings.timeout_s, start=account.started)
        try:
            exchange = await cancel_on_disconnect(
                request, answer(gateway, account, plan, tenant, directives, deadline))
        except GatewayError:
            refusal = await tenancy.verdict(pending)
            if refusal is not None:
                raise refusal from None
            raise
        refusal = await tenancy.verdict(pending)
        if refusal is not None:
            await exchange.discard()
            raise refusal
        return exchange
    except GatewayError as error:
        error.headers.update(tenancy.rate_headers())
        account.close(error=error)
        raise


async def relay(exchange: ChatExchange, renderer: StreamRenderer) -> AsyncIterator[bytes]:
    """Relay the stream through ``renderer``, the chunks that arrived together in one write,
    and the last of them with the stream's end. A failure after the first byte cannot fall
    back any more: it ends the stream with the renderer's error event (never a clean end), so
    no client mistakes a cut answer for a whole one. Only a stream that ended normally is
    offered to the cache."""
    stream: ChunkStream = exchange.served.result
    account = exchange.account
    assembler = Assembler() if exchange.outcome.wants_answer else None
    first = True
    tail = b""
    try:
        opening = renderer.start()
        if opening:
            account.first_chunk()
            first = False
            yield opening
        async for batch in stream.batches():
            parts = []
            for raw, chunk in batch:
                if assembler is not None:
                    assembler.feed(chunk)
                out = renderer.chunk(raw, chunk)
                if out:
                    parts.append(out)
            if stream.done:  # the end came with this batch: it leaves with the last bytes
                tail = b"".join(parts)
                break
            if parts:
                if first:
                    account.first_chunk()
                    first = False
                yield parts[0] if len(parts) == 1 else b"".join(parts)
        charge = account.charge(stream.usage)
        if assembler is not None and assembler.rebuildable:
            exchange.complete(assembler.body(stream.usage), stream.usage,
                              assembler.finish_reasons())
        if first and tail:
            account.first_chunk()
        yield LastChunk(tail + renderer.finish(charge, stream.finish_reason))
        account.close()
    except UpstreamFailure as failure:
        error = GatewayError(ErrorCode(f"stream_{failure.kind}"),
                             f"The upstream stream failed after it had started: "
                             f"{failure.describe()}")
        account.close(error=error)
        yield LastChunk(renderer.fail(error))
    finally:
        await exchange.release()
