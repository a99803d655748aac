"""The one adaptive batcher: many small concurrent jobs share one call.

A job is dispatched at once when a batch slot is free, so a lone request never waits. While
every slot is busy, jobs queue and leave together, up to ``max_batch_size`` items, when a slot
frees up, as soon as a full batch is waiting, or when the oldest has waited ``max_latency_s``
(then even without a free slot, so no job waits longer than that for a dispatch). A failed batch
fails every job in it with the same error; a job whose caller gave up leaves the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.eventloop import running_loop

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(slots=True)
class _Job(Generic[In, Out]):
    items: Sequence[In]
    future: asyncio.Future[list[Out]]
    queued_at: float = field(default_factory=time.monotonic)


BatchObserver = Callable[[int, float], None]


class Batcher(Generic[In, Out]):
    """Runs ``call(items) -> outputs`` (one output per item, same order) over merged jobs."""

    def __init__(
        self,
        call: Callable[[list[In]], Awaitable[list[Out]]],
        *,
        max_batch_size: int,
        max_latency_s: float,
        max_concurrent: int = 1,
        observe: BatchObserver | None = None,
    ) -> None:
        self._call = call
        self._max_size = max_batch_size
        self._max_latency_s = max_latency_s
        self._slots = max_concurrent
        self._observe = observe
        self._queue: deque[_Job[In, Out]] = deque()
        self._queued_items = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """The outputs for ``items``, in their order, computed in some batch."""
        job: _Job[In, Out] = _Job(items, running_loop().create_future())
        self._queue.append(job)
        self._queued_items += len(items)
        self._pump()
        try:
            return await job.future
        except asyncio.CancelledError:
            if job in self._queue:
                self._queue.remove(job)
                self._queued_items -= len(items)
            raise

    def _pump(self) -> None:
        """Dispatch what may leave now; otherwise make sure the latency timer is armed."""
        while self._queue:
            waited = time.monotonic() - self._queue[0].queued_at
            if (
                self._running < self._slots
                or waited >= self._max_latency_s
                or self._queued_items >= self._max_size
            ):
                self._dispatch()
            else:
                break
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue:
            delay = self._max_latency_s - (time.monotonic() - self._queue[0].queued_at)
            self._timer = running_loop().call_later(max(0.0, delay), self._pump)

    def _dispatch(self) -> None:
        jobs: list[_Job[In, Out]] = []
        size = 0
        while self._queue and (not jobs or size + len(self._queue[0].items) <= self._max_size):
            job = self._queue.popleft()
            jobs.append(job)
            size += len(job.items)
        self._queued_items -= size
        self._running += 1
        task = running_loop().create_task(self._run(jobs, size))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, jobs: list[_Job[In, Out]], size: int) -> None:
        now = time.monotonic()
        if self._observe is not None:
            self._observe(size, max(now - job.queued_at for job in jobs))
        items = [item for job in jobs for item in job.items]
        try:
            outputs = await self._call(items)
            if len(outputs) != len(items):
                raise RuntimeError(
                    f"batch call returned {len(outputs)} outputs for {len(items)} inputs"
                )
        except BaseException as exc:  # every caller of a failed batch gets the failure
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(outputs[start : start + len(job.items)])
                start += len(job.items)
        finally:
            self._running -= 1
            self._pump()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
