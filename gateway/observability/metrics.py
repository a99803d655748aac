"""Every Prometheus metric the gateway exports, declared in one place.

Served on BentoML's own ``/metrics``. ``prometheus_client`` is imported only when ``Metrics`` is
built in a worker: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` after importing the service module,
and a client imported earlier would count in single-process mode, invisible to ``/metrics``.
Labels come from small fixed sets: catalog model names, route names, status classes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# Keyed by the breaker state's value (routing.breaker.State is a StrEnum of these).
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """``registry`` is for tests; workers register with the default (multiprocess) one."""
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = registry or REGISTRY
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

        self.requests = Counter(
            "gateway_requests_total", "Requests answered, by route, model and status class.",
            ["endpoint", "model", "status_class"], registry=registry)
        self.errors = Counter(
            "gateway_errors_total", "Requests that ended in an error, by OpenAI error type.",
            ["endpoint", "type"], registry=registry)
        self.latency = Histogram(
            "gateway_request_duration_seconds", "Total time from request to last byte.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.upstream_latency = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent waiting on the upstream (all attempts of a request).",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time the gateway itself added: total minus time waiting on the upstream.",
            ["endpoint"], buckets=OVERHEAD_BUCKETS, registry=registry)
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Time to the first streamed chunk.",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.tokens = Counter(
            "gateway_tokens_total", "Tokens billed, by model and direction (input/output).",
            ["model", "direction"], registry=registry)
        self.cost = Counter("gateway_cost_usd_total", "Upstream cost in US dollars.", ["model"],
                            registry=registry)
        self.fallbacks = Counter(
            "gateway_fallbacks_total", "Requests answered by a model other than the one asked for.",
            ["requested", "served"], registry=registry)
        self.retries = Counter(
            "gateway_upstream_failures_total",
            "Failed upstream attempts (each one retried or fallen back from), by kind.",
            ["model", "deployment", "kind"], registry=registry)
        self.deployment_requests = Counter(
            "gateway_deployment_requests_total",
            "Upstream calls per deployment (catalog names), by outcome: ok or failed.",
            ["model", "provider", "deployment", "outcome"], registry=registry)
        self.batch_size = Histogram(
            "gateway_batch_size", "Inputs per upstream embeddings call made by the batcher.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry)
        self.batch_wait = Histogram(
            "gateway_batch_wait_seconds", "Longest queue wait of a job in a dispatched batch.",
            buckets=OVERHEAD_BUCKETS, registry=registry)
        self.cache_results = Counter(
            "gateway_cache_requests_total",
            "Cache lookups by result: hit, semantic_hit, miss, coalesced, error.",
            ["result"], registry=registry)
        self.cache_lookup = Histogram(
            "gateway_cache_lookup_seconds", "Time to look a request up in the cache.",
            buckets=OVERHEAD_BUCKETS, registry=registry)
        self.cache_saved = Counter(
            "gateway_cache_saved_usd_total", "Upstream dollars not spent thanks to cache hits.",
            registry=registry)
        self.cache_store_errors = Counter(
            "gateway_cache_store_errors_total",
            "Cache store operations that failed (the cache then fails open).", registry=registry)
        self.cache_entries = Gauge(
            "gateway_cache_entries", "Entries in the in-process cache store.",
            multiprocess_mode="livesum", registry=registry)
        self.gc_pause = Histogram(
            "gateway_gc_pause_seconds", "Garbage-collector pauses, by generation.",
            ["generation"], buckets=OVERHEAD_BUCKETS, registry=registry)
        self.breaker = Gauge(
            "gateway_breaker_state",
            "Circuit breaker per deployment of a model: 0 closed, 1 half-open, 2 open.",
            ["model", "deployment"], multiprocess_mode="max", registry=registry)

        self.tenant_refusals = Counter(
            "gateway_tenant_refusals_total",
            "Requests refused by a key's limits: rpm, tpm, parallel, budget_daily, "
            "budget_monthly, model.", ["reason"], registry=registry)
        self.limits_unavailable = Counter(
            "gateway_limits_unavailable_total",
            "Requests decided without the limits store (Redis down): fail_open or fail_closed.",
            ["decision"], registry=registry)
        self.budget_threshold = Counter(
            "gateway_budget_threshold_total",
            "Keys seen crossing a budget's soft threshold (GATEWAY_BUDGET_SOFT_RATIO) or "
            "exhausting it, once per key, period and worker.", ["period", "level"],
            registry=registry)
        self.tenant_writes_dropped = Counter(
            "gateway_tenant_writes_dropped_total",
            "Ledger or limit counter updates dropped because the write buffer was full.",
            ["store"], registry=registry)
        self.client_disconnects = Counter(
            "gateway_client_disconnects_total",
            "Clients that left (or were dropped) before their answer was complete, by when: "
            "body, waiting, streaming, stalled.",
            ["reason"], registry=registry)
        self.intake_refusals = Counter(
            "gateway_intake_refusals_total",
            "Requests refused while their body was read: body_timeout, too_large, readers_full, "
            "buffer_full.",
            ["reason"], registry=registry)
        self.patched = Gauge(
            "gateway_patched",
            "1 when the gateway's patches of uvicorn's and BentoML's internals are applied, 0 "
            "when it runs unpatched (GATEWAY_UNPATCHED).", multiprocess_mode="min",
            registry=registry)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: ``labels()`` validates and locks on every
        call, and the label sets here are small and fixed."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_failure(self, model: str, deployment: str, kind: str) -> None:
        self.child(self.retries, model, deployment, kind).inc()

    def observe_breaker(self, model: str, deployment: str, state: str) -> None:
        self.child(self.breaker, model, deployment).set(BREAKER_VALUES[state])

    def observe_deployment(self, model: str, provider: str, deployment: str, ok: bool) -> None:
        self.child(self.deployment_requests, model, provider, deployment,
                   "ok" if ok else "failed").inc()

    def observe_usage(self, model: str, prompt: int, completion: int, cost: Decimal) -> None:
        self.child(self.tokens, model, "input").inc(prompt)
        self.child(self.tokens, model, "output").inc(completion)
        self.child(self.cost, model).inc(float(cost))

    def observe_upstream(self, model: str, seconds: float) -> None:
        self.child(self.upstream_latency, model).observe(seconds)

    def observe_fallback(self, requested: str, served: str) -> None:
        self.child(self.fallbacks, requested, served).inc()

    def observe_ttft(self, model: str, seconds: float) -> None:
        self.child(self.ttft, model).observe(seconds)

    def observe_cache_result(self, result: str) -> None:
        self.child(self.cache_results, result).inc()

    def observe_cache_lookup(self, seconds: float) -> None:
        self.cache_lookup.observe(seconds)

    def observe_cache_entries(self, entries: int) -> None:
        self.cache_entries.set(entries)

    def observe_cache_saved(self, saved: Decimal) -> None:
        self.cache_saved.inc(float(saved))

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self.child(self.gc_pause, str(generation)).observe(seconds)

    def observe_disconnect(self, reason: str) -> None:
        self.child(self.client_disconnects, reason).inc()

    def observe_intake_refusal(self, reason: str) -> None:
        self.child(self.intake_refusals, reason).inc()

    def observe_request(
        self, endpoint: str, model: str, status: int, total_s: float, overhead_s: float,
        error_type: str | None = None,
    ) -> None:
        self.child(self.requests, endpoint, model, f"{status // 100}xx").inc()
        self.child(self.latency, endpoint, model).observe(total_s)
        self.child(self.overhead, endpoint).observe(max(0.0, overhead_s))
        if error_type is not None:
            self.child(self.errors, endpoint, error_type).inc()
