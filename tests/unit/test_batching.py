"""The batcher: flushes on size and on time, never holds a lone job, fails every caller of a
failed batch, and lets a cancelled caller leave the queue."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.embeddings.batcher import Batcher


class Recorder:
    def __init__(self, delay: float = 0.05, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ValueError("upstream broke")
        return [item.upper() for item in items]


async def test_a_lone_job_is_sent_at_once() -> None:
    recorder = Recorder(delay=0)
    batcher = Batcher(recorder, max_batch_size=32, max_latency_s=1.0)
    started = time.monotonic()
    assert await batcher.submit(["a"]) == ["A"]
    assert time.monotonic() - started < 0.1


async def test_concurrent_jobs_merge_and_each_gets_its_own_outputs() -> None:
    recorder = Recorder(delay=0.05)
    batcher = Batcher(recorder, max_batch_size=32, max_latency_s=1.0)
    jobs = [[f"x{i}", f"y{i}"] if i % 3 == 0 else [f"x{i}"] for i in range(32)]
    results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
    assert results == [[item.upper() for item in job] for job in jobs]
    assert len(recorder.batches) < 6
    assert sum(len(b) for b in recorder.batches) == sum(len(j) for j in jobs)


async def test_batches_never_exceed_the_size_limit() -> None:
    recorder = Recorder(delay=0.05)
    batcher = Batcher(recorder, max_batch_size=4, max_latency_s=1.0)
    await asyncio.gather(*(batcher.submit([str(i)]) for i in range(20)))
    assert max(len(b) for b in recorder.batches) <= 4
    assert sorted(i for b in recorder.batches for i in b) == sorted(str(i) for i in range(20))


async def test_queued_jobs_leave_after_max_latency_even_when_slots_are_busy() -> None:
    recorder = Recorder(delay=0.5)
    batcher = Batcher(recorder, max_batch_size=32, max_latency_s=0.05)
    first = asyncio.ensure_future(batcher.submit(["slow"]))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    second = asyncio.ensure_future(batcher.submit(["queued"]))
    await asyncio.sleep(0.15)
    assert recorder.batches == [["slow"], ["queued"]]  # dispatched without waiting for "slow"
    assert await second == ["QUEUED"]
    assert time.monotonic() - started < 0.9
    await first


async def test_a_failed_batch_fails_every_caller_in_it() -> None:
    recorder = Recorder(delay=0.02, fail=True)
    batcher = Batcher(recorder, max_batch_size=32, max_latency_s=1.0)
    results = await asyncio.gather(*(batcher.submit([str(i)]) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_a_cancelled_caller_leaves_the_queue() -> None:
    recorder = Recorder(delay=0.1)
    batcher = Batcher(recorder, max_batch_size=32, max_latency_s=1.0)
    first = asyncio.ensure_future(batcher.submit(["a"]))
    await asyncio.sleep(0.01)
    doomed = asyncio.ensure_future(batcher.submit(["gone"]))
    kept = asyncio.ensure_future(batcher.submit(["b"]))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await kept == ["B"]
    await first
    assert ["gone"] not in recorder.batches and all("gone" not in b for b in recorder.batches)
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_a_wrong_number_of_outputs_is_an_error_for_everyone() -> None:
    async def short(items: list[str]) -> list[str]:
        return items[:-1]

    batcher = Batcher(short, max_batch_size=8, max_latency_s=0.01)
    with pytest.raises(RuntimeError, match="outputs"):
        await batcher.submit(["a", "b"])


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [(10, [1, 1, 1], [4, 3, 3]), (7, [10, 0, 5], [4, 1, 2]), (0, [3, 4], [0, 0]),
     (100, [1], [100]), (5, [2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 0])],
)
def test_token_shares_of_a_merged_call_add_up_exactly(
    total: int, weights: list[int], expected: list[int]
) -> None:
    from gateway.embeddings.service import split_tokens

    shares = split_tokens(total, weights)
    assert shares == expected
    assert sum(shares) == total
