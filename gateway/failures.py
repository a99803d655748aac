"""A failed upstream attempt, classified so the router can decide what to do next."""

from __future__ import annotations

# Failure kinds, each one a different story for the client and for retries.
STATUS = "status"
TIMEOUT = "timeout"
CONNECT = "connect"
PROTOCOL = "protocol"
TRUNCATED = "truncated"


class UpstreamFailure(Exception):
    def __init__(
        self,
        kind: str,
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
        return self.kind == STATUS and self.status is not None and not self.retryable

    def describe(self) -> str:
        if self.kind == STATUS:
            return f"HTTP {self.status}: {self.message}"
        return self.message
