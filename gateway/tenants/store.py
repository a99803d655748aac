"""Where keys live: the key file and ``GATEWAY_API_KEYS`` (read once, in memory), and keys made
through the admin API (Redis when ``REDIS_URL`` is set, else one SQLite file), behind one
lookup by hash with a short local cache.

The cache keeps a found key for ``CACHE_TTL_S`` (0.5 s), so a key revoked on one replica stops
working on every replica within that time; a key not found is never cached, so a key created on
one replica works on the others at once. Every change to any key also moves a version number
(a counter in Redis, which the limits script returns on every call; a counter row in
SQLite), which each worker also reads every ``CACHE_TTL_S / 2``: while this worker has
seen the version within the last 0.5 s and it has not moved, a cached key stays valid past its
0.5 s, so a busy key costs no lookup at all. While the store is unreachable, a key seen before
keeps its last known record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

from gateway.eventloop import running_loop
from gateway.tenants.buffer import STORE_ERRORS, stop_asked
from gateway.tenants.keys import KeyRecord
from gateway.tenants.sqlite import open_sqlite

CACHE_TTL_S = 0.5
REDIS_KEY = "gw:tenant:key:"
REDIS_HASH = "gw:tenant:hash:"
REDIS_IDS = "gw:tenant:keys"
REDIS_VERSION = "gw:tenant:keys:version"


class StoreUnavailable(Exception):
    """The key store could not be reached."""


class KeyBackend(Protocol):
    async def get(self, key_id: str) -> KeyRecord | None: ...
    async def find(self, key_sha256: str) -> tuple[KeyRecord | None, int | None]: ...
    async def version(self) -> int: ...
    async def all(self) -> list[KeyRecord]: ...
    async def save(self, record: KeyRecord, old_hash: str | None = None) -> None: ...
    async def aclose(self) -> None: ...


class RedisKeys:
    """Each record as JSON twice: under its id (the admin API) and under its hash (the one GET
    a lookup costs); and a set of ids."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._redis.get(REDIS_KEY + key_id)
        return KeyRecord.model_validate_json(raw) if raw else None

    async def find(self, key_sha256: str) -> tuple[KeyRecord | None, int | None]:
        """The record and the key version it belongs to, read together."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(REDIS_HASH + key_sha256)
            pipe.get(REDIS_VERSION)
            raw, version = await pipe.execute()
        return (KeyRecord.model_validate_json(raw) if raw else None), int(version or 0)

    async def version(self) -> int:
        return int(await self._redis.get(REDIS_VERSION) or 0)

    async def all(self) -> list[KeyRecord]:
        ids = sorted(i.decode() for i in await self._redis.smembers(REDIS_IDS))
        if not ids:
            return []
        raws = await self._redis.mget([REDIS_KEY + i for i in ids])
        return [KeyRecord.model_validate_json(raw) for raw in raws if raw]

    async def save(self, record: KeyRecord, old_hash: str | None = None) -> None:
        data = record.model_dump_json()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(REDIS_KEY + record.id, data)
            pipe.set(REDIS_HASH + record.key_sha256, data)
            pipe.sadd(REDIS_IDS, record.id)
            if old_hash and old_hash != record.key_sha256:
                pipe.delete(REDIS_HASH + old_hash)
            pipe.incr(REDIS_VERSION)
            await pipe.execute()

    async def aclose(self) -> None:
        """The Redis client is shared and closed by its owner."""


class SqliteKeys:
    """One table in a SQLite file (WAL, so every worker process can read while one writes);
    every call runs in a thread, off the event loop."""

    def __init__(self, path: Path) -> None:
        self._db, self._lock = open_sqlite(path)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, "
                             "key_sha256 TEXT NOT NULL UNIQUE, record TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS api_keys_version "
                             "(one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL)")

    def _one(self, sql: str, arg: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute(sql, (arg,)).fetchone()
        return KeyRecord.model_validate_json(row[0]) if row else None

    def _version(self) -> int:
        row = self._db.execute("SELECT version FROM api_keys_version").fetchone()
        return int(row[0]) if row else 0

    def _current_version(self) -> int:
        with self._lock:
            return self._version()

    def _find(self, key_sha256: str) -> tuple[KeyRecord | None, int]:
        with self._lock:
            version = self._version()
            row = self._db.execute("SELECT record FROM api_keys WHERE key_sha256 = ?",
                                   (key_sha256,)).fetchone()
        return (KeyRecord.model_validate_json(row[0]) if row else None), version

    async def get(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self._one, "SELECT record FROM api_keys WHERE id = ?",
                                       key_id)

    async def find(self, key_sha256: str) -> tuple[KeyRecord | None, int | None]:
        return await asyncio.to_thread(self._find, key_sha256)

    async def version(self) -> int:
        return await asyncio.to_thread(self._current_version)

    def _all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM api_keys ORDER BY id").fetchall()
        return [KeyRecord.model_validate_json(row[0]) for row in rows]

    async def all(self) -> list[KeyRecord]:
        return await asyncio.to_thread(self._all)

    def _save(self, record: KeyRecord) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO api_keys (id, key_sha256, record) VALUES (?, ?, ?) ON CONFLICT(id) "
                "DO UPDATE SET key_sha256 = excluded.key_sha256, record = excluded.record",
                (record.id, record.key_sha256, record.model_dump_json()))
            self._db.execute("INSERT INTO api_keys_version VALUES (1, 1) "
                             "ON CONFLICT(one) DO UPDATE SET version = version + 1")

    async def save(self, record: KeyRecord, old_hash: str | None = None) -> None:
        await asyncio.to_thread(self._save, record)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._db.close)


def stored_records(path: Path) -> list[KeyRecord]:
    """Every admin-made key in the SQLite file, read at once (start-up checks, before any event
    loop); none when there is no file yet."""
    if not path.exists():
        return []
    store = SqliteKeys(path)
    try:
        return store._all()
    finally:
        store._db.close()


class KeyStore:
    """Every key the gateway knows, looked up by the SHA-256 of the presented secret."""

    def __init__(self, static: list[KeyRecord], backend: KeyBackend | None) -> None:
        self._static = {r.key_sha256: r for r in static}
        self._static_ids = {r.id: r for r in static}
        self.backend = backend
        self._cache: dict[str, tuple[float, KeyRecord, int | None]] = {}
        self._version: int | None = None
        self._version_at = float("-inf")
        self._watcher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._finding: dict[str, asyncio.Future[tuple[KeyRecord | None, int | None]]] = {}

    def saw_version(self, version: int) -> None:
        """The key version as just read: by the limits script (on every call, so a change is
        seen by the next admission) or by the watcher (every half TTL, for keys without
        limits and for SQLite)."""
        self._version, self._version_at = version, time.monotonic()

    @property
    def static_records(self) -> list[KeyRecord]:
        return list(self._static_ids.values())

    async def _watch(self, backend: KeyBackend) -> None:
        """Reads the key version every half TTL, so cached keys stay valid while no key
        changes, whatever else the worker does (a key without limits calls no script)."""
        while not self._stop.is_set():
            with contextlib.suppress(*STORE_ERRORS):
                self.saw_version(await backend.version())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CACHE_TTL_S / 2)

    async def lookup(self, key_sha256: str) -> KeyRecord | None:
        found = self._static.get(key_sha256)
        if found is not None or self.backend is None:
            return found
        if self._watcher is None:
            self._watcher = running_loop().create_task(self._watch(self.backend))
        now = time.monotonic()
        cached = self._cache.get(key_sha256)
        if cached is not None and (cached[0] > now or (
                cached[2] is not None and cached[2] == self._version
                and now - self._version_at < CACHE_TTL_S)):
            return cached[1]
        finding = self._finding.get(key_sha256)
        if finding is None:  # one lookup per key at a time, however many requests wait on it
            finding = self._finding[key_sha256] = running_loop().create_task(
                self.backend.find(key_sha256))
            finding.add_done_callback(lambda _: self._finding.pop(key_sha256, None))
        try:
            record, version = await asyncio.shield(finding)
        except STORE_ERRORS as exc:  # the store is down: a key seen before keeps working
            if cached is not None:
                return cached[1]
            raise StoreUnavailable(type(exc).__name__) from None
        if record is None:
            self._cache.pop(key_sha256, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_sha256] = (now + CACHE_TTL_S, record, version)
        return record

    async def get(self, key_id: str) -> KeyRecord | None:
        found = self._static_ids.get(key_id)
        if found is not None or self.backend is None:
            return found
        return await self.backend.get(key_id)

    async def all(self) -> list[KeyRecord]:
        stored = await self.backend.all() if self.backend is not None else []
        return [*self._static_ids.values(), *stored]

    async def save(self, record: KeyRecord, old_hash: str | None = None) -> None:
        if self.backend is None:
            raise StoreUnavailable("no key store configured")
        await self.backend.save(record, old_hash)
        self._cache.pop(record.key_sha256, None)
        if old_hash:
            self._cache.pop(old_hash, None)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._stop.set()
            await stop_asked(self._watcher, 2.0)
        if self.backend is not None:
            await self.backend.aclose()
