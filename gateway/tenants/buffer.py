"""Counter increments written behind the client's back: merged in memory, written by one
background task, kept and retried while the store is unreachable, bounded in size.

Increments to the same cell merge (two requests of one key on one day are one row update), so a
Redis outage costs memory in proportion to the distinct cells touched, not to the requests; only
a new cell beyond ``max_cells`` is dropped, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from gateway.eventloop import running_loop

logger = logging.getLogger("gateway.tenants")

K = TypeVar("K", bound=Hashable)

# What an unreachable or failing store raises (Redis, or SQLite locked or out of space).
STORE_ERRORS = (RedisError, OSError, TimeoutError, sqlite3.Error)


async def stop_asked(task: asyncio.Task[None], timeout_s: float) -> None:
    """Wait for a background task already asked to stop (by an event it watches), cancelling it
    only past ``timeout_s``: redis-py can swallow a cancellation that lands inside a call."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        task.cancel()


class Batch(dict):  # type: ignore[type-arg]
    """One write's increments. ``id`` names it, for a sink that must not apply it twice."""

    __slots__ = ("_id",)

    @property
    def id(self) -> str:
        try:
            return str(self._id)
        except AttributeError:
            self._id = secrets.token_hex(8)
            return self._id


class MergeBuffer(Generic[K]):
    def __init__(self, sink: Callable[[dict[K, list[int]]], Awaitable[None]], *, name: str,
                 max_cells: int = 50_000, on_drop: Callable[[], None] | None = None,
                 retry_s: float = 0.5, max_retry_s: float = 5.0,
                 min_interval_s: float = 0.0, resend_unchanged: bool = False) -> None:
        """``min_interval_s``: the shortest time between two writes, so that under load one write
        carries many requests' increments (for data nobody waits on, like the ledger).
        ``resend_unchanged``: a write that failed may still have landed (Redis ran the script
        but the reply was lost to a restart or a timeout), so its batch is not merged back but
        sent again as it was, the same ``Batch`` with the same ``id``, before anything newer;
        the sink skips an id it has applied (up to ``max_cells`` more are then held)."""
        self._sink = sink
        self._name = name
        self._max_cells = max_cells
        self._on_drop = on_drop
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._min_interval_s = min_interval_s
        self._resend_unchanged = resend_unchanged
        self._pending: dict[K, list[int]] = Batch()
        self._held: dict[K, list[int]] | None = None  # a failed batch, to send again unchanged
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def __len__(self) -> int:
        return len(self._pending) + len(self._held or ())

    def add(self, key: K, values: Sequence[int]) -> None:
        """Never blocks and never raises: the caller is on a client's request path."""
        self.add_all(((key, values),))

    def add_all(self, increments: Iterable[tuple[K, Sequence[int]]]) -> None:
        """``add`` for several cells, with one wake-up of the writer."""
        pending = self._pending
        for key, values in increments:
            cell = pending.get(key)
            if cell is None:
                if len(pending) >= self._max_cells:
                    if self._on_drop is not None:
                        self._on_drop()
                    continue
                pending[key] = list(values)
            else:
                for i, value in enumerate(values):
                    cell[i] += value
        self._wake.set()
        if self._task is None and not self._closing:
            self._task = running_loop().create_task(self._run())

    def take(self) -> dict[K, list[int]]:
        """Everything pending, for a writer that carries it in a call of its own; hand it back
        with ``restore`` if that call fails."""
        batch, self._pending = self._pending, Batch()
        return batch

    def restore(self, batch: dict[K, list[int]]) -> None:
        for key, values in batch.items():
            cell = self._pending.get(key)
            if cell is None:
                self._pending[key] = values
            else:
                for i, value in enumerate(values):
                    cell[i] += value
        if batch:
            self._wake.set()

    async def flush(self) -> bool:
        """Write what is pending (after a held batch, if one failed before); on failure put it
        back, merged with what came meanwhile, or hold it unchanged (``resend_unchanged``)."""
        while True:
            if self._held is not None:
                batch = self._held
            elif self._pending:
                batch = self.take()
            else:
                return True
            try:
                await self._sink(batch)
            except STORE_ERRORS as exc:
                if self._resend_unchanged:
                    self._held = batch
                else:
                    self.restore(batch)
                if not self._failing:
                    self._failing = True
                    logger.warning("%s: store unavailable (%s); %d cells kept, retrying",
                                   self._name, type(exc).__name__, len(self))
                return False
            if self._failing:
                self._failing = False
                logger.warning("%s: store reachable again; pending writes flushed", self._name)
            if self._held is None:
                return True
            self._held = None  # the held batch is in: now what came after it

    async def _run(self) -> None:
        wait = self._retry_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            ok = await self.flush()
            if self._closing:
                return
            if ok:
                wait = self._retry_s
                if self._min_interval_s:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self._min_interval_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
            wait = min(wait * 2, self._max_retry_s)
            self._wake.set()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Flush what is pending (within ``timeout_s``); the writer is asked to stop."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await stop_asked(self._task, timeout_s)
            self._task = None
        with contextlib.suppress(*STORE_ERRORS):
            await asyncio.wait_for(self.flush(), timeout_s)
