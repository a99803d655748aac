"""The model catalog: which models exist, what they cost, their defaults and fallback chains."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = Path(__file__).with_name("models.yaml")


class CatalogError(Exception):
    """A catalog that cannot be used; the message names the file, the entry and the field."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    upstream_model: str = Field(min_length=1)
    kind: Literal["chat", "embedding"] = "chat"
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(Decimal(0), ge=0)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str
    currency: Literal["USD"] = "USD"
    note: str = ""
    models: dict[str, ModelEntry] = Field(min_length=1)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_exist(self) -> Catalog:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not in models")
        if self.models[self.default_model].kind != "chat":
            raise ValueError(f"default_model {self.default_model!r} is not a chat model")
        for name, chain in self.fallbacks.items():
            for target in (name, *chain):
                if target not in self.models:
                    raise ValueError(f"fallbacks.{name}: {target!r} is not in models")
                if self.models[target].kind != self.models[name].kind:
                    raise ValueError(f"fallbacks.{name}: {target!r} is a "
                                     f"{self.models[target].kind} model, {name!r} is not")
        return self

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def chain(self, name: str) -> list[str]:
        """The model itself, then its fallbacks (each once)."""
        chain = [name]
        for other in self.fallbacks.get(name, ()):
            if other not in chain:
                chain.append(other)
        return chain


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate a catalog, turning every problem into one readable CatalogError."""
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
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CatalogError(f"{path}: invalid model catalog: {problems}") from None
