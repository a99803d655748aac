"""Who spent what: per key × model × end user × UTC day, requests, errors, input and output
tokens (the cached, cache-written and reasoning ones among them counted apart too), cost and what
the cache saved, in integer micro-dollars.

Redis (``REDIS_URL``): one hash per cell (``gw:ledger:<day>:<key>:<model>[:<end user>]``,
HINCRBY) and one set per day naming its cells. Else SQLite (one row per cell, upserted). Writes go
through a MergeBuffer: never on the client's path, retried while the store is down, bounded.

End users are bounded where the cells are written, so every replica sees the same bound: a key
keeps at most ``max_end_users`` distinct end users a day; a request from any further one is
counted under ``OTHER_END_USERS``. A client that sends a new ``user`` on every request therefore
adds at most that many cells a key a day, and the per-user rows still sum to the key's total.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

import orjson
from redis.asyncio import Redis

from gateway.tenants.buffer import Batch, MergeBuffer
from gateway.tenants.sqlite import open_sqlite

COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cost_micros", "saved_micros",
          "cached_tokens", "cache_write_tokens", "reasoning_tokens")
TOKEN_DETAILS = COUNTS[6:]  # shown apart; already counted in input_tokens / output_tokens
CELL = "gw:ledger:"
OTHER_END_USERS = "(other)"
END_USERS = "gw:ledger:users:"  # per day and key: the set of its end users kept apart
MAX_END_USER_CHARS = 64
WRITE_INTERVAL_S = 0.1  # the ledger is read by people, not by the next request

# ARGV[1]: a JSON list of cells, each [cell hash, its day's index set, team, index member,
# counts..., end user, the key's end-user set, the overflow cell's hash, its index member];
# ARGV[2]: the most end users a key keeps apart a day; ARGV[3]: the counts' names; ARGV[4]: the
# batch's own key, so that a batch sent again after a write whose reply was lost (it may have
# landed) is applied once. One command for a whole batch, its arguments encoded in one
# ``orjson.dumps``. The names are made here, in Python, so the script cannot disagree with
# ``query`` about them; the script only picks the overflow cell when the key already has its
# fill of other end users today.
WRITE_LUA = """
if not redis.call('SET', ARGV[4], '1', 'NX', 'EX', 172800) then return 0 end
local fields = cjson.decode(ARGV[3])
local n = #fields
local max_users = tonumber(ARGV[2])
local cells = cjson.decode(ARGV[1])
for i = 1, #cells do
  local c = cells[i]
  local cell, member = c[1], c[4]
  local user = c[5 + n]
  if user ~= '' then
    local users = c[6 + n]
    if redis.call('SISMEMBER', users, user) == 0 then
      if redis.call('SCARD', users) < max_users then
        redis.call('SADD', users, user)
        redis.call('EXPIRE', users, 40 * 86400)
      else
        cell, member = c[7 + n], c[8 + n]
      end
    end
  end
  redis.call('HSET', cell, 'team', c[3])
  redis.call('SADD', c[2], member)
  for f = 1, n do
    local v = c[4 + f]
    if v ~= 0 then redis.call('HINCRBY', cell, fields[f], string.format('%d', v)) end
  end
end
return #cells
"""
DAY_INDEX = "gw:ledger:days:"
BATCH = "gw:ledger:batch:"

Cell = tuple[str, str, str, str, str]  # (day YYYY-MM-DD, key id, team, model, end user or "")


def end_user_label(value: object) -> str:
    """What the ledger files an end user under: its first ``MAX_END_USER_CHARS`` printable
    characters ("" for none)."""
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value[:MAX_END_USER_CHARS] if ch.isprintable()).strip()


class GroupBy(StrEnum):
    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    DAY = "day"
    USER = "user"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: date
    end: date  # inclusive
    key: str | None = None
    team: str | None = None
    model: str | None = None
    group_by: tuple[GroupBy, ...] = (GroupBy.KEY, GroupBy.MODEL, GroupBy.DAY)
    user: str | None = None

    def days(self) -> list[str]:
        return [(self.start + timedelta(days=i)).isoformat()
                for i in range((self.end - self.start).days + 1)]

    def matches(self, key: str, team: str, model: str, user: str = "") -> bool:
        return ((self.key is None or key == self.key) and (self.team is None or team == self.team)
                and (self.model is None or model == self.model)
                and (self.user is None or user == self.user))


Row = dict[str, object]


def summarise(query: UsageQuery, cells: Iterable[tuple[Cell, list[int]]]) -> list[Row]:
    """Group cells as asked; money as exact decimal strings."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for (day, key, team, model, user), counts in cells:
        if not query.matches(key, team, model, user):
            continue
        values = {GroupBy.DAY: day, GroupBy.KEY: key, GroupBy.TEAM: team, GroupBy.MODEL: model,
                  GroupBy.USER: user}
        label = tuple(values[g] for g in query.group_by)
        total = groups.setdefault(label, [0] * len(COUNTS))
        for i, count in enumerate(counts):
            total[i] += count
    rows: list[Row] = []
    for label in sorted(groups):
        counts = groups[label]
        row: Row = {g.value: v for g, v in zip(query.group_by, label, strict=True)}
        row.update(zip(COUNTS[:4], counts[:4], strict=True))
        row.update(zip(TOKEN_DETAILS, counts[6:], strict=True))
        row["cost_usd"] = f"{Decimal(counts[4]).scaleb(-6):f}"
        row["saved_usd"] = f"{Decimal(counts[5]).scaleb(-6):f}"
        rows.append(row)
    return rows


def to_csv(query: UsageQuery, rows: list[Row]) -> str:
    out = io.StringIO()
    fields = ([g.value for g in query.group_by] + list(COUNTS[:4]) + list(TOKEN_DETAILS)
              + ["cost_usd", "saved_usd"])  # the money last, where it always was
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # A spreadsheet would run a cell starting with = + - @ as a formula.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v and v[0] in "=+-@" else v)
                         for k, v in row.items()})
    return out.getvalue()


def _cell_name(day: str, key: str, model: str, user: str) -> tuple[str, str]:
    """A cell's hash and its member in the day's index (cells without an end user keep the
    names they had before end users were counted)."""
    if not user:
        return f"{CELL}{day}:{key}:{model}", orjson.dumps([key, model]).decode()
    return f"{CELL}{day}:{key}:{model}:{user}", orjson.dumps([key, model, user]).decode()


class RedisLedger:
    def __init__(self, redis: Redis, on_drop: Callable[[], None] | None = None,
                 max_end_users: int = 1000) -> None:
        self._redis = redis
        self.max_end_users = max_end_users
        self._script = redis.register_script(WRITE_LUA)
        self.buffer: MergeBuffer[Cell] = MergeBuffer(self._write, name="ledger", on_drop=on_drop,
                                                min_interval_s=WRITE_INTERVAL_S,
                                                resend_unchanged=True)

    def add(self, cell: Cell, counts: list[int]) -> None:
        self.buffer.add(cell, counts)

    async def _write(self, batch: dict[Cell, list[int]]) -> None:
        cells = []
        for (day, key, team, model, user), counts in batch.items():
            cell, member = _cell_name(day, key, model, user)
            other, other_member = _cell_name(day, key, model, OTHER_END_USERS)
            cells.append([cell, DAY_INDEX + day, team, member, *counts, user,
                          f"{END_USERS}{day}:{key}", other, other_member])
        batch_id = batch.id if isinstance(batch, Batch) else secrets.token_hex(8)
        await self._script(args=[orjson.dumps(cells), self.max_end_users,
                                 orjson.dumps(COUNTS), BATCH + batch_id])

    async def query(self, query: UsageQuery) -> list[Row]:
        days = query.days()
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.smembers(DAY_INDEX + day)
            members = await pipe.execute()
        names: list[tuple[str, str, str, str]] = []
        for day, found in zip(days, members, strict=True):
            for member in found:
                key, model, *rest = orjson.loads(member)
                user = rest[0] if rest else ""
                if (query.key is None or key == query.key) and (
                        query.model is None or model == query.model) and (
                        query.user is None or user == query.user):
                    names.append((day, key, model, user))
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for day, key, model, user in names:
                pipe.hgetall(_cell_name(day, key, model, user)[0])
            hashes = await pipe.execute()
        cells = []
        for (day, key, model, user), data in zip(names, hashes, strict=True):
            team = data.get(b"team", b"").decode()
            cells.append(((day, key, team, model, user),
                          [int(data.get(f.encode(), 0)) for f in COUNTS]))
        return summarise(query, cells)

    async def aclose(self) -> None:
        await self.buffer.aclose()


LEDGER_TABLE = ("CREATE TABLE IF NOT EXISTS ledger (day TEXT, key_id TEXT, team TEXT, model TEXT, "
                + "end_user TEXT NOT NULL DEFAULT '', "
                + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTS)
                + ", PRIMARY KEY (day, key_id, model, end_user))")


def _migrate(db: sqlite3.Connection) -> None:
    """A ledger written before end users and the cache's token counts: its rows moved into
    today's table, in one transaction, before anything else touches it."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(ledger)")]
    if not columns or "end_user" in columns:
        return
    kept = ", ".join(c for c in ("day", "key_id", "team", "model", *COUNTS) if c in columns)
    db.execute("BEGIN")
    try:
        db.execute("ALTER TABLE ledger RENAME TO ledger_before_end_users")
        db.execute(LEDGER_TABLE)
        db.execute(f"INSERT INTO ledger ({kept}) SELECT {kept} FROM ledger_before_end_users")
        db.execute("DROP TABLE ledger_before_end_users")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SqliteLedger:
    def __init__(self, path: Path, on_drop: Callable[[], None] | None = None,
                 max_end_users: int = 1000) -> None:
        self.max_end_users = max_end_users
        self._db, self._lock = open_sqlite(path, sync_every_commit=False)
        with self._lock:
            _migrate(self._db)
            self._db.execute(LEDGER_TABLE)
        self.buffer: MergeBuffer[Cell] = MergeBuffer(self._write, name="ledger", on_drop=on_drop,
                                                min_interval_s=WRITE_INTERVAL_S)

    def add(self, cell: Cell, counts: list[int]) -> None:
        self.buffer.add(cell, counts)

    def _upsert(self, batch: dict[Cell, list[int]]) -> None:
        updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
        sql = (f"INSERT INTO ledger (day, key_id, team, model, end_user, {', '.join(COUNTS)}) "
               f"VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(COUNTS))}) "
               f"ON CONFLICT (day, key_id, model, end_user) DO UPDATE SET team = excluded.team, "
               f"{updates}")
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for cell, counts in batch.items():  # one by one: each sees the end users before
                    self._db.execute(sql, (*self._bounded(cell), *counts))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _bounded(self, cell: Cell) -> Cell:
        """The cell itself, or its key's overflow cell once the key has its fill of end users
        today (inside the write's transaction)."""
        day, key, team, model, user = cell
        if not user:
            return cell
        known = self._db.execute(
            "SELECT 1 FROM ledger WHERE day = ? AND key_id = ? AND end_user = ? LIMIT 1",
            (day, key, user)).fetchone()
        if known is None:
            count = self._db.execute(
                "SELECT COUNT(DISTINCT end_user) FROM ledger WHERE day = ? AND key_id = ? "
                "AND end_user NOT IN ('', ?)", (day, key, OTHER_END_USERS)).fetchone()[0]
            if count >= self.max_end_users:
                return (day, key, team, model, OTHER_END_USERS)
        return cell

    async def _write(self, batch: dict[Cell, list[int]]) -> None:
        await asyncio.to_thread(self._upsert, batch)

    def _select(self, query: UsageQuery) -> list[tuple[Cell, list[int]]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT day, key_id, team, model, end_user, {', '.join(COUNTS)} FROM ledger "
                "WHERE day >= ? AND day <= ?", (query.start.isoformat(), query.end.isoformat()),
            ).fetchall()
        return [((r[0], r[1], r[2], r[3], r[4]), list(r[5:])) for r in rows]

    async def query(self, query: UsageQuery) -> list[Row]:
        return summarise(query, await asyncio.to_thread(self._select, query))

    def spend(self, today: str, month_start: str,
              by: str = "key_id") -> dict[tuple[str, ...], tuple[int, int]]:
        """Spend in micro-dollars (today, this month) grouped ``by`` one of ``key_id``, ``team``
        or ``key_id, end_user``, for the budgets' counters at start-up. Days are ISO dates,
        ``month_start`` the month's first."""
        if by not in ("key_id", "team", "key_id, end_user"):
            raise ValueError(by)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {by}, SUM(CASE WHEN day = ? THEN cost_micros ELSE 0 END), "
                f"SUM(cost_micros) FROM ledger WHERE day >= ? AND day <= ? GROUP BY {by}",
                (today, month_start, today)).fetchall()
        return {tuple(r[:-2]): (int(r[-2]), int(r[-1])) for r in rows}

    async def aclose(self) -> None:
        await self.buffer.aclose()
        await asyncio.to_thread(self._db.close)


Ledger = RedisLedger | SqliteLedger
