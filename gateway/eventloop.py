"""The running loop, the current task and a deadline, without a system call each time.

Before CPython 3.12, ``asyncio.get_running_loop()`` and ``asyncio.current_task()`` (and so
``asyncio.timeout``, which makes three such calls) check ``getpid()`` on every call, to notice a
fork (python/cpython#100363 dropped the check in 3.12): a system call each, many per request,
each dear when run cold (the README's *Teams, keys and budgets* has the counts). Here each thread
keeps the loop it last found running, and uses it while that loop still runs (a loop runs in one
thread; a fork forgets it).
"""

from __future__ import annotations

import asyncio
import os
import threading
from types import TracebackType


class _Seen(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_seen = _Seen()


def _forget() -> None:
    _seen.loop = None


os.register_at_fork(after_in_child=_forget)


def running_loop() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()``: raises ``RuntimeError`` outside a running loop."""
    loop = _seen.loop
    if loop is None or not loop.is_running():
        loop = _seen.loop = asyncio.get_running_loop()
    return loop


def current_task() -> asyncio.Task[object] | None:
    """``asyncio.current_task()`` of the running loop."""
    return asyncio.current_task(running_loop())


class Within:
    """``asyncio.timeout(delay)`` for one block, as the stdlib's behaves for it: past ``delay``
    the task is cancelled and the block raises ``TimeoutError``; a cancellation from anyone else
    stays a cancellation."""

    __slots__ = ("_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> Within:
        loop = running_loop()
        self._task = asyncio.current_task(loop)
        if self._task is None:
            raise RuntimeError("Within should be used inside a task")
        self._handle = loop.call_later(self._delay, self._expire)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired and self._task is not None and self._task.uncancel() == 0 \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        assert self._task is not None
        self._task.cancel()
