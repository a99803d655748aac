"""Fallback chain, retries and deadline over the circuit breakers and the upstream client.

For each model of the chain (the requested one first): skip it if its breaker is open, else try
it up to ``retry_max_attempts`` times, waiting between tries as ``Retry-After`` says (capped) or
by exponential backoff with full jitter. An upstream status outside GATEWAY_RETRY_STATUSES (by
default a 4xx but 429) ends everything at once; any other failure moves on to the next model. No wait may run past the request's deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import backoff
import orjson

from .breaker import CircuitBreaker, State
from .catalog import Catalog, ModelEntry
from .errors import ErrorCode, GatewayError
from .failures import FailureKind, UpstreamFailure
from .health import ServiceStats
from .metrics import Metrics
from .settings import Settings
from .tracing import UpstreamSpans
from .upstream import UpstreamClient, UpstreamReply, UpstreamStream

T = TypeVar("T")


@dataclass(slots=True)
class Served:
    """What answered: the catalog model, its entry, the upstream result and how many tries."""

    name: str
    entry: ModelEntry
    result: Any
    attempts: int
    tried: list[str] = field(default_factory=list)
    upstream_s: float = 0.0
    cached: bool = False

    def result_usage(self) -> Any:
        """The usage the answer reports (a reply's body, or a stream's totals)."""
        data = getattr(self.result, "data", None)
        if isinstance(data, dict):
            return data.get("usage")
        return getattr(self.result, "usage", None)


class Router:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        upstream: UpstreamClient,
        stats: ServiceStats,
        metrics: Metrics,
        spans: UpstreamSpans | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._spans = spans or UpstreamSpans(None)
        self._catalog = catalog
        self._upstream = upstream
        self._stats = stats
        self.breakers = {
            name: CircuitBreaker(
                failures=settings.breaker_failures,
                ratio=settings.breaker_ratio,
                window_s=settings.breaker_window_s,
                min_calls=settings.breaker_min_calls,
                cooldown_s=settings.breaker_cooldown_s,
            )
            for name in catalog.models
        }

    def breaker_states(self) -> dict[str, str]:
        return {name: b.state.value for name, b in self.breakers.items()}

    async def complete(
        self, model: str, payload: dict[str, Any], deadline: float
    ) -> Served:
        """A non-streaming chat completion, answered by the first model of the chain that can."""

        def call(entry: ModelEntry, budget: float) -> Awaitable[UpstreamReply]:
            body = orjson.dumps({**payload, "model": entry.upstream_model})
            return self._upstream.post_json("/chat/completions", body, budget)

        return await self._run("chat", model, deadline, call)

    async def open_stream(
        self, model: str, payload: dict[str, Any], deadline: float
    ) -> Served:
        """Open a stream; a failure before its first chunk falls back like any request."""

        async def call(entry: ModelEntry, budget: float) -> UpstreamStream:
            body = orjson.dumps({**payload, "model": entry.upstream_model})
            stream = await self._upstream.open_stream("/chat/completions", body, budget)
            await stream.start()
            return stream

        return await self._run("chat", model, deadline, call)

    async def embed(self, model: str, payload: dict[str, Any], deadline: float) -> Served:
        def call(entry: ModelEntry, budget: float) -> Awaitable[UpstreamReply]:
            body = orjson.dumps({**payload, "model": entry.upstream_model})
            return self._upstream.post_json("/embeddings", body, budget)

        return await self._run("embeddings", model, deadline, call)

    async def _run(
        self,
        operation: str,
        model: str,
        deadline: float,
        call: Callable[[ModelEntry, float], Awaitable[T]],
    ) -> Served:
        if not self._spans.enabled:  # no context managers on the untraced hot path
            return await self._chain(operation, model, deadline, call)
        with self._spans.request(operation, model) as span:
            served = await self._chain(operation, model, deadline, call)
            if span is not None:
                span.set_attributes({"gateway.served_model": served.name,
                                     "gateway.attempts": served.attempts})
            return served

    async def _chain(
        self,
        operation: str,
        model: str,
        deadline: float,
        call: Callable[[ModelEntry, float], Awaitable[T]],
    ) -> Served:
        tried: list[str] = []
        failures: list[UpstreamFailure] = []
        attempts = 0
        upstream_s = 0.0
        chain = self._catalog.chain(model)
        for name in chain:
            entry = self._catalog.models[name]
            breaker = self.breakers[name]
            waits = backoff.expo(base=2, factor=self._settings.retry_base_s,
                                 max_value=self._settings.retry_max_wait_s)
            next(waits)
            for attempt in range(1, self._settings.retry_max_attempts + 1):
                if not breaker.allow():
                    if attempt == 1:
                        tried.append(f"{name}: circuit open")
                    else:  # this request's own failures opened it: say what they were
                        tried.append(f"{name}: {failures[-1].describe()} (after {attempt - 1} "
                                     f"attempt{'s' if attempt > 2 else ''}; circuit now open)")
                    break
                budget = deadline - time.monotonic()
                if budget <= 0:
                    breaker.release()
                    raise self._deadline_error(tried)
                attempts += 1
                sent = time.monotonic()
                try:
                    if self._spans.enabled:
                        with self._spans.attempt(operation, name, entry.upstream_model, attempt):
                            result = await call(entry, budget)
                    else:
                        result = await call(entry, budget)
                except UpstreamFailure as failure:
                    upstream_s += time.monotonic() - sent
                    if failure.is_client_error:
                        breaker.record_success()
                        self._stats.record_upstream(True)
                        raise self._client_error(failure) from None
                    breaker.record_failure()
                    self._metrics.observe_breaker(name, breaker.state)
                    self._metrics.observe_failure(name, failure.kind)
                    self._stats.record_upstream(False, failure.describe())
                    failures.append(failure)
                    wait = self._wait_before_retry(failure, waits, attempt, deadline)
                    if wait is None:
                        tried.append(f"{name}: {failure.describe()} (after {attempt} "
                                     f"attempt{'s' if attempt > 1 else ''})")
                        break
                    await asyncio.sleep(wait)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                upstream_s += time.monotonic() - sent
                recovered = breaker.state is not State.CLOSED
                breaker.record_success()
                if recovered:
                    self._metrics.observe_breaker(name, breaker.state)
                self._stats.record_upstream(True)
                self._metrics.observe_upstream(name, upstream_s)
                return Served(name, entry, result, attempts, tried, upstream_s)
        raise self._exhausted(chain, tried, failures)

    def _wait_before_retry(
        self, failure: UpstreamFailure, waits: Any, attempt: int, deadline: float
    ) -> float | None:
        """Seconds to sleep before retrying the same model, or None to move on now."""
        if not failure.retryable or attempt >= self._settings.retry_max_attempts:
            return None
        if failure.retry_after is not None:
            wait = min(failure.retry_after, self._settings.retry_after_max_s)
        else:
            wait = backoff.full_jitter(next(waits))
        if time.monotonic() + wait >= deadline:
            return None
        return wait

    @staticmethod
    def _client_error(failure: UpstreamFailure) -> GatewayError:
        if failure.status in (401, 403):
            return GatewayError(
                ErrorCode.UPSTREAM_AUTH_FAILED,
                f"The upstream rejected the gateway's credentials (HTTP {failure.status}): "
                f"{failure.message}",
            )
        return GatewayError(ErrorCode.UPSTREAM_REJECTED, failure.message,
                            upstream_status=failure.status or 400,
                            upstream_type=failure.error_type or "invalid_request_error",
                            upstream_code=failure.error_code)

    def _deadline_error(self, tried: list[str]) -> GatewayError:
        detail = f" Tried: {'; '.join(tried)}." if tried else ""
        return GatewayError(
            ErrorCode.DEADLINE_EXCEEDED,
            f"The request's deadline of {self._settings.timeout_s:g} s ran out.{detail}",
        )

    def _exhausted(
        self, chain: list[str], tried: list[str], failures: list[UpstreamFailure]
    ) -> GatewayError:
        summary = "; ".join(tried)
        if not failures:
            retry_in = min(self.breakers[name].retry_in() for name in chain)
            return GatewayError(
                ErrorCode.CIRCUIT_OPEN,
                f"Every model in the chain is temporarily disabled: {summary}.",
                headers={"Retry-After": str(max(1, math.ceil(retry_in)))},
            )
        if all(f.kind is FailureKind.TIMEOUT for f in failures):
            return GatewayError(ErrorCode.UPSTREAM_TIMEOUT, f"The upstream timed out: {summary}.")
        last = failures[-1].kind
        code = ErrorCode.UPSTREAM_ERROR if last is FailureKind.STATUS else ErrorCode(f"upstream_{last}")
        prefix = "All models failed" if len(tried) > 1 else "The upstream failed"
        return GatewayError(code, f"{prefix}: {summary}.")
