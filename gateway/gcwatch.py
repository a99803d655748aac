"""Garbage-collector pauses as a metric, and a frozen start-up heap.

``gc.freeze()`` after start-up moves every object allocated so far (modules, the catalog,
BentoML's own state) out of the collector's reach, so full collections only walk what requests
allocate; each collection's duration goes to ``gateway_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from .metrics import Metrics


class GcWatch:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started = 0.0

    def install(self) -> None:
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._metrics.child(self._metrics.gc_pause, str(info.get("generation", ""))).observe(
                time.perf_counter() - self._started)
