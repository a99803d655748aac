"""Garbage-collector pauses as a metric, and a frozen start-up heap.

``gc.freeze()`` after start-up moves every object allocated so far (modules, the catalog,
BentoML's own state) out of the collector's reach, so full collections only walk what requests
allocate; each collection's duration goes to ``gateway_gc_pause_seconds``.

The GC callback only appends to a deque; the event loop moves the pauses into the histogram once
a second. A collection can start inside any allocation, including one made while
``prometheus_client`` holds its (non-reentrant) lock to write a sample; a callback that wrote a
sample itself would wait for that lock forever and freeze the worker, which the embeddings
benchmark once caught doing.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

from gateway.eventloop import running_loop
from gateway.observability.metrics import Metrics

FLUSH_INTERVAL_S = 1.0


class GcWatch:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started = 0.0
        self._pauses: deque[tuple[int, float]] = deque(maxlen=10_000)
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Freeze the heap and start watching; call from the worker's event loop. No full
        collection first: it held every worker's start (and its first answer) for about 0.2 s
        to free the few hundred unreachable objects start-up leaves, which stay frozen."""
        gc.freeze()
        gc.callbacks.append(self._callback)
        self._schedule()

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    def flush(self) -> None:
        """Move the recorded pauses into the histogram (never from the GC callback)."""
        while self._pauses:
            generation, seconds = self._pauses.popleft()
            self._metrics.observe_gc_pause(generation, seconds)

    def _schedule(self) -> None:
        self._timer = running_loop().call_later(FLUSH_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        self.flush()
        self._schedule()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses.append((info.get("generation", -1), time.perf_counter() - self._started))
