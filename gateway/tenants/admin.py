"""Key and team administration, and usage queries: what the admin API and the dashboard call.

Apart from ``Tenants`` because none of it is on the request path: it reads and writes the same
key store, team store and ledger, but only when an operator (or a key reading its own usage)
asks.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.errors import ErrorCode, GatewayError
from gateway.settings import Settings
from gateway.tenants.keys import (
    KeyLimits,
    KeyRecord,
    display_prefix,
    hash_secret,
    new_key_id,
    new_secret,
)
from gateway.tenants.ledger import Ledger, Row, UsageQuery
from gateway.tenants.store import KeyStore
from gateway.tenants.teams import TeamRecord, TeamStore


class TenantAdmin:
    """Keys (create, read, change, revoke, rotate), teams (create, read, change, delete) and the
    ledger's usage rows; ``is_admin`` checks the admin key."""

    def __init__(self, settings: Settings, store: KeyStore, teams: TeamStore,
                 ledger: Ledger) -> None:
        self.settings = settings
        self.store = store
        self.teams = teams
        self.ledger = ledger
        self._admin = settings.admin_key.get_secret_value().encode() if settings.admin_key else b""

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        """The admin key, as ``Authorization: Bearer``, compared in constant time."""
        if not self._admin:
            return False
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  self._admin)

    async def create_key(self, name: str, team: str | None, limits: KeyLimits,
                         expires_at: datetime | None, metadata: dict[str, Any],
                         key_id: str | None = None) -> tuple[KeyRecord, str]:
        secret = new_secret()
        record = KeyRecord(id=key_id or new_key_id(), name=name, team=team,
                           key_sha256=hash_secret(secret), prefix=display_prefix(secret),
                           limits=limits, expires_at=expires_at, metadata=metadata)
        if await self.store.get(record.id) is not None:
            raise GatewayError(ErrorCode.INVALID_VALUE, f"A key with id {record.id!r} exists.",
                               param="id")
        await self.store.save(record)
        return record, secret

    async def key(self, key_id: str) -> KeyRecord:
        record = await self.store.get(key_id)
        if record is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"No key with id {key_id!r}.")
        return record

    async def _mutable(self, key_id: str) -> KeyRecord:
        record = await self.key(key_id)
        if record.source != "admin":
            raise GatewayError(ErrorCode.KEY_IMMUTABLE,
                               f"Key {key_id!r} comes from the {record.source} configuration; "
                               "change it there.")
        return record

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord:
        record = await self._mutable(key_id)
        data = record.model_dump()
        limits = {**data["limits"], **changes.pop("limits", {})}
        updated = KeyRecord.model_validate({**data, **changes, "limits": limits})
        await self.store.save(updated)
        return updated

    async def revoke_key(self, key_id: str) -> KeyRecord:
        record = await self._mutable(key_id)
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": datetime.now(UTC)})
            await self.store.save(record)
        return record

    async def rotate_key(self, key_id: str) -> tuple[KeyRecord, str]:
        record = await self._mutable(key_id)
        if record.revoked_at is not None:
            raise GatewayError(ErrorCode.INVALID_VALUE, f"Key {key_id!r} is revoked.")
        secret = new_secret()
        rotated = record.model_copy(update={"key_sha256": hash_secret(secret),
                                            "prefix": display_prefix(secret)})
        await self.store.save(rotated, old_hash=record.key_sha256)
        return rotated, secret

    async def keys(self) -> list[KeyRecord]:
        return await self.store.all()

    async def team_records(self) -> list[TeamRecord]:
        await self.teams.ready()
        return self.teams.all()

    async def team(self, name: str) -> TeamRecord:
        await self.teams.ready()
        record = self.teams.get(name)
        if record is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"No team named {name!r}.")
        return record

    async def save_team(self, record: TeamRecord, *, new: bool) -> TeamRecord:
        """Create (``new``) or replace an admin-made team."""
        await self.teams.ready()
        existing = self.teams.get(record.name)
        if existing is not None and existing.source != "admin":
            raise GatewayError(ErrorCode.KEY_IMMUTABLE,
                               f"Team {record.name!r} comes from the key file; change it there.")
        if new and existing is not None:
            raise GatewayError(ErrorCode.INVALID_VALUE, f"A team named {record.name!r} exists.",
                               param="name")
        await self.teams.save(record)
        return record

    async def delete_team(self, name: str) -> TeamRecord:
        record = await self.team(name)
        if record.source != "admin":
            raise GatewayError(ErrorCode.KEY_IMMUTABLE,
                               f"Team {name!r} comes from the key file; change it there.")
        await self.teams.delete(name)
        return record

    async def usage(self, query: UsageQuery) -> list[Row]:
        return await self.ledger.query(query)

