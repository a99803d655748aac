"""GcWatch: pauses reach the histogram, and a collection during a metric write cannot freeze the
worker (the GC callback takes no lock)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.observability.gcwatch import GcWatch
from gateway.observability.metrics import Metrics


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def pause_count(metrics: Metrics) -> float:
    return sum(s.value for family in metrics.gc_pause.collect() for s in family.samples
               if s.name.endswith("_count"))


async def test_pauses_reach_the_histogram(metrics: Metrics, unfreeze: None) -> None:
    watch = GcWatch(metrics)
    watch.install()
    try:
        gc.collect()
        gc.collect(0)
        watch.flush()
        assert pause_count(metrics) >= 2
    finally:
        watch.uninstall()
    assert watch not in gc.callbacks and watch._callback not in gc.callbacks


async def test_a_collection_while_a_metric_lock_is_held_does_not_hang(
    metrics: Metrics, unfreeze: None
) -> None:
    watch = GcWatch(metrics)
    watch.install()
    child = metrics.child(metrics.gc_pause, "2")  # what a callback would write to
    try:
        def collect_inside_a_write() -> None:
            with child._sum._lock:  # as if a sample were being written when the GC started
                gc.collect()

        worker = threading.Thread(target=collect_inside_a_write, daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive(), "the GC callback waited on a metric's lock"
        watch.flush()
        assert pause_count(metrics) >= 1
    finally:
        watch.uninstall()
