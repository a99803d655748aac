"""The configuration reference (docs/configuration.md) names every setting the gateway reads and
every field a catalog may hold, so a new one cannot ship undocumented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.catalog import Catalog, DeploymentEntry, ModelEntry, ProviderEntry
from gateway.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    names = [f.validation_alias for f in Settings.model_fields.values()]
    missing = [name for name in names if f"`{name}`" not in text]
    assert missing == []


@pytest.mark.parametrize("model", [Catalog, ProviderEntry, ModelEntry, DeploymentEntry])
def test_every_catalog_field_is_in_the_configuration_reference(model: type[BaseModel]) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in text]
    assert missing == []
