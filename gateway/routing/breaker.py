"""A circuit breaker per deployment of a model, so a failing provider stops costing every request
time while the model's other deployments keep answering."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures, or when the failure ratio over the last
    ``window_s`` seconds reaches ``ratio`` with at least ``min_calls`` calls. While open it
    rejects at once; after ``cooldown_s`` it lets one probe through, which closes it on success
    and re-opens it on failure.
    """

    def __init__(
        self,
        *,
        failures: int,
        ratio: float,
        window_s: float,
        min_calls: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures_to_open = failures
        self._ratio = ratio
        self._window_s = window_s
        self._min_calls = min_calls
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._state = State.CLOSED
        self._consecutive = 0
        self._calls: deque[tuple[float, bool]] = deque()
        self._failed_in_window = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self._cooldown_s:
            return State.HALF_OPEN
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._state is not State.OPEN:
            return 0.0
        return max(0.0, self._cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go upstream now; in half-open state only one probe at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.OPEN or self._probe_in_flight:
            return False
        self._state = State.HALF_OPEN
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        if self._state is State.OPEN:
            return  # a call that started before the breaker opened proves nothing now
        self._probe_in_flight = False
        self._consecutive = 0
        if self._state is not State.CLOSED:
            self._state = State.CLOSED
            self._calls.clear()
            self._failed_in_window = 0
        else:
            self._record(True)

    def record_failure(self) -> None:
        if self._state is State.OPEN:
            return  # a late failure must not restart the cooldown
        self._probe_in_flight = False
        if self._state is State.HALF_OPEN:
            self._open()
            return
        self._consecutive += 1
        self._record(False)
        if self._consecutive >= self._failures_to_open or self._ratio_tripped():
            self._open()

    def release(self) -> None:
        """A call that ended without a verdict (cancelled): let another probe try."""
        self._probe_in_flight = False

    def _open(self) -> None:
        self._state = State.OPEN
        self._opened_at = self._clock()
        self._consecutive = 0
        self._calls.clear()
        self._failed_in_window = 0

    def _record(self, ok: bool) -> None:
        now = self._clock()
        self._calls.append((now, ok))
        self._failed_in_window += not ok
        horizon = now - self._window_s
        while self._calls and self._calls[0][0] < horizon:
            _, old_ok = self._calls.popleft()
            self._failed_in_window -= not old_ok

    def _ratio_tripped(self) -> bool:
        if len(self._calls) < self._min_calls:
            return False
        return self._failed_in_window / len(self._calls) >= self._ratio
