"""Fallback chain over models, a balancer over each model's deployments, retries and the
deadline, over per-deployment circuit breakers and the providers' clients.

For each model of the chain (the requested one first), the balancer picks one of its
deployments whose breaker lets a call through, preferring those this request has not tried: a
retry goes to another deployment when there is one, at once. Once every usable deployment was
tried, the model's tries (``GATEWAY_RETRY_ATTEMPTS`` in all) go on after a wait, as
``Retry-After`` says (capped) or by exponential backoff with full jitter. An upstream status
outside GATEWAY_RETRY_STATUSES (by default a 4xx but 429) ends everything at once; any other
failure moves on, and only when every deployment of a model is unusable does the chain fall
back to the next model. No wait may run past the request's deadline.

Each deployment tried is recorded as an ``Attempt`` (data); the client's messages are built
from those records.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import backoff
import orjson

from gateway.catalog import Catalog, Deployment, ModelEntry, Strategy
from gateway.catalog import Price as DeploymentPrice
from gateway.errors import ErrorCode, GatewayError
from gateway.eventloop import running_loop
from gateway.observability.health import ServiceStats
from gateway.observability.metrics import Metrics
from gateway.pricing import Price
from gateway.routing.balancer import PICKERS
from gateway.routing.breaker import CircuitBreaker, State
from gateway.routing.deadline import Deadline
from gateway.routing.spans import UpstreamSpans
from gateway.settings import Settings
from gateway.upstream.client import UpstreamClient, UpstreamReply, Upstreams, UpstreamStream
from gateway.upstream.failures import Attempt, FailureKind, UpstreamFailure

T = TypeVar("T")
Call = Callable[[Deployment, UpstreamClient, float], Awaitable[T]]
CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"


@dataclass(slots=True)
class Served:
    """What answered: the catalog model and deployment, the upstream result, how many upstream
    calls it took and what failed on the way."""

    name: str
    entry: ModelEntry
    result: Any
    attempts: int
    failures: list[Attempt] = field(default_factory=list)
    upstream_s: float = 0.0
    cached: bool = False
    provider: str = ""
    deployment: str = ""
    deployment_price: DeploymentPrice | None = None

    @property
    def price(self) -> Price:
        """What to price with: the deployment's own price when set, else the model's."""
        return self.deployment_price or self.entry

    def result_usage(self) -> Any:
        """The usage the answer reports (a reply's body, or a stream's totals)."""
        data = getattr(self.result, "data", None)
        if isinstance(data, dict):
            return data.get("usage")
        return getattr(self.result, "usage", None)


@dataclass(slots=True, eq=False)
class Slot:
    """One deployment as this worker runs it: its provider's client, breaker, calls in flight."""

    deployment: Deployment
    client: UpstreamClient
    breaker: CircuitBreaker
    weight: float
    in_flight: int = 0

    @property
    def usable(self) -> bool:
        return self.breaker.state is not State.OPEN


@dataclass(slots=True)
class Pool:
    """A catalog model's deployments and how the next one is picked."""

    model: str
    entry: ModelEntry
    slots: tuple[Slot, ...]
    strategy: Strategy

    @property
    def solo(self) -> bool:
        """One deployment: messages need not name it."""
        return len(self.slots) == 1


@dataclass(slots=True)
class Run:
    """One request's walk down the chain: what it tried, for how long, and every failure."""

    operation: str
    deadline: Deadline
    native_completions: bool = False
    calls: int = 0
    upstream_s: float = 0.0
    records: dict[tuple[str, str], Attempt] = field(default_factory=dict)
    kinds: list[FailureKind] = field(default_factory=list)
    solo: dict[str, bool] = field(default_factory=dict)

    def failures(self) -> list[Attempt]:
        return list(self.records.values())

    def summary(self) -> str:
        return "; ".join(a.describe(not self.solo.get(a.model, True))
                         for a in self.records.values())


class Router:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        upstreams: Upstreams | UpstreamClient,
        stats: ServiceStats,
        metrics: Metrics,
        spans: UpstreamSpans | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """``clock`` drives the breakers and ``rng`` the balancer (both for tests)."""
        self._settings = settings
        self._metrics = metrics
        self._spans = spans or UpstreamSpans(None)
        self._catalog = catalog
        if isinstance(upstreams, UpstreamClient):
            upstreams = Upstreams({upstreams.provider.name: upstreams})
        self._upstreams = upstreams
        self._stats = stats
        self._rng = rng or random.Random()
        default = Strategy(settings.balancer)
        self.pools = {
            name: Pool(name, entry, tuple(
                Slot(d, upstreams[d.provider], self._breaker(clock), d.weight)
                for d in catalog.deployments(name)), entry.balancer or default)
            for name, entry in catalog.models.items()
        }

    def _breaker(self, clock: Callable[[], float]) -> CircuitBreaker:
        s = self._settings
        return CircuitBreaker(failures=s.breaker_failures, ratio=s.breaker_ratio,
                              window_s=s.breaker_window_s, min_calls=s.breaker_min_calls,
                              cooldown_s=s.breaker_cooldown_s, clock=clock)

    # --- views ----------------------------------------------------------------------------

    def breaker(self, model: str, deployment: str | None = None) -> CircuitBreaker:
        """A deployment's breaker (the model's first deployment by default)."""
        slots = self.pools[model].slots
        if deployment is None:
            return slots[0].breaker
        return next(s.breaker for s in slots if s.deployment.name == deployment)

    def breaker_states(self) -> dict[str, str]:
        """Per model: closed while any deployment is, else half-open while any is, else open."""
        return {name: _model_state(pool).value for name, pool in self.pools.items()}

    def deployment_health(self) -> dict[str, dict[str, Any]]:
        """Per model, its state and each deployment's provider, breaker state, weight and calls
        in flight in this worker (for /health)."""
        return {
            name: {"state": _model_state(pool).value, "balancer": pool.strategy.value,
                   "deployments": {
                       s.deployment.name: {"provider": s.deployment.provider,
                                           "state": s.breaker.state.value,
                                           "weight": s.weight, "in_flight": s.in_flight}
                       for s in pool.slots}}
            for name, pool in self.pools.items()
        }

    def serves_completions(self, model: str) -> bool:
        """Whether some deployment's provider serves the legacy /v1/completions natively."""
        return any(s.client.provider.completions for s in self.pools[model].slots)

    # --- routes ---------------------------------------------------------------------------

    async def complete(self, model: str, payload: dict[str, Any], deadline: Deadline,
                       path: str = CHAT_PATH) -> Served:
        """A non-streaming completion, answered by the first model of the chain that can."""

        def call(deployment: Deployment, client: UpstreamClient,
                 budget: float) -> Awaitable[UpstreamReply]:
            body = orjson.dumps({**payload, "model": deployment.upstream_model})
            return client.post_json(path, body, budget)

        return await self._run("chat", model, deadline, call, path == COMPLETIONS_PATH)

    async def open_stream(self, model: str, payload: dict[str, Any], deadline: Deadline,
                          path: str = CHAT_PATH) -> Served:
        """Open a stream; a failure before its first chunk falls back like any request."""

        async def call(deployment: Deployment, client: UpstreamClient,
                       budget: float) -> UpstreamStream:
            body = orjson.dumps({**payload, "model": deployment.upstream_model})
            stream = await client.open_stream(path, body, budget)
            await stream.start()
            return stream

        return await self._run("chat", model, deadline, call, path == COMPLETIONS_PATH)

    async def embed(self, model: str, payload: dict[str, Any], deadline: Deadline) -> Served:
        def call(deployment: Deployment, client: UpstreamClient,
                 budget: float) -> Awaitable[UpstreamReply]:
            body = orjson.dumps({**payload, "model": deployment.upstream_model})
            return client.post_json("/embeddings", body, budget)

        return await self._run("embeddings", model, deadline, call)

    async def _run(self, operation: str, model: str, deadline: Deadline, call: Call[T],
                   native_completions: bool = False) -> Served:
        if native_completions and not self.serves_completions(model):
            raise GatewayError(ErrorCode.MODEL_NOT_SUPPORTED,
                               f"No provider of {model!r} serves /v1/completions.", param="model")
        run = Run(operation, deadline, native_completions)
        if not self._spans.enabled:  # no context managers on the untraced hot path
            return await self._walk_chain(run, model, call)
        with self._spans.request(operation, model) as span:
            served = await self._walk_chain(run, model, call)
            if span is not None:
                span.set_attributes({"gateway.served_model": served.name,
                                     "gateway.deployment": served.deployment,
                                     "gateway.provider": served.provider,
                                     "gateway.attempts": served.attempts})
            return served

    # --- the chain of models --------------------------------------------------------------

    async def _walk_chain(self, run: Run, model: str, call: Call[T]) -> Served:
        chain = self._catalog.chain(model)
        for name in chain:
            pool = self.pools[name]
            run.solo[name] = pool.solo
            served = await self._try_model(run, pool, call)
            if served is not None:
                return served
        raise self._exhausted(run, chain)

    # --- one model's deployments, with retries --------------------------------------------

    async def _try_model(self, run: Run, pool: Pool, call: Call[T]) -> Served | None:
        """Try the model's deployments until one answers (a Served), or None to fall back."""
        waits = backoff.expo(base=2, factor=self._settings.retry_base_s,
                             max_value=self._settings.retry_max_wait_s)
        next(waits)
        tried: list[Slot] = []
        tries = 0
        while True:
            slot = self._pick(run, pool, tried, again=tries < self._settings.retry_max_attempts)
            if slot is None:
                break
            if run.deadline.expired():
                slot.breaker.release()
                raise self._deadline_error(run)
            tries += 1
            if slot not in tried:
                tried.append(slot)
            try:
                result = await self._send(run, pool, slot, call, tries)
            except UpstreamFailure as failure:
                self._record_failure(run, pool, slot, failure)
                wait = self._wait_before_retry(run, pool, tried, failure, waits, tries)
                if wait is None:
                    break
                if wait > 0:
                    await asyncio.sleep(wait)
                continue
            return self._served(run, pool, slot, result)
        self._record_skipped(run, pool, tried)
        return None

    def _eligible(self, run: Run, slot: Slot) -> bool:
        return not run.native_completions or slot.client.provider.completions

    def _pick(self, run: Run, pool: Pool, tried: list[Slot], again: bool) -> Slot | None:
        """A deployment whose breaker lets this call through (its probe slot taken when
        half-open): an untried one first, else, while tries are left, any."""
        candidates = [s for s in pool.slots
                      if s not in tried and s.usable and self._eligible(run, s)]
        if not candidates and again:
            candidates = [s for s in tried if s.usable]
        pick = PICKERS[pool.strategy]
        while candidates:
            slot = candidates[0] if len(candidates) == 1 else pick(candidates, self._rng)
            if slot.breaker.allow():
                return slot
            candidates.remove(slot)  # half-open with its probe already out
        return None

    async def _send(self, run: Run, pool: Pool, slot: Slot, call: Call[T], tries: int) -> T:
        deployment = slot.deployment
        budget = run.deadline.at - time.monotonic()
        run.calls += 1
        slot.in_flight += 1
        sent = time.monotonic()
        try:
            if self._spans.enabled:
                with self._spans.attempt(run.operation, pool.model, deployment.upstream_model,
                                         tries):
                    return await call(deployment, slot.client, budget)
            return await call(deployment, slot.client, budget)
        except UpstreamFailure:
            raise
        except BaseException:
            slot.breaker.release()  # cancelled: no verdict, let another probe try
            raise
        finally:
            slot.in_flight -= 1
            run.upstream_s += time.monotonic() - sent

    def _served(self, run: Run, pool: Pool, slot: Slot, result: Any) -> Served:
        deployment = slot.deployment
        recovered = slot.breaker.state is not State.CLOSED
        slot.breaker.record_success()
        if recovered:
            self._metrics.observe_breaker(pool.model, deployment.name, slot.breaker.state)
        self._stats.record_upstream(True)
        # Metric writes wait until this request's task yields (for a complete answer: after its
        # bytes are written); run cold they cost more than the rest of this step.
        running_loop().call_soon(self._observe_success, pool.model, deployment,
                                             run.upstream_s)
        return Served(pool.model, pool.entry, result, run.calls, run.failures(), run.upstream_s,
                      provider=deployment.provider, deployment=deployment.name,
                      deployment_price=deployment.price)

    def _observe_success(self, model: str, deployment: Deployment, upstream_s: float) -> None:
        self._metrics.observe_upstream(model, upstream_s)
        self._metrics.observe_deployment(model, deployment.provider, deployment.name, True)

    def _record_failure(self, run: Run, pool: Pool, slot: Slot, failure: UpstreamFailure) -> None:
        """Count the failure against its deployment, or raise at once for a client error."""
        deployment = slot.deployment
        if failure.is_client_error:
            slot.breaker.record_success()
            self._stats.record_upstream(True)
            raise self._client_error(failure) from None
        was_open = slot.breaker.state is State.OPEN
        slot.breaker.record_failure()
        state = slot.breaker.state
        self._metrics.observe_breaker(pool.model, deployment.name, state)
        self._metrics.observe_failure(pool.model, deployment.name, failure.kind)
        self._metrics.observe_deployment(pool.model, deployment.provider, deployment.name, False)
        self._stats.record_upstream(False, failure.describe())
        key = (pool.model, deployment.name)
        before = run.records.get(key)
        run.records[key] = Attempt(
            pool.model, deployment.name, failure.kind, (before.tries if before else 0) + 1,
            failure.status, failure.message,
            (before is not None and before.opened_breaker)
            or (not was_open and state is State.OPEN))
        run.kinds.append(failure.kind)

    def _record_skipped(self, run: Run, pool: Pool, tried: list[Slot]) -> None:
        for slot in pool.slots:
            if slot not in tried and self._eligible(run, slot):
                run.records[(pool.model, slot.deployment.name)] = Attempt(
                    pool.model, slot.deployment.name, FailureKind.CIRCUIT_OPEN, 0)

    # --- the wait -------------------------------------------------------------------------

    def _wait_before_retry(self, run: Run, pool: Pool, tried: list[Slot],
                           failure: UpstreamFailure, waits: Iterator[float],
                           tries: int) -> float | None:
        """Seconds to sleep before the next try of this model (0: another deployment is
        waiting untried), or None to move on now."""
        if any(s not in tried and s.usable and self._eligible(run, s) for s in pool.slots):
            return 0.0
        if not failure.retryable or tries >= self._settings.retry_max_attempts:
            return None
        if failure.retry_after is not None:
            wait = min(failure.retry_after, self._settings.retry_after_max_s)
        else:
            wait = backoff.full_jitter(next(waits))
        if time.monotonic() + wait >= run.deadline.at:
            return None
        return wait

    # --- the final error ------------------------------------------------------------------

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

    @staticmethod
    def _deadline_error(run: Run) -> GatewayError:
        summary = run.summary()
        detail = f" Tried: {summary}." if summary else ""
        return GatewayError(
            ErrorCode.DEADLINE_EXCEEDED,
            f"The request's deadline of {run.deadline.seconds:g} s ran out.{detail}",
        )

    def _exhausted(self, run: Run, chain: list[str]) -> GatewayError:
        summary = run.summary()
        if not run.kinds:
            retry_in = min(s.breaker.retry_in() for name in chain for s in self.pools[name].slots)
            return GatewayError(
                ErrorCode.CIRCUIT_OPEN,
                f"Every model in the chain is temporarily disabled: {summary}.",
                headers={"Retry-After": str(max(1, math.ceil(retry_in)))},
            )
        if all(kind is FailureKind.TIMEOUT for kind in run.kinds):
            return GatewayError(ErrorCode.UPSTREAM_TIMEOUT, f"The upstream timed out: {summary}.")
        last = run.kinds[-1]
        code = ErrorCode.UPSTREAM_ERROR if last is FailureKind.STATUS \
            else ErrorCode(f"upstream_{last}")
        models = {a.model for a in run.records.values()}
        prefix = "All models failed" if len(models) > 1 else \
            "Every deployment failed" if len(run.records) > 1 else "The upstream failed"
        return GatewayError(code, f"{prefix}: {summary}.")


def _model_state(pool: Pool) -> State:
    states = {s.breaker.state for s in pool.slots}
    for state in (State.CLOSED, State.HALF_OPEN):
        if state in states:
            return state
    return State.OPEN
