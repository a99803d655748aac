"""A request's deadline as a value: when it runs out, and how long it was set for, so an error
can name the deadline that actually ran out (the caller's, or GATEWAY_TIMEOUT)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float  # time.monotonic() when it runs out
    seconds: float  # the budget it was set for

    @classmethod
    def after(cls, seconds: float, *, start: float | None = None) -> Deadline:
        """A deadline ``seconds`` after ``start`` (a monotonic time; now by default)."""
        return cls((time.monotonic() if start is None else start) + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.at
