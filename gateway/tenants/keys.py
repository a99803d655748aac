"""What a client key is: its record (only the SHA-256 of the secret is ever kept), the secrets
themselves, and the YAML key file (``GATEWAY_KEYS_FILE``) that declares keys up front.
"""

from __future__ import annotations

import secrets
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.digest import sha256

SECRET_PREFIX = "gk-"
MICRO = Decimal("0.000001")


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file, the entry and the field."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """What lists and logs may show of a secret: ``gk-3fa…``."""
    return secret[:6] + "…"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def _printable(value: str, field: str) -> str:
    """Names end up in JSON log lines and pages: control characters would break them."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError(f"{field} must not contain control characters")
    return value


class ModelLimit(BaseModel):
    """Per key × model limits, for the models matching one glob."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


class KeyLimits(BaseModel):
    """What a key may do. ``None`` is unlimited; ``models`` empty allows every model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_parallel: int | None = Field(None, ge=1)
    budget_daily_usd: Decimal | None = Field(None, ge=0)
    budget_monthly_usd: Decimal | None = Field(None, ge=0)
    model_limits: dict[str, ModelLimit] = Field(default_factory=dict)
    # Each end user of the key (OpenAI ``user``, Anthropic ``metadata.user_id``, or the header
    # the operator names) on its own: a request without an end user is not held to these.
    end_user_rpm: int | None = Field(None, ge=1)
    end_user_budget_daily_usd: Decimal | None = Field(None, ge=0)
    end_user_budget_monthly_usd: Decimal | None = Field(None, ge=0)

    @field_validator("budget_daily_usd", "budget_monthly_usd", "end_user_budget_daily_usd",
                     "end_user_budget_monthly_usd")
    @classmethod
    def _whole_micro_dollars(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value != value.quantize(MICRO):
            raise ValueError("budgets are counted in micro-dollars: at most 6 decimals")
        return value

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, glob) for glob in self.models)

    def for_model(self, model: str) -> ModelLimit | None:
        """The first per-model limit whose glob matches (in the order they were declared)."""
        for glob, limit in self.model_limits.items():
            if fnmatchcase(model, glob):
                return limit
        return None

    @property
    def end_user_limited(self) -> bool:
        return (self.end_user_rpm is not None or self.end_user_budget_daily_usd is not None
                or self.end_user_budget_monthly_usd is not None)

    @property
    def empty(self) -> bool:
        return (self.rpm is None and self.tpm is None and self.max_parallel is None
                and self.budget_daily_usd is None and self.budget_monthly_usd is None
                and not self.model_limits and not self.end_user_limited)


class KeyRecord(BaseModel):
    """A key as stored (key file, Redis, SQLite): never the secret, only its hash."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = Field(min_length=1, max_length=200)
    team: str | None = Field(None, max_length=200)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str = ""
    limits: KeyLimits = Field(default_factory=KeyLimits)
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    revoked_at: datetime | None = None
    source: str = "admin"  # admin | file | env: only admin keys can be changed through the API

    @field_validator("name", "team")
    @classmethod
    def _printable_names(cls, value: str | None) -> str | None:
        return value if value is None else _printable(value, "names")

    @field_validator("expires_at", "created_at", "revoked_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash, with the limits inline."""
        data = self.model_dump(mode="json", exclude={"key_sha256", "limits"})
        return {**data, **self.limits.model_dump(mode="json")}


def load_key_file(path: Path) -> list[KeyRecord]:
    """Read and validate a key file: a YAML list of key records (``key_sha256``, not secrets,
    so the file is safe to commit). Every problem is one KeyFileError naming file, entry, field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and ("keys" in raw or "teams" in raw):
        raw = raw.get("keys") or []  # ``teams:`` is read by ``teams.load_team_file``
    if not isinstance(raw, list):
        raise KeyFileError(f"{path}: the key file must be a list of keys (or a 'keys' list)")
    records: list[KeyRecord] = []
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    for index, entry in enumerate(raw):
        label = f"entry {index}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']!r})"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{path}: {label}: must be a mapping")
        entry = dict(entry)
        if isinstance(entry.get("key_sha256"), str):  # a stable id: the ledger and cache use it
            entry.setdefault("id", "file_" + entry["key_sha256"][:16])
        entry["source"] = "file"
        limits = {k: entry.pop(k) for k in list(entry) if k in KeyLimits.model_fields}
        entry["limits"] = {**limits, **(entry.get("limits") or {})}
        try:
            record = KeyRecord.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'] if p != 'limits') or '(entry)'}: "
                f"{err['msg']}" for err in exc.errors())
            raise KeyFileError(f"{path}: {label}: {problems}") from None
        if record.key_sha256 in seen_hashes:
            raise KeyFileError(f"{path}: {label}: key_sha256: the same key appears twice")
        if record.id in seen_ids:
            raise KeyFileError(f"{path}: {label}: id: {record.id!r} appears twice")
        seen_ids.add(record.id)
        seen_hashes.add(record.key_sha256)
        records.append(record)
    return records


def env_keys(secrets_: tuple[bytes, ...]) -> list[KeyRecord]:
    """``GATEWAY_API_KEYS``: plain keys with no limits. The id comes from the key's hash, not its
    position, so reordering or replacing keys never hands one key's cache or ledger to another."""
    records = []
    for i, raw in enumerate(secrets_):
        digest = hash_secret(raw.decode())
        records.append(KeyRecord(id="env_" + digest[:16], name=f"GATEWAY_API_KEYS[{i}]",
                                 key_sha256=digest, prefix=display_prefix(raw.decode()),
                                 source="env"))
    return records
