"""Settings: the documented environment variables are read, validated and kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from gateway.settings import DEFAULT_BASE_URL, Settings

KEY = "sk-holysheep-unit-secret-123"
ENV_NAMES = [field.validation_alias for field in Settings.model_fields.values()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the machine running the tests may leak into Settings()."""
    for name in ENV_NAMES:
        monkeypatch.delenv(str(name), raising=False)


def test_every_field_is_read_from_an_aliased_variable() -> None:
    assert all(isinstance(name, str) and name.isupper() for name in ENV_NAMES)


def test_defaults_without_any_variable() -> None:
    settings = Settings()
    assert settings.upstream_api_key is None
    assert settings.upstream_secret == ""
    assert settings.upstream_base_url == DEFAULT_BASE_URL == "https://api.holysheep.ai/v1"
    assert settings.api_keys == ()
    assert settings.config_path is None
    assert settings.max_body_bytes == 1_048_576
    assert settings.retry_statuses == frozenset({429, 500, 502, 503, 504})
    assert (settings.retry_max_attempts, settings.retry_base_s, settings.retry_max_wait_s,
            settings.retry_after_max_s) == (3, 0.25, 8.0, 30.0)
    assert (settings.breaker_failures, settings.breaker_ratio, settings.breaker_window_s,
            settings.breaker_min_calls, settings.breaker_cooldown_s) == (5, 0.5, 30.0, 20, 15.0)
    assert settings.timeout_s == 300.0


def test_the_upstream_key_is_read_from_holysheep_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", KEY)
    settings = Settings()
    assert isinstance(settings.upstream_api_key, SecretStr)
    assert settings.upstream_api_key.get_secret_value() == KEY
    assert settings.upstream_secret == KEY


def test_the_upstream_key_does_not_show_in_repr_str_or_a_dump(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", KEY)
    settings = Settings()
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert KEY not in repr(settings.upstream_api_key)
    assert str(settings.upstream_api_key) == "**********"
    assert KEY not in settings.model_dump_json()


def test_the_base_url_is_read_from_holysheep_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "http://127.0.0.1:9000/v1")
    assert Settings().upstream_base_url == "http://127.0.0.1:9000/v1"


@pytest.mark.parametrize(("value", "expected"), [
    ("https://api.example.com/v1/", "https://api.example.com/v1"),
    ("http://up.test/v1///", "http://up.test/v1"),
    ("http://up.test", "http://up.test"),
])
def test_trailing_slashes_are_stripped_from_the_base_url(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str,
) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", value)
    assert Settings().upstream_base_url == expected


@pytest.mark.parametrize("value", ["ftp://up.test/v1", "up.test/v1", "", "HTTP//up.test"])
def test_a_base_url_that_is_not_http_is_rejected(
    monkeypatch: pytest.MonkeyPatch, value: str,
) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    errors = caught.value.errors()
    assert [(e["loc"], e["msg"]) for e in errors] == [
        (("HOLYSHEEP_BASE_URL",), "Value error, must start with http:// or https://")]


def test_client_keys_are_split_on_commas_and_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", " key-one, key-two ,,key-three , ")
    assert Settings().api_keys == (b"key-one", b"key-two", b"key-three")


def test_an_empty_client_key_list_means_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", " , ")
    assert Settings().api_keys == ()


def test_the_catalog_path_is_read_from_gateway_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "models.yaml"))
    assert Settings().config_path == tmp_path / "models.yaml"


def test_the_body_limit_is_read_from_gateway_max_body_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_MAX_BODY_BYTES", "2048")
    assert Settings().max_body_bytes == 2048


def test_a_body_limit_below_1024_bytes_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MAX_BODY_BYTES", "1023")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"] for e in caught.value.errors()] == [("GATEWAY_MAX_BODY_BYTES",)]


def test_retry_statuses_are_read_from_gateway_retry_statuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_RETRY_STATUSES", "429, 503 ,")
    assert Settings().retry_statuses == frozenset({429, 503})


def test_a_non_numeric_retry_status_is_rejected_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_RETRY_STATUSES", "429,abc")
    with pytest.raises(ValidationError):
        Settings()


def test_retry_and_breaker_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"GATEWAY_RETRY_ATTEMPTS": "5", "GATEWAY_RETRY_BASE": "0.001",
                        "GATEWAY_RETRY_MAX_WAIT": "0.5", "GATEWAY_RETRY_AFTER_MAX": "2",
                        "GATEWAY_BREAKER_FAILURES": "7", "GATEWAY_BREAKER_COOLDOWN": "1.5",
                        "GATEWAY_TIMEOUT": "12"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.retry_max_attempts, settings.retry_base_s, settings.retry_max_wait_s,
            settings.retry_after_max_s) == (5, 0.001, 0.5, 2.0)
    assert (settings.breaker_failures, settings.breaker_cooldown_s, settings.timeout_s) == (
        7, 1.5, 12.0)


def test_constructor_arguments_use_the_variable_names_and_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "http://from-env.test/v1")
    settings = Settings(HOLYSHEEP_BASE_URL="http://from-args.test/v1/")  # type: ignore[call-arg]
    assert settings.upstream_base_url == "http://from-args.test/v1"


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("4", 4), ("cpu_count", "cpu_count")])
def test_workers_accept_a_count_or_cpu_count(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: object,
) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", value)
    assert Settings().workers == expected


@pytest.mark.parametrize(("name", "value"), [
    ("GATEWAY_WORKERS", "0"),
    ("GATEWAY_HTTP_CLIENT", "requests"),
    ("GATEWAY_RETRY_ATTEMPTS", "0"),
    ("GATEWAY_BREAKER_RATIO", "1.5"),
])
def test_out_of_range_values_are_rejected_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"][0] for e in caught.value.errors()] == [name]


def test_a_ca_bundle_that_is_missing_or_not_pem_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("GATEWAY_CA_BUNDLE", str(tmp_path / "absent.pem"))
    with pytest.raises(ValidationError, match="no such file"):
        Settings()
    (tmp_path / "junk.pem").write_text("not a certificate")
    monkeypatch.setenv("GATEWAY_CA_BUNDLE", str(tmp_path / "junk.pem"))
    with pytest.raises(ValidationError, match="not a PEM file of CA certificates"):
        Settings()


def test_proxies_are_read_from_the_usual_variables_in_either_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".internal,10.0.0.1")
    settings = Settings()
    assert (settings.https_proxy, settings.http_proxy, settings.no_proxy) == (
        "http://proxy.corp:3128", "http://plain.corp:3128", ".internal,10.0.0.1")
