"""Every environment variable the gateway reads, typed and validated in one place."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.holysheep.ai/v1"


class Settings(BaseSettings):
    """Gateway configuration. Read once at start-up; nothing else touches ``os.environ``."""

    model_config = SettingsConfigDict(extra="ignore")

    # Upstream
    upstream_api_key: SecretStr | None = Field(None, validation_alias="HOLYSHEEP_API_KEY")
    upstream_base_url: str = Field(DEFAULT_BASE_URL, validation_alias="HOLYSHEEP_BASE_URL")
    http_client: str = Field("aiohttp", validation_alias="GATEWAY_HTTP_CLIENT")
    max_connections: int = Field(100, ge=1, validation_alias="GATEWAY_MAX_CONNECTIONS")
    max_keepalive: int = Field(20, ge=0, validation_alias="GATEWAY_MAX_KEEPALIVE")
    upstream_timeout_s: float = Field(30.0, gt=0, validation_alias="GATEWAY_UPSTREAM_TIMEOUT")
    connect_timeout_s: float = Field(5.0, gt=0, validation_alias="GATEWAY_CONNECT_TIMEOUT")
    stream_idle_timeout_s: float = Field(
        30.0, gt=0, validation_alias="GATEWAY_STREAM_IDLE_TIMEOUT"
    )

    # Egress: proxies, trust, HTTP/2 (docs/connections.md); a catalog provider may override each
    https_proxy: str | None = Field(None, validation_alias="HTTPS_PROXY")
    http_proxy: str | None = Field(None, validation_alias="HTTP_PROXY")
    no_proxy: str | None = Field(None, validation_alias="NO_PROXY")
    ca_bundle: Path | None = Field(None, validation_alias="GATEWAY_CA_BUNDLE")
    http2: bool = Field(False, validation_alias="GATEWAY_HTTP2")

    balancer: Literal["weighted", "least_in_flight"] = Field(
        "least_in_flight", validation_alias="GATEWAY_BALANCER")

    # Catalog and clients
    config_path: Path | None = Field(None, validation_alias="GATEWAY_CONFIG")
    api_keys_csv: str = Field("", validation_alias="GATEWAY_API_KEYS")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")

    # Teams: keys, rate limits, budgets, ledger, access log (gateway/tenants/)
    keys_file: Path | None = Field(None, validation_alias="GATEWAY_KEYS_FILE")
    keys_db: Path | None = Field(None, validation_alias="GATEWAY_KEYS_DB")
    admin_key: SecretStr | None = Field(None, validation_alias="GATEWAY_ADMIN_KEY")
    budget_soft_ratio: float = Field(0.8, gt=0, le=1, validation_alias="GATEWAY_BUDGET_SOFT_RATIO")
    access_log: bool = Field(True, validation_alias="GATEWAY_ACCESS_LOG")
    limits_fail_closed: bool = Field(False, validation_alias="GATEWAY_LIMITS_FAIL_CLOSED")
    limits_overlap: bool = Field(True, validation_alias="GATEWAY_LIMITS_OVERLAP")
    limits_redis_timeout_s: float = Field(0.25, gt=0,
                                          validation_alias="GATEWAY_LIMITS_REDIS_TIMEOUT")
    dashboard_session_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 86400,
                                         validation_alias="GATEWAY_DASHBOARD_SESSION_TTL")
    bentoml_home: Path = Field(Path.home() / "bentoml", validation_alias="BENTOML_HOME")

    # Service and request limits
    timeout_s: float = Field(300.0, gt=0, validation_alias="GATEWAY_TIMEOUT")
    max_concurrency: int = Field(50, ge=1, validation_alias="GATEWAY_MAX_CONCURRENCY")
    workers: int | Literal["cpu_count"] = Field(1, validation_alias="GATEWAY_WORKERS")
    bentoml_telemetry: bool = Field(False, validation_alias="GATEWAY_BENTOML_TELEMETRY")
    max_body_bytes: int = Field(1 << 20, ge=1024, validation_alias="GATEWAY_MAX_BODY_BYTES")
    body_timeout_s: float = Field(30.0, gt=0, validation_alias="GATEWAY_BODY_TIMEOUT")
    max_body_readers: int = Field(1024, ge=1, validation_alias="GATEWAY_MAX_BODY_READERS")
    max_body_buffer_bytes: int = Field(64 << 20, ge=1024,
                                       validation_alias="GATEWAY_MAX_BODY_BUFFER_BYTES")
    header_timeout_s: float = Field(10.0, gt=0, validation_alias="GATEWAY_HEADER_TIMEOUT")
    max_header_bytes: int = Field(32 << 10, ge=1024, validation_alias="GATEWAY_MAX_HEADER_BYTES")
    max_headers: int = Field(100, ge=10, validation_alias="GATEWAY_MAX_HEADERS")

    # Retries
    retry_max_attempts: int = Field(3, ge=1, validation_alias="GATEWAY_RETRY_ATTEMPTS")
    retry_base_s: float = Field(0.25, ge=0, validation_alias="GATEWAY_RETRY_BASE")
    retry_max_wait_s: float = Field(8.0, ge=0, validation_alias="GATEWAY_RETRY_MAX_WAIT")
    retry_after_max_s: float = Field(30.0, ge=0, validation_alias="GATEWAY_RETRY_AFTER_MAX")
    retry_statuses_csv: str = Field(
        "429,500,502,503,504", validation_alias="GATEWAY_RETRY_STATUSES"
    )

    # Adaptive batching of upstream embedding calls, and the /batch endpoint
    batch_max_size: int = Field(32, ge=1, validation_alias="GATEWAY_BATCH_MAX_SIZE")
    batch_max_latency_ms: float = Field(50.0, ge=0, validation_alias="GATEWAY_BATCH_MAX_LATENCY_MS")
    batch_max_concurrent: int = Field(2, ge=1, validation_alias="GATEWAY_BATCH_MAX_CONCURRENT")
    batch_max_requests: int = Field(100, ge=1, validation_alias="GATEWAY_BATCH_MAX_REQUESTS")
    batch_parallelism: int = Field(8, ge=1, validation_alias="GATEWAY_BATCH_PARALLELISM")

    # Response cache
    cache_enabled: bool = Field(True, validation_alias="GATEWAY_CACHE")
    cache_ttl_s: float = Field(3600.0, gt=0, validation_alias="GATEWAY_CACHE_TTL")
    cache_max_entries: int = Field(10_000, ge=1, validation_alias="GATEWAY_CACHE_MAX_ENTRIES")
    cache_max_bytes: int = Field(64 << 20, ge=1024, validation_alias="GATEWAY_CACHE_MAX_BYTES")
    cache_store_length: bool = Field(False, validation_alias="GATEWAY_CACHE_STORE_LENGTH")
    cache_redis_timeout_s: float = Field(0.1, gt=0, validation_alias="GATEWAY_CACHE_REDIS_TIMEOUT")
    semantic_cache: bool = Field(False, validation_alias="GATEWAY_SEMANTIC_CACHE")
    # Cosine floor below which the verifier is not asked; the verifier's own probability threshold.
    semantic_threshold: float | None = Field(None, gt=0, le=1,
                                             validation_alias="GATEWAY_SEMANTIC_THRESHOLD")
    semantic_verifier_threshold: float | None = Field(
        None, gt=0, lt=1, validation_alias="GATEWAY_SEMANTIC_VERIFIER_THRESHOLD")
    semantic_embedder: Literal["local", "upstream"] = Field(
        "local", validation_alias="GATEWAY_SEMANTIC_EMBEDDER")
    semantic_embedding_model: str = Field("text-embedding-3-small",
                                          validation_alias="GATEWAY_SEMANTIC_EMBEDDING_MODEL")

    # Tracing (BentoML's OpenTelemetry exporters; spans around upstream calls)
    tracing_exporter: Literal["zipkin", "otlp"] | None = Field(
        None, validation_alias="GATEWAY_TRACING_EXPORTER")
    tracing_endpoint: str | None = Field(None, validation_alias="GATEWAY_TRACING_ENDPOINT")
    tracing_sample_rate: float = Field(1.0, ge=0, le=1,
                                       validation_alias="GATEWAY_TRACING_SAMPLE_RATE")

    # Circuit breaker
    breaker_failures: int = Field(5, ge=1, validation_alias="GATEWAY_BREAKER_FAILURES")
    breaker_ratio: float = Field(0.5, gt=0, le=1, validation_alias="GATEWAY_BREAKER_RATIO")
    breaker_window_s: float = Field(30.0, gt=0, validation_alias="GATEWAY_BREAKER_WINDOW")
    breaker_min_calls: int = Field(20, ge=1, validation_alias="GATEWAY_BREAKER_MIN_CALLS")
    breaker_cooldown_s: float = Field(15.0, gt=0, validation_alias="GATEWAY_BREAKER_COOLDOWN")

    # Spend: end users, budget alerts (gateway/tenants/)
    end_user_header: str | None = Field(None, min_length=1,
                                        validation_alias="GATEWAY_END_USER_HEADER")
    max_end_users: int = Field(1000, ge=1, validation_alias="GATEWAY_LEDGER_MAX_END_USERS")
    alert_webhooks_csv: str = Field("", validation_alias="GATEWAY_ALERT_WEBHOOKS")
    alert_format: Literal["json", "slack"] = Field("json", validation_alias="GATEWAY_ALERT_FORMAT")
    alert_retry_base_s: float = Field(0.5, gt=0, validation_alias="GATEWAY_ALERT_RETRY_BASE")

    # Graceful shutdown (gateway/server/drain.py): on SIGTERM /readyz fails for the drain time
    # while requests are still served, then requests in flight get the grace time to finish.
    shutdown_drain_s: float = Field(5.0, ge=0, validation_alias="GATEWAY_SHUTDOWN_DRAIN")
    shutdown_grace_s: float = Field(30.0, gt=0, validation_alias="GATEWAY_SHUTDOWN_GRACE")

    # Shipping: the patches of third-party internals, browsers (CORS)
    unpatched: bool = Field(False, validation_alias="GATEWAY_UNPATCHED")
    cors_origins_csv: str = Field("", validation_alias="GATEWAY_CORS_ORIGINS")

    @field_validator("cors_origins_csv")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin and origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin (https://host[:port], or *)")
        return value

    @cached_property
    def cors_origins(self) -> tuple[str, ...]:
        """Browser origins allowed to call the gateway (CORS); none: CORS is off."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins_csv.split(",")
                     if o.strip())

    @model_validator(mode="after")
    def _tracing_needs_an_endpoint(self) -> Settings:
        if self.tracing_exporter and not self.tracing_endpoint:
            raise ValueError("GATEWAY_TRACING_EXPORTER needs GATEWAY_TRACING_ENDPOINT")
        return self

    @field_validator("upstream_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("retry_statuses_csv")
    @classmethod
    def _statuses_are_numbers(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and not (part.strip().isdigit() and 100 <= int(part) <= 599):
                raise ValueError(f"{part.strip()!r} is not an HTTP status code")
        return value

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or 'cpu_count'")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(loadable_ca_bundle(str(value)))

    @field_validator("alert_webhooks_csv")
    @classmethod
    def _webhook_urls(cls, value: str) -> str:
        for url in (u.strip().removeprefix("slack:") for u in value.split(",")):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError("each webhook must be an http(s) URL, optionally after 'slack:'")
        return value

    @field_validator("http_client")
    @classmethod
    def _known_client(cls, value: str) -> str:
        if value not in ("aiohttp", "httpx", "pyreqwest"):
            raise ValueError("must be 'aiohttp', 'httpx' or 'pyreqwest'")
        return value

    @cached_property
    def api_keys(self) -> tuple[bytes, ...]:
        """Client keys as bytes, ready for a constant-time comparison."""
        return tuple(k.strip().encode() for k in self.api_keys_csv.split(",") if k.strip())

    @property
    def auth_required(self) -> bool:
        """Any of these makes every client present a key; none of them leaves the gateway open."""
        return bool(self.api_keys or self.keys_file or self.admin_key)

    @property
    def tenants_db(self) -> Path:
        """Admin-made keys and the ledger when there is no Redis."""
        return self.keys_db or self.bentoml_home / "gateway" / "tenants.db"

    @cached_property
    def retry_statuses(self) -> frozenset[int]:
        return frozenset(int(s) for s in self.retry_statuses_csv.split(",") if s.strip())

    @property
    def upstream_secret(self) -> str:
        return self.upstream_api_key.get_secret_value() if self.upstream_api_key else ""


def loadable_ca_bundle(path: str) -> str:
    """``path`` if it is a PEM file of certificates OpenSSL can load, else a ValueError saying
    why (at start-up, not at the first upstream call)."""
    import ssl

    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{path} is not a PEM file of CA certificates ({exc})") from None
    return path


def read_environment(name: str) -> str | None:
    """A variable named by the catalog (a provider's ``api_key_env``), read at start-up."""
    return os.environ.get(name) or None
