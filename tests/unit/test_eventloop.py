"""eventloop: the kept loop is always the one running in this thread (a new loop, another
thread, a fork), and ``Within`` times out, passes through and leaves other cancellations alone
as ``asyncio.timeout`` does."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import uvloop

from gateway.eventloop import Within, current_task, running_loop


def test_each_loop_in_turn_is_the_running_one() -> None:
    async def seen() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return running_loop(), asyncio.get_running_loop()

    for run in (asyncio.run, uvloop.run, asyncio.run):
        kept, real = run(seen())
        assert kept is real
    with pytest.raises(RuntimeError):
        running_loop()  # the last loop has stopped: nothing is kept past it


def test_another_thread_sees_its_own_loop() -> None:
    async def hold(started: threading.Event, done: threading.Event) -> asyncio.AbstractEventLoop:
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.001)
        return running_loop()

    async def main() -> None:
        started, done = threading.Event(), threading.Event()
        result: list[asyncio.AbstractEventLoop] = []
        thread = threading.Thread(target=lambda: result.append(asyncio.run(hold(started,
                                                                                  done))))
        thread.start()
        await asyncio.to_thread(started.wait)
        assert running_loop() is asyncio.get_running_loop()
        done.set()
        await asyncio.to_thread(thread.join)
        assert result[0] is not asyncio.get_running_loop()
        assert running_loop() is asyncio.get_running_loop()

    asyncio.run(main())


async def test_current_task_is_this_one() -> None:
    assert current_task() is asyncio.current_task()
    other = asyncio.create_task(asyncio.sleep(0, result=None))
    assert current_task() is not other
    await other


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
async def test_a_forked_child_has_no_running_loop() -> None:
    running_loop()  # kept in this thread
    pid = os.fork()
    if pid == 0:  # the child: its copy of the loop is not running there
        try:
            running_loop()
        except RuntimeError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_within_times_out() -> None:
    with pytest.raises(TimeoutError):
        async with Within(0.01):
            await asyncio.sleep(5)
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_within_passes_an_answer_in_time_and_disarms() -> None:
    async with Within(0.05):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # past the deadline: the timer is gone, nothing cancels this


async def test_within_leaves_another_cancellation_alone() -> None:
    async def inner() -> None:
        async with Within(10):
            await asyncio.sleep(5)

    task = asyncio.create_task(inner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_within_a_cancellation_landing_with_the_deadline_stays_a_cancellation() -> None:
    class Raced(Within):
        def _expire(self) -> None:
            super()._expire()
            assert self._task is not None
            self._task.cancel()  # someone else's cancel lands in the same turn

    async def inner() -> None:
        async with Raced(0.01):
            await asyncio.sleep(5)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(inner())


def test_outside_a_task_within_refuses() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()

        def from_callback() -> None:
            async def enter() -> None:
                async with Within(1):
                    pass

            coro = enter()
            try:
                coro.send(None)
            except RuntimeError as exc:
                done.set_result(exc)
            except StopIteration:
                done.set_result(None)
            finally:
                coro.close()

        loop.call_soon(from_callback)
        assert isinstance(await done, RuntimeError)

    asyncio.run(main())
