"""Teams as records: budgets, rate limits and allowed models that hold for all of a team's keys
together, and the team's own alert webhooks. Declared in the key file (``teams:``) or made
through the admin API (Redis when ``REDIS_URL`` is set, else the SQLite file beside the keys).

A key names its team in its ``team`` field; a team with no record only labels its keys. The
request path reads teams from memory: every worker holds all the team records (teams are few) and
reads them again every ``REFRESH_S``, so a change made on one replica holds on every replica
within that time; a change made on this one holds at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis

from gateway.tenants.buffer import STORE_ERRORS, stop_asked
from gateway.tenants.keys import KeyFileError
from gateway.tenants.sqlite import open_sqlite

REFRESH_S = 0.25
REDIS_TEAMS = "gw:tenant:teams"
MICRO = Decimal("0.000001")
TEAM_NAME = r"^[^\x00-\x1f\x7f]{1,200}$"


class TeamRecord(BaseModel):
    """One team's shared limits; ``None`` is unlimited, ``models`` empty allows every model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, pattern=TEAM_NAME)
    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget_daily_usd: Decimal | None = Field(None, ge=0)
    budget_monthly_usd: Decimal | None = Field(None, ge=0)
    alert_webhooks: list[str] = Field(default_factory=list)  # besides GATEWAY_ALERT_WEBHOOKS
    source: str = "admin"  # admin | file: only admin teams can be changed through the API

    @field_validator("budget_daily_usd", "budget_monthly_usd")
    @classmethod
    def _whole_micro_dollars(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value != value.quantize(MICRO):
            raise ValueError("budgets are counted in micro-dollars: at most 6 decimals")
        return value

    @field_validator("alert_webhooks")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.removeprefix("slack:").startswith(("http://", "https://")):
                raise ValueError("each webhook is an http(s) URL, optionally after 'slack:'")
        return value

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, glob) for glob in self.models)

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_team_file(path: Path) -> list[TeamRecord]:
    """The ``teams:`` of a key file (``GATEWAY_KEYS_FILE``), if it has one."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # ``load_key_file`` has already said what is wrong with the file
    return file_teams(raw.get("teams") if isinstance(raw, dict) else None, path)


def file_teams(raw: Any, path: Path) -> list[TeamRecord]:
    """The ``teams:`` of a key file: a mapping of team name to its limits."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: teams: must map each team's name to its limits")
    teams = []
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise KeyFileError(f"{path}: teams.{name}: must be a mapping")
        try:
            teams.append(TeamRecord.model_validate({**spec, "name": str(name),
                                                    "source": "file"}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(team)'}: "
                                 f"{err['msg']}" for err in exc.errors())
            raise KeyFileError(f"{path}: teams.{name}: {problems}") from None
    return teams


class TeamBackend(Protocol):
    async def all(self) -> list[TeamRecord]: ...
    async def save(self, record: TeamRecord) -> None: ...
    async def delete(self, name: str) -> None: ...
    async def aclose(self) -> None: ...


class RedisTeams:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def all(self) -> list[TeamRecord]:
        raw = await self._redis.hgetall(REDIS_TEAMS)
        return [TeamRecord.model_validate_json(v) for v in raw.values()]

    async def save(self, record: TeamRecord) -> None:
        await self._redis.hset(REDIS_TEAMS, record.name, record.model_dump_json())

    async def delete(self, name: str) -> None:
        await self._redis.hdel(REDIS_TEAMS, name)

    async def aclose(self) -> None:
        """The Redis client is shared and closed by its owner."""


class SqliteTeams:
    def __init__(self, path: Path) -> None:
        self._db, self._lock = open_sqlite(path)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS teams (name TEXT PRIMARY KEY, "
                             "record TEXT NOT NULL)")

    def _all(self) -> list[TeamRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM teams ORDER BY name").fetchall()
        return [TeamRecord.model_validate_json(row[0]) for row in rows]

    def _run(self, sql: str, args: tuple[str, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    async def all(self) -> list[TeamRecord]:
        return await asyncio.to_thread(self._all)

    async def save(self, record: TeamRecord) -> None:
        await asyncio.to_thread(
            self._run, "INSERT INTO teams (name, record) VALUES (?, ?) ON CONFLICT(name) "
            "DO UPDATE SET record = excluded.record", (record.name, record.model_dump_json()))

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._run, "DELETE FROM teams WHERE name = ?", (name,))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._db.close)


class TeamStore:
    """Every team record, in memory, read again from the backend every ``REFRESH_S``."""

    def __init__(self, static: list[TeamRecord], backend: TeamBackend | None) -> None:
        self._static = {t.name: t for t in static}
        self.backend = backend
        self._teams: dict[str, TeamRecord] = dict(self._static)
        self._loaded = backend is None
        self._watcher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def get(self, name: str | None) -> TeamRecord | None:
        """The team's record as last read (no I/O: this is on every request's path)."""
        return self._teams.get(name) if name else None

    async def ready(self) -> None:
        """Read the teams once before the first request needs them, then keep them fresh."""
        if self._loaded or self.backend is None:
            return
        with contextlib.suppress(*STORE_ERRORS):
            await self._reload(self.backend)
        self._loaded = True
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(self.backend))

    async def _reload(self, backend: TeamBackend) -> None:
        stored = {t.name: t for t in await backend.all()}
        merged = {**stored, **self._static}
        # keep the same record objects where nothing changed, so shapes cached on them hold
        self._teams = {name: (self._teams[name] if self._teams.get(name) == record else record)
                       for name, record in merged.items()}

    async def _watch(self, backend: TeamBackend) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), REFRESH_S)
            with contextlib.suppress(*STORE_ERRORS):
                await self._reload(backend)

    def all(self) -> list[TeamRecord]:
        return sorted(self._teams.values(), key=lambda t: t.name)

    async def save(self, record: TeamRecord) -> None:
        if self.backend is None:
            raise RuntimeError("no team store configured")
        await self.backend.save(record)
        self._teams[record.name] = record

    async def delete(self, name: str) -> None:
        if self.backend is None:
            raise RuntimeError("no team store configured")
        await self.backend.delete(name)
        self._teams.pop(name, None)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._stop.set()
            await stop_asked(self._watcher, 2.0)
        if self.backend is not None:
            await self.backend.aclose()
