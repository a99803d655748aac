"""The model catalog: providers, models and their deployments, prices, defaults and fallbacks.

A *provider* is an OpenAI-compatible upstream (base URL, the name of the environment variable
holding its key, headers, timeouts, pool size). ``holysheep`` always exists, configured by
``HOLYSHEEP_BASE_URL`` / ``HOLYSHEEP_API_KEY``, unless the catalog declares its own. A *model* is
served by one or more *deployments* (provider + upstream model id + weight, optionally its own
price); a model with no ``deployments`` is one deployment on ``default_provider``. A model's
``owned_by`` (``provider`` is its older alias) is only the vendor label shown in /v1/models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.settings import loadable_ca_bundle, read_environment

DEFAULT_CATALOG = Path(__file__).with_name("models.yaml")
HOLYSHEEP = "holysheep"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class CatalogError(Exception):
    """A catalog that cannot be used; the message names the file, the entry and the field."""


class Strategy(StrEnum):
    """How a model's deployments share its traffic (the catalog's `balancer`)."""

    WEIGHTED = "weighted"
    LEAST_IN_FLIGHT = "least_in_flight"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; ``pricing.cost_usd`` takes it (or a ModelEntry). The cache's
    prices are None where the provider has none: those tokens cost the full input price."""

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """One way to serve a catalog model: a provider, the id it knows the model by, a weight."""

    model: str
    name: str
    provider: str
    upstream_model: str
    weight: float
    price: Price


class ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    api_key_env: str | None = Field(None, pattern=ENV_NAME)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)
    connect_timeout_s: float | None = Field(None, gt=0)
    max_connections: int | None = Field(None, ge=1)
    max_keepalive: int | None = Field(None, ge=0)
    completions: bool = False  # serves the legacy /v1/completions natively
    proxy: str | None = Field(None, pattern=r"^https?://")  # else HTTPS_PROXY etc.
    ca_bundle: str | None = Field(None, min_length=1)  # a PEM file trusted besides the defaults
    http2: bool | None = None  # default: GATEWAY_HTTP2

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: str | None) -> str | None:
        return None if value is None else loadable_ca_bundle(value)

    @field_validator("headers")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        if any(name.lower() == "authorization" for name in value):
            raise ValueError("must not carry the key: name its variable in api_key_env")
        return value


class DeploymentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, min_length=1)  # default: the provider's name
    provider: str = Field(min_length=1)
    upstream_model: str | None = Field(None, min_length=1)  # default: the model's
    weight: float = Field(1.0, gt=0)
    input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    output_usd_per_mtok: Decimal | None = Field(None, ge=0)
    cached_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    cache_write_usd_per_mtok: Decimal | None = Field(None, ge=0)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owned_by: str = Field(min_length=1, validation_alias=AliasChoices("owned_by", "provider"))
    upstream_model: str = Field(min_length=1)
    kind: Literal["chat", "embedding"] = "chat"
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(Decimal(0), ge=0)
    cached_input_usd_per_mtok: Decimal | None = Field(None, ge=0)  # None: the input price
    cache_write_usd_per_mtok: Decimal | None = Field(None, ge=0)  # None: the input price
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    deployments: list[DeploymentEntry] = Field(default_factory=list)
    balancer: Strategy | None = None  # default: GATEWAY_BALANCER

    @property
    def provider(self) -> str:
        """The vendor label (the field's older name)."""
        return self.owned_by


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str
    default_provider: str = HOLYSHEEP
    currency: Literal["USD"] = "USD"
    note: str = ""
    providers: dict[str, ProviderEntry] = Field(default_factory=dict)
    models: dict[str, ModelEntry] = Field(min_length=1)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    _deployments: dict[str, tuple[Deployment, ...]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _references_exist(self) -> Catalog:
        if self.default_model not in self.models:
            raise ValueError(f"default_model: {self.default_model!r} is not in models")
        if self.models[self.default_model].kind != "chat":
            raise ValueError(f"default_model: {self.default_model!r} is not a chat model")
        if not self.knows_provider(self.default_provider):
            raise ValueError(f"default_provider: {self.default_provider!r} is not in providers")
        for name, chain in self.fallbacks.items():
            for target in (name, *chain):
                if target not in self.models:
                    raise ValueError(f"fallbacks.{name}: {target!r} is not in models")
                if self.models[target].kind != self.models[name].kind:
                    raise ValueError(f"fallbacks.{name}: {target!r} is a "
                                     f"{self.models[target].kind} model, {name!r} is not")
        self._no_cycles()
        for name, entry in self.models.items():
            self._deployments[name] = self._resolve(name, entry)
        return self

    def _no_cycles(self) -> None:
        done: set[str] = set()

        def visit(name: str, path: list[str]) -> None:
            if name in path:
                loop = " -> ".join([*path[path.index(name):], name])
                raise ValueError(f"fallbacks.{path[-1]}: a cycle ({loop})")
            if name in done:
                return
            for target in self.fallbacks.get(name, ()):
                visit(target, [*path, name])
            done.add(name)

        for name in self.fallbacks:
            visit(name, [])

    def _resolve(self, name: str, entry: ModelEntry) -> tuple[Deployment, ...]:
        specs = entry.deployments or [DeploymentEntry(provider=self.default_provider)]
        seen: set[str] = set()
        resolved = []
        for index, spec in enumerate(specs):
            where = f"models.{name}.deployments.{index}"
            if not self.knows_provider(spec.provider):
                raise ValueError(f"{where}.provider: {spec.provider!r} is not in providers")
            label = spec.name or spec.provider
            if label in seen:
                raise ValueError(f"{where}.name: {label!r} is used twice (name each deployment)")
            seen.add(label)
            price = Price(
                entry.input_usd_per_mtok if spec.input_usd_per_mtok is None
                else spec.input_usd_per_mtok,
                entry.output_usd_per_mtok if spec.output_usd_per_mtok is None
                else spec.output_usd_per_mtok,
                entry.cached_input_usd_per_mtok if spec.cached_input_usd_per_mtok is None
                else spec.cached_input_usd_per_mtok,
                entry.cache_write_usd_per_mtok if spec.cache_write_usd_per_mtok is None
                else spec.cache_write_usd_per_mtok)
            resolved.append(Deployment(name, label, spec.provider,
                                       spec.upstream_model or entry.upstream_model,
                                       spec.weight, price))
        return tuple(resolved)

    def knows_provider(self, name: str) -> bool:
        return name in self.providers or name == HOLYSHEEP

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def deployments(self, name: str) -> tuple[Deployment, ...]:
        return self._deployments[name]

    def providers_used(self) -> list[str]:
        """Every provider some deployment names, in catalog order."""
        names: dict[str, None] = {}
        for deployments in self._deployments.values():
            for deployment in deployments:
                names[deployment.provider] = None
        return list(names)

    def chain(self, name: str) -> list[str]:
        """The model itself, then its fallbacks (each once)."""
        chain = [name]
        for other in self.fallbacks.get(name, ()):
            if other not in chain:
                chain.append(other)
        return chain


def _problem(err: dict[str, object]) -> str:
    loc = ".".join(str(p) for p in err["loc"])  # type: ignore[attr-defined]
    ctx = err.get("ctx")
    if err["type"] == "value_error" and isinstance(ctx, dict) and "error" in ctx:
        message = str(ctx["error"])
        return f"{loc}: {message}" if loc else message
    return f"{loc or '(top level)'}: {err['msg']}"


def load_catalog(
    path: Path | None = None, environ: Callable[[str], str | None] = read_environment,
) -> Catalog:
    """Load and validate a catalog, turning every problem into one readable CatalogError.

    ``environ`` looks a provider's key variable up (tests pass a dict's ``get``): a provider
    that names one needs it set; a provider with no ``api_key_env`` is sent no key."""
    path = path or DEFAULT_CATALOG
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the model catalog: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the catalog must be a mapping with a 'models' entry")
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(dict(err)) for err in exc.errors())
        raise CatalogError(f"{path}: invalid model catalog: {problems}") from None
    for name, provider in catalog.providers.items():
        if provider.api_key_env and not environ(provider.api_key_env):
            raise CatalogError(
                f"{path}: invalid model catalog: providers.{name}.api_key_env: the environment "
                f"variable {provider.api_key_env!r} is not set")
    return catalog
