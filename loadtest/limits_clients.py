"""The limits check on each candidate Redis client, in one process against one loopback
``redis-server``: the gateway's ``RedisLimiter`` (its batching included) over redis-py's asyncio
client with hiredis (the gateway's), coredis, valkey-glide and, with ``--reference REV``, the
hand-written ``scriptwire`` as it was at REV. Interleaved rounds, medians; run by
``python -m loadtest.bench limits-clients``.

Per client and round: a check every 10 ms (100/s, one at a time: latency p50/p99 from submit to
decision), then 50 checks kept in flight for a few seconds (decisions/s and this process's CPU
time per decision, client threads included: glide's core is Rust in a thread).
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop

from gateway.redis_client import open_redis
from gateway.tenants.limits import (
    LUA,
    Budget,
    Decision,
    Kind,
    LimitPlan,
    LimitsScript,
    RedisLimiter,
    Window,
)

from .harness import ROOT

Run = Callable[[list[Any], list[Any]], Awaitable[Any]]


class TaskScript(LimitsScript):
    """``LimitsScript``'s task plumbing over any client's script call."""

    def __init__(self, run: Run, close: Callable[[], Awaitable[Any]]) -> None:
        self._run_script = run
        self._close = close
        self._running: set[asyncio.Task[bytes]] = set()

    def submit(self, keys: list[object], args: list[object]) -> asyncio.Task[bytes]:
        task = asyncio.get_running_loop().create_task(self._run(keys, args))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _run(self, keys: list[object], args: list[object]) -> bytes:
        reply = await self._run_script([str(k) for k in keys],
                                       [a if isinstance(a, bytes) else str(a) for a in args])
        return reply if isinstance(reply, bytes) else str(reply).encode()

    async def aclose(self) -> None:
        await super().aclose()
        await self._close()


async def redis_py(url: str) -> Any:
    return LimitsScript(open_redis(url, 1.0), LUA), None


async def coredis_client(url: str) -> Any:
    import coredis

    client = coredis.Redis.from_url(url, decode_responses=False)
    await client.__aenter__()  # coredis 6: its pool lives inside the client's context

    async def close() -> None:
        await client.__aexit__(None, None, None)

    script = client.register_script(LUA)
    return TaskScript(lambda k, a: script(keys=k, args=a), close), client


async def glide_client(url: str) -> Any:
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    client = await GlideClient.create(
        GlideClientConfiguration([NodeAddress(host, int(port))], request_timeout=1000))
    script = Script(LUA)
    return TaskScript(lambda k, a: client.invoke_script(script, keys=k, args=a), client.close), \
        client


def scriptwire_from(rev: str) -> Callable[[str], Awaitable[Any]]:
    """The hand-written client as it was at ``rev`` (imported from a copy of its file)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:gateway/tenants/scriptwire.py"],
        check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-scriptwire-")) / "scriptwire_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("scriptwire_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    async def make(url: str) -> Any:
        return module.ScriptWire(url, LUA, 1.0), None

    return make


def plan(i: int) -> LimitPlan:
    """A key with every limit set, none reached (as ``bench tenants``'s keys)."""
    now = datetime.now(UTC)
    key = f"gw:tenant:bench{i % 100}"
    return LimitPlan(
        [Window(f"{key}:rpm", Kind.REQUESTS, 1_000_000, 1),
         Window(f"{key}:tpm", Kind.TOKENS, 1_000_000_000, 50)],
        f"{key}:parallel", 1000, 600,
        [Budget("daily", f"{key}:day", 10**12, now + timedelta(days=1), 90000),
         Budget("monthly", f"{key}:month", 10**13, now + timedelta(days=31), 3000000)])


async def check(limiter: RedisLimiter, i: int) -> Decision:
    future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()

    def decided(outcome: Decision | BaseException) -> None:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    limits = plan(i)
    limiter.submit(limits, decided)
    decision = await future
    if decision.refusal is not None:
        raise RuntimeError(f"refused: {decision.refusal}")
    assert limits.parallel_key is not None
    limiter.give_back(limits.parallel_key, None, -1, limits.parallel_ttl_s)  # the request ended
    return decision


async def measure(make: Callable[[str], Awaitable[Any]], url: str, paced: int,
                  burst_s: float) -> dict[str, float]:
    wire, _ = await make(url)
    limiter = RedisLimiter(wire)
    try:
        for i in range(50):  # connect, load the script, warm
            await check(limiter, i)
        latencies = []
        start = time.perf_counter()
        for i in range(paced):
            await asyncio.sleep(max(0.0, start + i * 0.01 - time.perf_counter()))
            began = time.perf_counter()
            await check(limiter, i)
            latencies.append((time.perf_counter() - began) * 1000)
        done = 0
        stop = time.perf_counter() + burst_s

        async def worker(w: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await check(limiter, w)
                done += 1

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(50)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cuts = statistics.quantiles(latencies, n=100)
        return {"p50": statistics.median(latencies), "p99": cuts[98], "rps": done / wall,
                "cpu_us": cpu / max(done, 1) * 1e6}
    finally:
        await limiter.aclose()


def run(url: str, rounds: int, paced: int, burst_s: float,
        reference: str | None) -> dict[str, list[dict[str, float]]]:
    clients: list[tuple[str, Callable[[str], Awaitable[Any]]]] = []
    if reference:
        clients.append((f"scriptwire ({reference})", scriptwire_from(reference)))
    clients += [("redis-py + hiredis", redis_py), ("coredis", coredis_client),
                ("valkey-glide", glide_client)]
    stats: dict[str, list[dict[str, float]]] = {}
    for r in range(rounds):
        for label, make in clients if r % 2 == 0 else clients[::-1]:
            stats.setdefault(label, []).append(
                uvloop.run(measure(make, url, paced, burst_s)))
    return stats
