"""The ledger (Redis and SQLite), its write buffer, the key file and the access log."""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.observability.accesslog import RING_SIZE, AccessLog
from gateway.tenants.buffer import MergeBuffer
from gateway.tenants.keys import KeyFileError, hash_secret, load_key_file
from gateway.tenants.ledger import GroupBy, RedisLedger, SqliteLedger, UsageQuery, to_csv
from loadtest.harness import RedisServer

DAY1, DAY2 = "2026-11-24", "2026-11-25"
CELLS = [
    ((DAY1, "k1", "red", "gpt-4.1", ""), [1, 0, 10, 20, 1_000_001, 0, 4, 0, 3]),
    ((DAY1, "k1", "red", "gpt-4.1", ""), [1, 1, 5, 0, 0, 0, 0, 0, 0]),
    ((DAY2, "k1", "red", "deepseek-v3.2", ""), [2, 0, 7, 7, 3, 500, 0, 2, 0]),
    ((DAY2, "k2", "blue", "gpt-4.1", ""), [1, 0, 1, 1, 999_999, 0, 0, 0, 0]),
]
NO_DETAILS = {"cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}


async def fill(ledger: RedisLedger | SqliteLedger) -> None:
    for cell, counts in CELLS:
        ledger.add(cell, counts)
    await ledger.buffer.flush()


def query(**kw: object) -> UsageQuery:
    return UsageQuery(date.fromisoformat(DAY1), date.fromisoformat(DAY2), **kw)  # type: ignore[arg-type]


async def check_sums(ledger: RedisLedger | SqliteLedger) -> None:
    await fill(ledger)
    by_key = await ledger.query(query(group_by=(GroupBy.KEY,)))
    assert by_key == [
        {"key": "k1", "requests": 4, "errors": 1, "input_tokens": 22, "output_tokens": 27,
         "cost_usd": "1.000004", "saved_usd": "0.000500", "cached_tokens": 4,
         "cache_write_tokens": 2, "reasoning_tokens": 3},
        {"key": "k2", "requests": 1, "errors": 0, "input_tokens": 1, "output_tokens": 1,
         "cost_usd": "0.999999", "saved_usd": "0.000000", **NO_DETAILS},
    ]
    total = await ledger.query(query(group_by=()))
    assert total[0]["cost_usd"] == "2.000003" and total[0]["requests"] == 5
    red = await ledger.query(query(team="red", group_by=(GroupBy.DAY, GroupBy.MODEL)))
    assert [(r["day"], r["model"], r["requests"]) for r in red] == [
        (DAY1, "gpt-4.1", 2), (DAY2, "deepseek-v3.2", 2)]
    one_day = await ledger.query(UsageQuery(date.fromisoformat(DAY2), date.fromisoformat(DAY2),
                                            model="gpt-4.1", group_by=(GroupBy.TEAM,)))
    assert one_day == [{"team": "blue", "requests": 1, "errors": 0, "input_tokens": 1,
                        "output_tokens": 1, "cost_usd": "0.999999", "saved_usd": "0.000000",
                        **NO_DETAILS}]


async def test_redis_ledger_sums_exactly_and_groups_by_any_column(
        redis_server: RedisServer) -> None:
    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
        ledger = RedisLedger(redis)
        await check_sums(ledger)
        await ledger.aclose()


async def test_sqlite_ledger_sums_exactly_and_groups_by_any_column(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "t.db")
    await check_sums(ledger)
    await ledger.aclose()
    reopened = SqliteLedger(tmp_path / "t.db")  # and it is still there after a restart
    assert (await reopened.query(query(group_by=())))[0]["cost_usd"] == "2.000003"
    await reopened.aclose()


def test_csv_has_a_header_and_defuses_formulas() -> None:
    q = query(group_by=(GroupBy.KEY,))
    text = to_csv(q, [{"key": "=cmd()", "requests": 1, "errors": 0, "input_tokens": 1,
                       "output_tokens": 2, "cost_usd": "0.000001", "saved_usd": "0.000000",
                       **NO_DETAILS}])
    assert text.splitlines() == [
        "key,requests,errors,input_tokens,output_tokens,cached_tokens,cache_write_tokens,"
        "reasoning_tokens,cost_usd,saved_usd",
        "'=cmd(),1,0,1,2,0,0,0,0.000001,0.000000"]


def test_csv_leaves_empty_values_empty() -> None:
    q = query(group_by=(GroupBy.KEY, GroupBy.TEAM))
    text = to_csv(q, [{"key": "k1", "team": "", "requests": 1, "errors": 0,
                       "input_tokens": 1, "output_tokens": 2, "cost_usd": "0.000001",
                       "saved_usd": "0.000000", **NO_DETAILS}])
    assert text.splitlines()[1] == "k1,,1,0,1,2,0,0,0,0.000001,0.000000"


async def test_buffer_keeps_and_retries_writes_while_the_store_is_down() -> None:
    written: list[dict[str, list[int]]] = []
    failing = [True]

    async def sink(batch: dict[str, list[int]]) -> None:
        if failing[0]:
            raise RedisConnectionError("down")
        written.append(dict(batch))

    buffer: MergeBuffer[str] = MergeBuffer(sink, name="test", retry_s=0.01, max_retry_s=0.02)
    buffer.add("a", [1, 2])
    buffer.add("a", [1, 2])
    await asyncio.sleep(0.05)
    assert written == [] and len(buffer) == 1  # kept, merged
    buffer.add("a", [1, 0])
    failing[0] = False
    deadline = asyncio.get_running_loop().time() + 2
    while not written:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert written == [{"a": [3, 4]}]
    await buffer.aclose()


async def test_a_redis_ledger_write_whose_reply_was_lost_is_applied_once(
        redis_server: RedisServer) -> None:
    """The script ran, then the connection dropped before its reply (a Redis restart, a
    timeout): the batch is sent again unchanged and Redis skips it; what came meanwhile lands."""
    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
        ledger = RedisLedger(redis)
        script = ledger._script  # noqa: SLF001 - the one call that talks to Redis
        lost = [True]

        async def reply_lost(*args: object, **kwargs: object) -> object:
            result = await script(*args, **kwargs)
            if lost[0]:
                lost[0] = False
                raise RedisConnectionError("Connection closed by server.")
            return result

        ledger._script = reply_lost  # type: ignore[assignment]  # noqa: SLF001
        ledger.add((DAY1, "k1", "red", "gpt-4.1", ""), [1, 0, 10, 20, 1_000_001, 0, 0, 0, 0])
        assert not await ledger.buffer.flush()  # failed as far as the gateway can tell
        ledger.add((DAY1, "k1", "red", "gpt-4.1", ""), [1, 0, 1, 1, 5, 0, 0, 0, 0])
        assert await ledger.buffer.flush()
        rows = await ledger.query(query(group_by=(GroupBy.KEY,)))
        assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] == "1.000006"
        await ledger.aclose()


async def test_buffer_resending_unchanged_holds_a_failed_batch_apart_from_newer_cells() -> None:
    sent: list[tuple[str, dict[str, list[int]]]] = []
    failing = [True]

    async def sink(batch: dict[str, list[int]]) -> None:
        sent.append((batch.id, dict(batch)))  # type: ignore[attr-defined]
        if failing[0]:
            raise RedisConnectionError("down")

    buffer: MergeBuffer[str] = MergeBuffer(sink, name="test", resend_unchanged=True)
    buffer.add("a", [1])
    assert not await buffer.flush()
    buffer.add("a", [2])
    assert len(buffer) == 2  # the held batch and the newer one, not merged
    failing[0] = False
    assert await buffer.flush()
    assert [b for _, b in sent] == [{"a": [1]}, {"a": [1]}, {"a": [2]}]
    assert sent[0][0] == sent[1][0] != sent[2][0]
    await buffer.aclose()


async def test_buffer_drops_new_cells_beyond_its_bound_and_counts_them() -> None:
    dropped = []

    async def sink(batch: dict[str, list[int]]) -> None:
        raise RedisConnectionError("down")

    buffer: MergeBuffer[str] = MergeBuffer(sink, name="test", max_cells=2,
                                           on_drop=lambda: dropped.append(1))
    for name in "abc":
        buffer.add(name, [1])
    buffer.add("a", [1])  # an existing cell still merges
    assert len(buffer) == 2 and len(dropped) == 1
    await buffer.aclose(timeout_s=0.1)


def test_key_file_loads_hashes_and_inline_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"""
- id: team-red
  name: Red team
  team: red
  key_sha256: {hash_secret("gk-red")}
  rpm: 60
  budget_monthly_usd: "12.50"
  models: ["gpt-*"]
  model_limits: {{"gpt-4.1": {{tpm: 1000}}}}
""")
    (record,) = load_key_file(path)
    assert record.limits.rpm == 60 and str(record.limits.budget_monthly_usd) == "12.50"
    assert record.limits.allows("gpt-4.1") and not record.limits.allows("deepseek-v3.2")
    assert record.limits.for_model("gpt-4.1").tpm == 1000  # type: ignore[union-attr]
    assert record.source == "file"


@pytest.mark.parametrize(("entry", "needle"), [
    ("- name: a\n  key_sha256: nothex\n", "entry 0 ('a'): key_sha256"),
    (f"- name: a\n  key_sha256: {'a' * 64}\n  rpm: -1\n", "entry 0 ('a'): rpm"),
    (f"- name: a\n  key_sha256: {'a' * 64}\n  budget_daily_usd: '0.0000001'\n",
     "budget_daily_usd: Value error, budgets are counted in micro-dollars"),
    (f"- name: a\n  key_sha256: {'a' * 64}\n  colour: red\n", "entry 0 ('a'): colour"),
    (f"- name: a\n  key_sha256: {'a' * 64}\n- name: b\n  key_sha256: {'a' * 64}\n",
     "entry 1 ('b'): key_sha256: the same key appears twice"),
    ("name: a\n", "must be a list"),
    ("- [\n", "not valid YAML"),
])
def test_a_bad_key_file_names_the_file_the_entry_and_the_field(
        tmp_path: Path, entry: str, needle: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(entry)
    with pytest.raises(KeyFileError) as error:
        load_key_file(path)
    assert str(path) in str(error.value) and needle in str(error.value)


def test_a_missing_key_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key_file(tmp_path / "absent.yaml")


def _entry(log: AccessLog, name: str) -> None:
    log.record(request_id="r1", key_name=name, team=None, route="/v1/chat/completions",
               requested_model="gpt-4.1", served_model="gpt-4.1", status=200, error_code=None,
               latency_ms=1.23456, upstream_ms=1.0, input_tokens=3, output_tokens=4, cost=None,
               cache="miss", attempts=1)


def test_access_log_is_one_json_line_whatever_the_name(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("gateway.access").handlers.clear()
    log = AccessLog(True)
    _entry(log, "evil\nname\u2028<script>")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    entry = orjson.loads(out)
    assert entry["key"] == "evil\nname\u2028<script>" and entry["latency_ms"] == 1.235
    logging.getLogger("gateway.access").handlers.clear()


def test_access_log_off_writes_nothing_but_keeps_the_ring(
        capsys: pytest.CaptureFixture[str]) -> None:
    log = AccessLog(False)
    for i in range(RING_SIZE + 5):
        _entry(log, f"k{i}")
    assert capsys.readouterr().out == ""
    recent = log.snapshot()
    assert len(recent) == RING_SIZE and recent[-1]["key"] == f"k{RING_SIZE + 4}"


async def test_redis_ledger_keeps_large_counts_and_any_text_exact(
        redis_server: RedisServer) -> None:
    """The batch travels as one JSON argument: big integers, non-ASCII text and quotes come
    back as they went, under the names ``query`` reads."""
    async with Redis.from_url(redis_server.url) as redis:
        await redis.flushall()
        ledger = RedisLedger(redis)
        cell = (DAY1, "k\"3", "équipe ✓", "模型/v1", "")
        ledger.add(cell, [3, 1, 2**40, 7, 9_000_000_000_000, 1, 0, 0, 0])
        ledger.add(cell, [1, 0, 1, 0, 1, 0, 0, 0, 0])  # merged into the same cell before the write
        await ledger.buffer.flush()
        assert await redis.smembers(f"gw:ledger:days:{DAY1}") == {
            b'["k\\"3","\xe6\xa8\xa1\xe5\x9e\x8b/v1"]'}
        rows = await ledger.query(query(group_by=(GroupBy.KEY, GroupBy.TEAM, GroupBy.MODEL)))
        assert rows == [{"key": "k\"3", "team": "équipe ✓", "model": "模型/v1", "requests": 4,
                         "errors": 1, "input_tokens": 2**40 + 1, "output_tokens": 7,
                         "cost_usd": "9000000.000001", "saved_usd": "0.000001",
                         **NO_DETAILS}]
        await ledger.aclose()


async def test_sqlite_ledger_written_before_end_users_keeps_its_rows(tmp_path: Path) -> None:
    """A ledger from before end users and the cache's token counts is moved to the new table on
    start-up, its money exact, and takes new rows beside the old ones."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE ledger (day TEXT, key_id TEXT, team TEXT, model TEXT, "
               "requests INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0, "
               "input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, "
               "cost_micros INTEGER NOT NULL DEFAULT 0, saved_micros INTEGER NOT NULL DEFAULT 0, "
               "PRIMARY KEY (day, key_id, model))")
    db.execute("INSERT INTO ledger VALUES (?, 'k1', 'red', 'gpt-4.1', 3, 0, 30, 60, 1234567, 0)",
               (DAY1,))
    db.commit()
    db.close()
    ledger = SqliteLedger(path)
    ledger.add((DAY1, "k1", "red", "gpt-4.1", "alice"), [1, 0, 1, 1, 3, 0, 1, 0, 0])
    await ledger.buffer.flush()
    rows = await ledger.query(query(group_by=(GroupBy.KEY, GroupBy.USER)))
    assert [(r["user"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("", 3, "1.234567"), ("alice", 1, "0.000003")]
    await ledger.aclose()
