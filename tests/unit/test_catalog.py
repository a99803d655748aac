"""The model catalog: the packaged seed catalog, fallback chains, and readable load errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.catalog import DEFAULT_CATALOG, CatalogError, load_catalog

SEED_CHAT_MODELS = {
    # name: (provider, input = output price, max_tokens)
    "deepseek-v3.2": ("deepseek", "0.42", 4096),
    "gemini-2.5-flash": ("google", "2.50", 8192),
    "gpt-4.1": ("openai", "8.00", 4096),
    "claude-sonnet-4.5": ("anthropic", "15.00", 4096),
}


def seed() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))


def write(tmp_path: Path, content: object, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content),
                    encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    return str(caught.value)


# --- the packaged catalog -------------------------------------------------------------------

def test_the_default_catalog_has_the_seeds_four_chat_models_and_one_embedding_model() -> None:
    catalog = load_catalog()
    assert catalog.default_model == "deepseek-v3.2"
    assert catalog.currency == "USD"
    assert set(catalog.models) == {*SEED_CHAT_MODELS, "text-embedding-3-small"}
    chat = {name for name, entry in catalog.models.items() if entry.kind == "chat"}
    assert chat == set(SEED_CHAT_MODELS)


@pytest.mark.parametrize(("name", "provider", "price", "max_tokens"),
                         [(n, *v) for n, v in SEED_CHAT_MODELS.items()])
def test_each_seed_model_has_the_seeds_price_and_defaults(
    name: str, provider: str, price: str, max_tokens: int,
) -> None:
    entry = load_catalog().models[name]
    assert entry.provider == provider
    assert entry.upstream_model == name
    assert entry.input_usd_per_mtok == Decimal(price)
    assert entry.output_usd_per_mtok == Decimal(price)
    assert entry.max_tokens == max_tokens
    assert entry.temperature == 0.7


def test_prices_are_exact_decimals_not_floats() -> None:
    entry = load_catalog().models["deepseek-v3.2"]
    assert isinstance(entry.input_usd_per_mtok, Decimal)
    assert str(entry.input_usd_per_mtok) == "0.42"
    assert str(load_catalog().models["gemini-2.5-flash"].output_usd_per_mtok) == "2.50"


def test_the_embedding_model_is_priced_on_input_only() -> None:
    entry = load_catalog().models["text-embedding-3-small"]
    assert (entry.kind, entry.input_usd_per_mtok, entry.output_usd_per_mtok) == (
        "embedding", Decimal("0.02"), Decimal(0))
    assert (entry.max_tokens, entry.temperature) == (None, None)


def test_an_explicit_path_to_the_default_catalog_loads_the_same_catalog() -> None:
    assert load_catalog(DEFAULT_CATALOG) == load_catalog()


def test_the_fallback_chain_of_deepseek_is_gemini_then_gpt() -> None:
    assert load_catalog().chain("deepseek-v3.2") == ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1"]


@pytest.mark.parametrize("name", ["gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5"])
def test_a_model_without_fallbacks_is_a_chain_of_one(name: str) -> None:
    assert load_catalog().chain(name) == [name]


def test_a_chain_lists_each_model_once_and_keeps_the_order(tmp_path: Path) -> None:
    raw = seed()
    raw["fallbacks"] = {"gpt-4.1": ["claude-sonnet-4.5", "deepseek-v3.2", "claude-sonnet-4.5"]}
    catalog = load_catalog(write(tmp_path, raw))
    assert catalog.chain("gpt-4.1") == ["gpt-4.1", "claude-sonnet-4.5", "deepseek-v3.2"]


def test_get_returns_none_for_an_unknown_model() -> None:
    catalog = load_catalog()
    assert catalog.get("gpt-5") is None
    assert catalog.get("gpt-4.1") is catalog.models["gpt-4.1"]


def test_numeric_prices_in_yaml_are_accepted(tmp_path: Path) -> None:
    raw = {"default_model": "m", "models": {"m": {
        "provider": "p", "upstream_model": "up-m", "input_usd_per_mtok": 1.5,
        "output_usd_per_mtok": 3}}}
    entry = load_catalog(write(tmp_path, raw)).models["m"]
    assert (entry.input_usd_per_mtok, entry.output_usd_per_mtok) == (Decimal("1.5"), Decimal(3))
    assert (entry.kind, entry.max_tokens, entry.temperature) == ("chat", None, None)


# --- bad catalogs ---------------------------------------------------------------------------

def test_a_negative_price_names_the_file_the_entry_and_the_field(tmp_path: Path) -> None:
    raw = seed()
    raw["models"]["gpt-4.1"]["output_usd_per_mtok"] = "-1"
    path = write(tmp_path, raw)
    assert load_error(path) == (
        f"{path}: invalid model catalog: models.gpt-4.1.output_usd_per_mtok: "
        "Input should be greater than or equal to 0")


def test_an_unknown_field_names_the_file_the_entry_and_the_field(tmp_path: Path) -> None:
    raw = seed()
    raw["models"]["claude-sonnet-4.5"]["colour"] = "red"
    path = write(tmp_path, raw)
    assert load_error(path) == (
        f"{path}: invalid model catalog: models.claude-sonnet-4.5.colour: "
        "Extra inputs are not permitted")


def test_a_missing_upstream_model_names_the_file_the_entry_and_the_field(tmp_path: Path) -> None:
    raw = seed()
    del raw["models"]["gemini-2.5-flash"]["upstream_model"]
    path = write(tmp_path, raw)
    assert load_error(path) == (
        f"{path}: invalid model catalog: models.gemini-2.5-flash.upstream_model: Field required")


def test_a_fallback_to_an_unknown_model_names_the_chain_and_the_model(tmp_path: Path) -> None:
    raw = seed()
    raw["fallbacks"]["deepseek-v3.2"] = ["gpt-4.1", "gpt-5"]
    path = write(tmp_path, raw)
    message = load_error(path)
    assert message.startswith(f"{path}: invalid model catalog: ")
    assert message.endswith("fallbacks.deepseek-v3.2: 'gpt-5' is not in models")


def test_fallbacks_for_an_unknown_model_are_refused(tmp_path: Path) -> None:
    raw = seed()
    raw["fallbacks"]["gpt-5"] = ["gpt-4.1"]
    path = write(tmp_path, raw)
    assert load_error(path).endswith("fallbacks.gpt-5: 'gpt-5' is not in models")


def test_a_default_model_not_in_models_is_named(tmp_path: Path) -> None:
    raw = seed()
    raw["default_model"] = "gpt-5"
    path = write(tmp_path, raw)
    message = load_error(path)
    assert message.startswith(f"{path}: invalid model catalog: ")
    assert message.endswith("default_model: 'gpt-5' is not in models")


def test_a_missing_default_model_is_named(tmp_path: Path) -> None:
    raw = seed()
    del raw["default_model"]
    path = write(tmp_path, raw)
    assert load_error(path) == f"{path}: invalid model catalog: default_model: Field required"


def test_an_empty_models_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"default_model": "m", "models": {}})
    assert load_error(path) == (f"{path}: invalid model catalog: models: "
                                "Dictionary should have at least 1 item after validation, not 0")


def test_every_problem_is_listed_in_one_message(tmp_path: Path) -> None:
    raw = seed()
    raw["models"]["gpt-4.1"]["input_usd_per_mtok"] = "-2"
    raw["models"]["deepseek-v3.2"]["temperature"] = 3
    message = load_error(write(tmp_path, raw))
    assert "models.deepseek-v3.2.temperature: Input should be less than or equal to 2" in message
    assert ("models.gpt-4.1.input_usd_per_mtok: Input should be greater than or equal to 0"
            in message)
    assert message.count("; ") == 1


def test_invalid_yaml_is_named_as_such(tmp_path: Path) -> None:
    path = write(tmp_path, "models: [unclosed\n")
    assert load_error(path).startswith(f"{path}: not valid YAML: ")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert load_error(path) == f"{path}: cannot read the model catalog: No such file or directory"


def test_a_list_instead_of_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, ["deepseek-v3.2", "gpt-4.1"])
    assert load_error(path) == f"{path}: the catalog must be a mapping with a 'models' entry"


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_error(path) == f"{path}: the catalog must be a mapping with a 'models' entry"


def test_a_catalog_error_does_not_chain_the_pydantic_error(tmp_path: Path) -> None:
    raw = seed()
    raw["currency"] = "EUR"
    with pytest.raises(CatalogError) as caught:
        load_catalog(write(tmp_path, raw))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__ is True
    assert "currency: Input should be 'USD'" in str(caught.value)


# --- providers and deployments --------------------------------------------------------------

def two_providers() -> dict[str, Any]:
    raw = seed()
    raw["providers"] = {
        "openai-direct": {"base_url": "https://api.openai.com/v1/", "api_key_env": "OPENAI_KEY",
                          "timeout_s": 20, "headers": {"OpenAI-Organization": "org-1"}},
        "my-bento": {"base_url": "http://127.0.0.1:3001/v1", "completions": True},
    }
    raw["models"]["gpt-4.1"]["deployments"] = [
        {"provider": "holysheep", "weight": 3},
        {"provider": "openai-direct", "upstream_model": "gpt-4.1-2025-04-14",
         "input_usd_per_mtok": "2.00"},
    ]
    return raw


def load_with(tmp_path: Path, raw: dict[str, Any], **environ: str) -> Any:
    return load_catalog(write(tmp_path, raw), environ.get)


def catalog_error(tmp_path: Path, raw: dict[str, Any], **environ: str) -> str:
    path = write(tmp_path, raw)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, environ.get)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid model catalog: ")
    return message.removeprefix(f"{path}: invalid model catalog: ")


def test_a_model_without_deployments_is_one_deployment_on_holysheep() -> None:
    (deployment,) = load_catalog().deployments("deepseek-v3.2")
    assert (deployment.name, deployment.provider, deployment.upstream_model,
            deployment.weight) == ("holysheep", "holysheep", "deepseek-v3.2", 1.0)
    assert deployment.price.input_usd_per_mtok == Decimal("0.42")


def test_deployments_name_their_provider_model_id_weight_and_price(tmp_path: Path) -> None:
    catalog = load_with(tmp_path, two_providers(), OPENAI_KEY="sk-o")
    first, second = catalog.deployments("gpt-4.1")
    assert (first.name, first.provider, first.upstream_model, first.weight) == (
        "holysheep", "holysheep", "gpt-4.1", 3.0)
    assert (second.name, second.provider, second.upstream_model, second.weight) == (
        "openai-direct", "openai-direct", "gpt-4.1-2025-04-14", 1.0)
    # its own input price, the model's output price
    assert (second.price.input_usd_per_mtok, second.price.output_usd_per_mtok) == (
        Decimal("2.00"), Decimal("8.00"))
    assert catalog.providers["openai-direct"].base_url == "https://api.openai.com/v1"
    assert catalog.providers_used() == ["holysheep", "openai-direct"]


def test_the_old_provider_field_is_the_vendor_label(tmp_path: Path) -> None:
    raw = seed()
    raw["models"]["gpt-4.1"] = {"provider": "openai", "upstream_model": "gpt-4.1",
                                "input_usd_per_mtok": 1}
    entry = load_with(tmp_path, raw).models["gpt-4.1"]
    assert (entry.owned_by, entry.provider) == ("openai", "openai")
    assert load_with(tmp_path, raw).deployments("gpt-4.1")[0].provider == "holysheep"


def test_an_unknown_provider_is_named(tmp_path: Path) -> None:
    raw = two_providers()
    raw["models"]["gpt-4.1"]["deployments"][1]["provider"] = "azure"
    assert catalog_error(tmp_path, raw, OPENAI_KEY="k") == (
        "models.gpt-4.1.deployments.1.provider: 'azure' is not in providers")


def test_a_missing_key_variable_is_named(tmp_path: Path) -> None:
    assert catalog_error(tmp_path, two_providers()) == (
        "providers.openai-direct.api_key_env: the environment variable 'OPENAI_KEY' is not set")


@pytest.mark.parametrize("weight", [0, -1])
def test_a_weight_of_zero_or_less_is_named(tmp_path: Path, weight: int) -> None:
    raw = two_providers()
    raw["models"]["gpt-4.1"]["deployments"][0]["weight"] = weight
    assert catalog_error(tmp_path, raw, OPENAI_KEY="k") == (
        "models.gpt-4.1.deployments.0.weight: Input should be greater than 0")


def test_a_cycle_in_fallbacks_is_named(tmp_path: Path) -> None:
    raw = seed()
    raw["fallbacks"] = {"deepseek-v3.2": ["gemini-2.5-flash"], "gemini-2.5-flash": ["gpt-4.1"],
                        "gpt-4.1": ["deepseek-v3.2"]}
    assert catalog_error(tmp_path, raw) == (
        "fallbacks.gpt-4.1: a cycle (deepseek-v3.2 -> gemini-2.5-flash -> gpt-4.1 -> "
        "deepseek-v3.2)")


def test_a_key_in_a_providers_headers_is_refused(tmp_path: Path) -> None:
    raw = two_providers()
    raw["providers"]["my-bento"]["headers"] = {"Authorization": "Bearer sk-in-yaml"}
    message = catalog_error(tmp_path, raw, OPENAI_KEY="k")
    assert message == ("providers.my-bento.headers: must not carry the key: name "
                       "its variable in api_key_env")
    assert "sk-in-yaml" not in message


def test_two_deployments_of_a_model_need_distinct_names(tmp_path: Path) -> None:
    raw = two_providers()
    raw["models"]["gpt-4.1"]["deployments"][1]["provider"] = "holysheep"
    assert catalog_error(tmp_path, raw, OPENAI_KEY="k") == (
        "models.gpt-4.1.deployments.1.name: 'holysheep' is used twice (name each deployment)")


def test_a_balancer_can_be_chosen_per_model(tmp_path: Path) -> None:
    raw = two_providers()
    raw["models"]["gpt-4.1"]["balancer"] = "weighted"
    assert load_with(tmp_path, raw, OPENAI_KEY="k").models["gpt-4.1"].balancer == "weighted"
    raw["models"]["gpt-4.1"]["balancer"] = "random"
    assert catalog_error(tmp_path, raw, OPENAI_KEY="k").startswith("models.gpt-4.1.balancer: ")
