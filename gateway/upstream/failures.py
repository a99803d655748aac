"""A failed upstream attempt, classified so the router can decide what to do next, and the
record of each attempt a request made (data, not joined strings)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """Each kind is a different story for the client and for retries."""

    STATUS = "status"  # the upstream answered with an error status
    TIMEOUT = "timeout"  # no answer (or no next chunk) in time
    CONNECT = "connect"  # could not connect, or the connection closed before an answer
    PROTOCOL = "protocol"  # an answer that is not what the API promises
    TRUNCATED = "truncated"  # an answer cut short
    CIRCUIT_OPEN = "circuit_open"  # not tried: its breaker is open


class UpstreamFailure(Exception):
    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type
        self.error_code = error_code
        self.retryable = retryable

    @property
    def is_client_error(self) -> bool:
        """An upstream answer with a status outside GATEWAY_RETRY_STATUSES (by default every 4xx
        but 429, and 501): the request itself was refused, so no retry and no fallback."""
        return self.kind is FailureKind.STATUS and self.status is not None and not self.retryable

    def describe(self) -> str:
        if self.kind is FailureKind.STATUS:
            return f"HTTP {self.status}: {self.message}"
        return self.message


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened to one model (or one deployment of it) during a request: the last failure's
    kind, status and message, and how many tries it took."""

    model: str
    deployment: str
    kind: FailureKind
    tries: int
    status: int | None = None
    message: str = ""
    opened_breaker: bool = False

    def describe(self, with_deployment: bool = True) -> str:
        """``with_deployment=False`` for a model served by one deployment: naming it adds
        nothing."""
        where = self.model if not with_deployment or self.deployment in ("", self.model) else \
            f"{self.model} via {self.deployment}"
        if self.kind is FailureKind.CIRCUIT_OPEN:
            return f"{where}: circuit open"
        what = f"HTTP {self.status}: {self.message}" if self.kind is FailureKind.STATUS \
            else self.message
        tail = f" (after {self.tries} attempt{'s' if self.tries != 1 else ''}"
        tail += "; circuit now open)" if self.opened_breaker else ")"
        return f"{where}: {what}{tail}"
