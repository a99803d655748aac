"""Who spent what: per key × model × UTC day, requests, errors, input and output tokens, cost
and what the cache saved, in integer micro-dollars.

Redis (``REDIS_URL``): one hash per cell (``gw:ledger:<day>:<key>:<model>``, HINCRBY) and one
set per day naming its cells. Else SQLite (one row per cell, upserted). Writes go through a
MergeBuffer: never on the client's path, retried while the store is down, bounded.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

import orjson
from redis.asyncio import Redis

from gateway.tenants.buffer import Batch, MergeBuffer

COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cost_micros", "saved_micros")
CELL = "gw:ledger:"
WRITE_INTERVAL_S = 0.1  # the ledger is read by people, not by the next request

# ARGV[1]: a JSON list of cells, each [cell hash, its day's index set, team, index member, six
# counts]: one command for a whole batch, its arguments encoded in one ``orjson.dumps`` (redis-py
# encodes each argument of a command in Python, ten per cell). The names are made here, in
# Python, so the script cannot disagree with ``query`` about them. ARGV[2]: the batch's own key;
# a batch sent again after a write whose reply was lost (it may have landed) is applied once.
WRITE_LUA = """
if not redis.call('SET', ARGV[2], '1', 'NX', 'EX', 172800) then return 0 end
local fields = {'requests', 'errors', 'input_tokens', 'output_tokens', 'cost_micros',
                'saved_micros'}
local cells = cjson.decode(ARGV[1])
for i = 1, #cells do
  local c = cells[i]
  redis.call('HSET', c[1], 'team', c[3])
  redis.call('SADD', c[2], c[4])
  for f = 1, 6 do
    local v = c[4 + f]
    if v ~= 0 then redis.call('HINCRBY', c[1], fields[f], string.format('%d', v)) end
  end
end
return #cells
"""
DAY_INDEX = "gw:ledger:days:"
BATCH = "gw:ledger:batch:"

Cell = tuple[str, str, str, str]  # (day YYYY-MM-DD, key id, team, model)


class GroupBy(StrEnum):
    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: date
    end: date  # inclusive
    key: str | None = None
    team: str | None = None
    model: str | None = None
    group_by: tuple[GroupBy, ...] = (GroupBy.KEY, GroupBy.MODEL, GroupBy.DAY)

    def days(self) -> list[str]:
        return [(self.start + timedelta(days=i)).isoformat()
                for i in range((self.end - self.start).days + 1)]

    def matches(self, key: str, team: str, model: str) -> bool:
        return ((self.key is None or key == self.key) and (self.team is None or team == self.team)
                and (self.model is None or model == self.model))


Row = dict[str, object]


def summarise(query: UsageQuery, cells: Iterable[tuple[Cell, list[int]]]) -> list[Row]:
    """Group cells as asked; money as exact decimal strings."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for (day, key, team, model), counts in cells:
        if not query.matches(key, team, model):
            continue
        values = {GroupBy.DAY: day, GroupBy.KEY: key, GroupBy.TEAM: team, GroupBy.MODEL: model}
        label = tuple(values[g] for g in query.group_by)
        total = groups.setdefault(label, [0] * len(COUNTS))
        for i, count in enumerate(counts):
            total[i] += count
    rows: list[Row] = []
    for label in sorted(groups):
        counts = groups[label]
        row: Row = {g.value: v for g, v in zip(query.group_by, label, strict=True)}
        row.update(zip(COUNTS[:4], counts[:4], strict=True))
        row["cost_usd"] = f"{Decimal(counts[4]).scaleb(-6):f}"
        row["saved_usd"] = f"{Decimal(counts[5]).scaleb(-6):f}"
        rows.append(row)
    return rows


def to_csv(query: UsageQuery, rows: list[Row]) -> str:
    out = io.StringIO()
    fields = [g.value for g in query.group_by] + list(COUNTS[:4]) + ["cost_usd", "saved_usd"]
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # A spreadsheet would run a cell starting with = + - @ as a formula.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v and v[0] in "=+-@" else v)
                         for k, v in row.items()})
    return out.getvalue()


class RedisLedger:
    def __init__(self, redis: Redis, on_drop: Callable[[], None] | None = None) -> None:
        self._redis = redis
        self._script = redis.register_script(WRITE_LUA)
        self.buffer: MergeBuffer[Cell] = MergeBuffer(self._write, name="ledger", on_drop=on_drop,
                                                min_interval_s=WRITE_INTERVAL_S,
                                                resend_unchanged=True)

    def add(self, cell: Cell, counts: list[int]) -> None:
        self.buffer.add(cell, counts)

    async def _write(self, batch: dict[Cell, list[int]]) -> None:
        cells = [[f"{CELL}{day}:{key}:{model}", DAY_INDEX + day, team,
                  orjson.dumps([key, model]).decode(), *counts]
                 for (day, key, team, model), counts in batch.items()]
        batch_id = batch.id if isinstance(batch, Batch) else secrets.token_hex(8)
        await self._script(args=[orjson.dumps(cells), BATCH + batch_id])

    async def query(self, query: UsageQuery) -> list[Row]:
        days = query.days()
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.smembers(DAY_INDEX + day)
            members = await pipe.execute()
        names: list[tuple[str, str, str]] = []
        for day, found in zip(days, members, strict=True):
            for member in found:
                key, model = orjson.loads(member)
                if (query.key is None or key == query.key) and (
                        query.model is None or model == query.model):
                    names.append((day, key, model))
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for day, key, model in names:
                pipe.hgetall(f"{CELL}{day}:{key}:{model}")
            hashes = await pipe.execute()
        cells = []
        for (day, key, model), data in zip(names, hashes, strict=True):
            team = data.get(b"team", b"").decode()
            cells.append(((day, key, team, model),
                          [int(data.get(f.encode(), 0)) for f in COUNTS]))
        return summarise(query, cells)

    async def aclose(self) -> None:
        await self.buffer.aclose()


class SqliteLedger:
    def __init__(self, path: Path, on_drop: Callable[[], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ledger (day TEXT, key_id TEXT, team TEXT, model TEXT, "
                + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTS)
                + ", PRIMARY KEY (day, key_id, model))")
        self.buffer: MergeBuffer[Cell] = MergeBuffer(self._write, name="ledger", on_drop=on_drop,
                                                min_interval_s=WRITE_INTERVAL_S)

    def add(self, cell: Cell, counts: list[int]) -> None:
        self.buffer.add(cell, counts)

    def _upsert(self, batch: dict[Cell, list[int]]) -> None:
        updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
        sql = (f"INSERT INTO ledger (day, key_id, team, model, {', '.join(COUNTS)}) "
               f"VALUES (?, ?, ?, ?, {', '.join('?' * len(COUNTS))}) "
               f"ON CONFLICT (day, key_id, model) DO UPDATE SET team = excluded.team, {updates}")
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, [(*cell, *counts) for cell, counts in batch.items()])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def _write(self, batch: dict[Cell, list[int]]) -> None:
        await asyncio.to_thread(self._upsert, batch)

    def _select(self, query: UsageQuery) -> list[tuple[Cell, list[int]]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT day, key_id, team, model, {', '.join(COUNTS)} FROM ledger "
                "WHERE day >= ? AND day <= ?", (query.start.isoformat(), query.end.isoformat()),
            ).fetchall()
        return [((r[0], r[1], r[2], r[3]), list(r[4:])) for r in rows]

    async def query(self, query: UsageQuery) -> list[Row]:
        return summarise(query, await asyncio.to_thread(self._select, query))

    def spend(self, today: str, month_start: str) -> dict[str, tuple[int, int]]:
        """Each key's spend in micro-dollars (today, this month), for the budgets' counters at
        start-up. Days are ISO dates, ``month_start`` the month's first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, SUM(CASE WHEN day = ? THEN cost_micros ELSE 0 END), "
                "SUM(cost_micros) FROM ledger WHERE day >= ? AND day <= ? GROUP BY key_id",
                (today, month_start, today)).fetchall()
        return {key_id: (int(day), int(month)) for key_id, day, month in rows}

    async def aclose(self) -> None:
        await self.buffer.aclose()
        await asyncio.to_thread(self._db.close)


Ledger = RedisLedger | SqliteLedger
