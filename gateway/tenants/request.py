"""One request's tenancy: who it is for and what it was admitted to; closed once, by the
request's books, with the ``Outcome`` they record.

Apart from ``Tenants`` because it lives as long as one request, while ``Tenants`` lives as long
as the worker: the tenant stage fills it in (key, admission) and nothing after it does;
``close`` settles the admission, writes the ledger's increment and the access log line.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.pricing import Tokens
from gateway.tenants.admission import Admission, Tenant, estimate_tokens
from gateway.tenants.ledger import end_user_label

if TYPE_CHECKING:
    from gateway.tenants import Tenants


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request came to, as its books record it when they close: everything the
    settlement, the ledger and the access log need, in one record."""

    status: int
    error_code: str | None
    latency_ms: float
    upstream_ms: float
    served: str | None
    attempts: int = 0
    cache: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None
    saved: Decimal = Decimal(0)
    tokens: Tokens | None = None


@dataclass(slots=True)
class RequestTenancy:
    """One request's tenancy: the key and its admission, closed with the request's books."""

    tenants: Tenants
    tenant: Tenant
    route: str
    headers: Mapping[str, str]
    admission: Admission | None = None
    requested: str | None = None

    def request_id(self) -> str:
        """The client's ``x-request-id``, or a new one: read for the access log line, after the
        answer, not before it."""
        return self.headers.get("x-request-id", "")[:64] or f"{random.getrandbits(64):016x}"

    async def authenticate(self, known: Tenant | None = None) -> Tenant:
        self.tenant = await self.tenants.authenticate(self.headers, known)
        return self.tenant

    def end_user(self, payload: Any) -> str:
        """Who the client says the request is for: the header the operator named
        (``GATEWAY_END_USER_HEADER``) if sent, else OpenAI's ``user`` (the Anthropic bridge
        puts ``metadata.user_id`` there)."""
        header = self.tenants.settings.end_user_header
        if header and self.headers.get(header.lower()):
            return end_user_label(self.headers.get(header.lower()))
        return end_user_label(payload.get("user")) if isinstance(payload, dict) else ""

    async def admit(self, model: str, payload: Any) -> Admission:
        await self.admit_or_overlap(model, payload, overlap=False)
        assert self.admission is not None
        return self.admission

    async def admit_or_overlap(self, model: str, payload: Any, *,
                               overlap: bool = True) -> asyncio.Future[Admission] | None:
        """Admit now (at once, with no limits call, when there is nothing to check); or, when
        ``Tenants.may_overlap`` says so, start the admission and return it, for the caller to
        await before it sends anything (a refusal then still refuses)."""
        self.requested = model
        end_user = self.end_user(payload)
        self.admission = self.tenants.unlimited(self.tenant, model, end_user)
        if self.admission is not None:
            return None
        estimated = estimate_tokens(payload)
        if not overlap or not self.tenants.may_overlap(self.tenant, model, estimated, end_user):
            self.admission = await self.tenants.begin(self.tenant, model, estimated, end_user)
            return None
        begun = self.tenants.begin(self.tenant, model, estimated, end_user)
        begun.add_done_callback(self._admitted)
        return begun

    def _admitted(self, begun: asyncio.Future[Admission]) -> None:
        """The verdict as it arrives, even if the request never awaits it (so a request that
        ends early still settles); its headers are worked out now, while the upstream call is
        out. A callback runs on a later turn of the loop than the verdict, so ``verdict``
        takes the admission itself too."""
        if not begun.cancelled() and begun.exception() is None:
            self.admission = begun.result()
            self.admission.headers()

    async def verdict(self, pending: asyncio.Future[Admission] | None) -> GatewayError | None:
        """An overlapped admission's refusal, if it refused (awaited before anything is sent).
        A verdict that arrived in the same turn as the answer is read here: awaiting a done
        future does not yield, so ``_admitted`` may not have run yet."""
        if pending is None:
            return None
        try:
            self.admission = await pending
        except GatewayError as refusal:
            return refusal
        return None

    def rate_headers(self) -> dict[str, str]:
        return self.admission.headers() if self.admission is not None else {}

    def close(self, outcome: Outcome) -> None:
        if self.admission is not None:
            self.tenants.settle(self.admission, prompt_tokens=outcome.prompt_tokens,
                                completion_tokens=outcome.completion_tokens,
                                cost=outcome.cost or Decimal(0), saved=outcome.saved,
                                error=outcome.status >= 400, model=outcome.served or None,
                                tokens=outcome.tokens)
        self.tenants.access.record(
            request_id=self.request_id(), key_name=self.tenant.name, team=self.tenant.team,
            route=self.route, requested_model=self.requested,
            served_model=outcome.served or None, status=outcome.status,
            error_code=outcome.error_code, latency_ms=outcome.latency_ms,
            upstream_ms=outcome.upstream_ms, input_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens, cost=outcome.cost, cache=outcome.cache,
            attempts=outcome.attempts)
