"""Who a request is from: the client key it presents, looked up in the key store.

Apart from ``Tenants`` because it answers before anything else (intake calls it before reading
the body) and needs only the key and team stores; ``Tenants.authenticate`` is this class's
method, bound once at start-up, so a request pays no extra call frame for the split.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.errors import ErrorCode, GatewayError, unauthorized
from gateway.tenants.admission import ANONYMOUS, Tenant
from gateway.tenants.keys import hash_secret
from gateway.tenants.store import KeyStore, StoreUnavailable
from gateway.tenants.teams import TeamStore


def presented_key(headers: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <key>`` (OpenAI clients) or ``x-api-key: <key>`` (Anthropic)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class Authenticator:
    """A request's key to its ``Tenant`` (one per key record, kept while the record lasts)."""

    def __init__(self, store: KeyStore, teams: TeamStore, required: bool) -> None:
        self.store = store
        self.teams = teams
        self.required = required
        self._tenants: dict[str, Tenant] = {}

    async def authenticate(self, headers: Mapping[str, str],
                           known: Tenant | None = None) -> Tenant:
        """``known``: the tenant the intake already found for this request's key."""
        await self.teams.ready()
        if known is not None:
            return known
        if not self.required:
            return ANONYMOUS
        secret = presented_key(headers)
        if secret is None:
            raise unauthorized()
        try:
            record = await self.store.lookup(hash_secret(secret))
        except StoreUnavailable:
            raise GatewayError(ErrorCode.LIMITS_UNAVAILABLE,
                               "The key store is unreachable; retry shortly.",
                               headers={"Retry-After": "1"}) from None
        if record is None or record.revoked_at is not None:
            raise unauthorized()
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise GatewayError(ErrorCode.KEY_EXPIRED,
                               f"This API key expired at {record.expires_at.isoformat()}.")
        tenant = self._tenants.get(record.id)
        if tenant is None or tenant.record is not record:
            if len(self._tenants) > 10_000:
                self._tenants.clear()
            tenant = self._tenants[record.id] = Tenant(record.id, record.name, record.team,
                                                       record.limits, record)
        return tenant
