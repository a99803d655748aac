"""Who a request is (``Tenant``) and what it was allowed (``Admission``): the x-ratelimit-*
headers, OpenAI's reset format, and the token estimate a request is admitted with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway.tenants.keys import KeyLimits, KeyRecord
from gateway.tenants.limits import Decision, Kind, LimitPlan, WindowState


@dataclass(frozen=True, slots=True)
class Tenant:
    """A client. ``id`` is stable and scopes the cache; it is never the raw key."""

    id: str
    name: str
    team: str | None
    limits: KeyLimits
    record: KeyRecord | None = None

    @property
    def anonymous(self) -> bool:
        return self.record is None

    @property
    def scope(self) -> str:
        """What the cache files this tenant's entries under ("": the open gateway)."""
        return "" if self.record is None else self.id


ANONYMOUS = Tenant("anonymous", "anonymous", None, KeyLimits())


@dataclass(slots=True)
class Admission:
    tenant: Tenant
    model: str
    estimated_tokens: int
    plan: LimitPlan | None = None
    decision: Decision | None = None
    settled: bool = field(default=False)
    end_user: str = ""  # as the ledger files it; "" for none
    _headers: dict[str, str] | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers, for the tightest request and token windows; worked
        out once per decision (an overlapped check's are worked out when its verdict arrives,
        while the upstream call is still out). Callers copy them, never change them."""
        if self.decision is None:
            return {}
        if self._headers is None:
            self._headers = rate_headers(self.decision.states)
        return self._headers


# Each kind's three header names, spelled out once: an enum's ``.value`` is a Python-level
# property call in 3.11, and these are built for every limited answer.
RATE_HEADER_NAMES = tuple((kind, f"x-ratelimit-limit-{kind.value}",
                           f"x-ratelimit-remaining-{kind.value}",
                           f"x-ratelimit-reset-{kind.value}") for kind in Kind)


def rate_headers(states: list[WindowState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, limit_name, remaining_name, reset_name in RATE_HEADER_NAMES:
        tight: WindowState | None = None
        for state in states:
            if state.window.kind is kind and (
                    tight is None
                    or state.window.limit - state.used < tight.window.limit - tight.used):
                tight = state
        if tight is None:
            continue
        limit = tight.window.limit
        headers[limit_name] = str(limit)
        headers[remaining_name] = str(max(0, limit - tight.used))
        headers[reset_name] = format_reset(tight.reset_s)
    return headers


def format_reset(seconds: float) -> str:
    """OpenAI's (Go's) duration format: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (a 0 would invite an immediate retry)."""
    return str(max(1, math.ceil(seconds)))


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return _text_chars(value.get("text")) + _text_chars(value.get("content"))
    return 0


def estimate_tokens(payload: Any) -> int:
    """What a request is charged against TPM before the upstream answers: its text's characters
    / 4 (chat messages, or embeddings ``input``) plus ``max_tokens`` (or
    ``max_completion_tokens``) when given; corrected with the real usage when it ends."""
    if not isinstance(payload, dict):
        return 0
    chars = _text_chars(payload.get("messages")) + _text_chars(payload.get("input"))
    out = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    return chars // 4 + (out if isinstance(out, int) and out > 0 else 0)
