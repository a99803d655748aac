"""A requests-per-rolling-minute limit with OpenAI's ``x-ratelimit-*-requests`` headers."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    headers: list[tuple[bytes, bytes]]
    retry_after: str | None


def duration(seconds: float) -> str:
    """Seconds as OpenAI writes them in ``x-ratelimit-reset-*``: ``20ms``, ``6.5s``, ``1m0s``."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


class RollingLimit:
    """The times of the requests let through in the last minute; a request beyond ``limit`` is
    refused (and not counted) until the oldest leaves the window."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def clear(self) -> None:
        self.times.clear()

    def check(self, limit: int, now: float) -> Decision:
        times = self.times
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        allowed = len(times) < limit
        if allowed:
            times.append(now)
        remaining = max(0, limit - len(times))
        reset = times[-1] + WINDOW_S - now if times else 0.0
        headers = [(b"x-ratelimit-limit-requests", str(limit).encode()),
                   (b"x-ratelimit-remaining-requests", str(remaining).encode()),
                   (b"x-ratelimit-reset-requests", duration(reset).encode())]
        if allowed:
            return Decision(True, headers, None)
        free_in = times[0] + WINDOW_S - now if times else WINDOW_S
        return Decision(False, headers, str(max(1, math.ceil(free_in))))
