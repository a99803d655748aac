"""The circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from gateway.routing.breaker import CircuitBreaker, State


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, *, failures: int = 3, ratio: float = 0.5, window_s: float = 10.0,
         min_calls: int = 4, cooldown_s: float = 5.0) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, ratio=ratio, window_s=window_s, min_calls=min_calls,
                          cooldown_s=cooldown_s, clock=clock)


def opened(clock: Clock, **kwargs: float) -> CircuitBreaker:
    breaker = make(clock, failures=1, **kwargs)
    breaker.record_failure()
    assert breaker.state is State.OPEN
    return breaker


# --- closed ---------------------------------------------------------------------------------

def test_a_new_breaker_is_closed_and_allows_every_call(clock: Clock) -> None:
    breaker = make(clock)
    assert breaker.state is State.CLOSED
    assert [breaker.allow() for _ in range(5)] == [True] * 5
    assert breaker.retry_in() == 0.0


def test_it_opens_after_n_consecutive_failures(clock: Clock) -> None:
    breaker = make(clock, failures=3, min_calls=100)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.CLOSED
    breaker.record_failure()
    assert breaker.state is State.OPEN


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    breaker = make(clock, failures=3, min_calls=100)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.CLOSED  # 2 in a row since the success, not 4
    breaker.record_failure()
    assert breaker.state is State.OPEN


def test_the_failure_ratio_over_the_window_opens_it_once_min_calls_are_reached(
    clock: Clock,
) -> None:
    breaker = make(clock, failures=100, ratio=0.5, min_calls=4)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED  # 2 of 3 failed, but fewer than min_calls calls
    breaker.record_success()
    assert breaker.state is State.CLOSED  # a success never trips it
    breaker.record_failure()
    assert breaker.state is State.OPEN    # 3 of 5 failed


def test_the_ratio_trips_exactly_at_the_threshold(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.5, min_calls=4)
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED  # 1/3, below min_calls
    breaker.record_failure()
    assert breaker.state is State.OPEN    # 2/4 = 0.5


def test_below_min_calls_even_all_failures_do_not_trip_the_ratio(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.1, min_calls=5)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is State.CLOSED
    breaker.record_failure()
    assert breaker.state is State.OPEN


def test_a_ratio_below_the_threshold_keeps_it_closed(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.5, min_calls=4)
    for ok in (True, True, False, True, True, False, True):
        (breaker.record_success if ok else breaker.record_failure)()
    assert breaker.state is State.CLOSED  # 2 of 7


def test_calls_older_than_the_window_fall_out(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.5, window_s=10.0, min_calls=4)
    for _ in range(3):
        breaker.record_failure()           # 3 of 3 failed at t=0, below min_calls
    clock.advance(10.5)                    # those three leave the window
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED   # counting them, 4 of 5 failed; in the window: 1 of 2
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED   # 2 of 5 in the window
    breaker.record_failure()
    assert breaker.state is State.OPEN     # 3 of 6 in the window


def test_a_call_exactly_window_seconds_old_still_counts(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.5, window_s=10.0, min_calls=4)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(10.0)
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.OPEN     # 3 of 4: the t=0 calls are on the window's edge


# --- open -----------------------------------------------------------------------------------

def test_an_open_breaker_rejects_until_the_cooldown_ends(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    assert breaker.allow() is False
    clock.advance(4.999)
    assert breaker.state is State.OPEN
    assert breaker.allow() is False


def test_retry_in_counts_down_the_cooldown(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    assert breaker.retry_in() == 5.0
    clock.advance(1.5)
    assert breaker.retry_in() == 3.5
    clock.advance(3.5)
    assert breaker.retry_in() == 0.0
    clock.advance(100)
    assert breaker.retry_in() == 0.0


def test_after_the_cooldown_it_is_half_open_and_allows_exactly_one_probe(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    clock.advance(5.0)
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False        # the probe is still in flight
    assert breaker.allow() is False
    assert breaker.state is State.HALF_OPEN


def test_a_successful_probe_closes_it(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    clock.advance(5.0)
    assert breaker.allow() is True
    breaker.record_success()
    assert breaker.state is State.CLOSED
    assert [breaker.allow() for _ in range(3)] == [True, True, True]
    assert breaker.retry_in() == 0.0


def test_a_closed_again_breaker_starts_with_an_empty_window(clock: Clock) -> None:
    breaker = make(clock, failures=100, ratio=0.5, min_calls=4)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is State.OPEN
    clock.advance(5.0)
    assert breaker.allow() is True
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.CLOSED   # 3 of 3 since closing: below min_calls


def test_a_failed_probe_reopens_it_and_restarts_the_cooldown(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    clock.advance(5.0)
    assert breaker.allow() is True
    clock.advance(2.0)                     # the probe takes 2 s, then fails
    breaker.record_failure()
    assert breaker.state is State.OPEN
    assert breaker.retry_in() == 5.0
    assert breaker.allow() is False
    clock.advance(4.9)
    assert breaker.allow() is False
    clock.advance(0.1)
    assert breaker.allow() is True         # a new probe, 5 s after the failed one


def test_release_frees_the_probe_for_another_call(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=5.0)
    clock.advance(5.0)
    assert breaker.allow() is True
    assert breaker.allow() is False
    breaker.release()                      # the probe was cancelled: no verdict
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_release_on_a_closed_breaker_changes_nothing(clock: Clock) -> None:
    breaker = make(clock, failures=2)
    breaker.record_failure()
    breaker.release()
    assert breaker.state is State.CLOSED
    breaker.record_failure()
    assert breaker.state is State.OPEN     # the consecutive count survived the release


def test_a_single_failure_threshold_opens_on_the_first_failure(clock: Clock) -> None:
    breaker = make(clock, failures=1)
    assert breaker.allow() is True
    breaker.record_failure()
    assert (breaker.state, breaker.allow(), breaker.retry_in()) == (State.OPEN, False, 5.0)
