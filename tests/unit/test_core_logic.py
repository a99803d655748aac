"""Pure logic: pricing, the catalog, settings, SSE decoding, the breaker, request planning."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.breaker import CircuitBreaker, State
from gateway.catalog import CatalogError, ModelEntry, load_catalog
from gateway.chat import plan_chat
from gateway.errors import GatewayError
from gateway.pricing import cost_usd, format_usd, read_usage, to_micro
from gateway.settings import Settings
from gateway.sse import EventDecoder

CATALOG = load_catalog()


# --- pricing -------------------------------------------------------------------------------

def test_input_and_output_tokens_are_priced_separately_and_exactly() -> None:
    entry = ModelEntry(provider="x", upstream_model="x", input_usd_per_mtok=Decimal("0.42"),
                       output_usd_per_mtok=Decimal("1.68"))
    assert cost_usd(entry, 1000, 500) == Decimal("0.00126")
    assert cost_usd(entry, 1, 0) == Decimal("0.00000042")  # never rounded inside


def test_rounding_to_the_micro_dollar_happens_only_at_the_edge() -> None:
    entry = CATALOG.models["deepseek-v3.2"]
    assert format_usd(cost_usd(entry, 1, 0)) == "0.000000"
    assert format_usd(cost_usd(entry, 3, 0)) == "0.000001"  # 0.00000126, half up
    assert format_usd(cost_usd(entry, 100, 100)) == "0.000084"  # the seed's figure per request
    assert to_micro(Decimal("0.0000025")) == Decimal("0.000003")


def test_read_usage_accepts_only_integer_counts() -> None:
    assert read_usage({"prompt_tokens": 5, "completion_tokens": 7}) == (5, 7)
    assert read_usage({"prompt_tokens": 5}) == (5, 0)
    assert read_usage({"prompt_tokens": "5"}) is None
    assert read_usage(None) is None


# --- catalog ------------------------------------------------------------------------------

def test_the_default_catalog_has_the_seeds_models_prices_and_chain() -> None:
    prices = {n: (e.input_usd_per_mtok, e.output_usd_per_mtok, e.max_tokens)
              for n, e in CATALOG.models.items() if e.kind == "chat"}
    assert prices == {
        "deepseek-v3.2": (Decimal("0.42"), Decimal("0.42"), 4096),
        "gemini-2.5-flash": (Decimal("2.50"), Decimal("2.50"), 8192),
        "gpt-4.1": (Decimal("8.00"), Decimal("8.00"), 4096),
        "claude-sonnet-4.5": (Decimal("15.00"), Decimal("15.00"), 4096),
    }
    assert CATALOG.chain("deepseek-v3.2") == ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1"]
    assert CATALOG.chain("gpt-4.1") == ["gpt-4.1"]
    assert CATALOG.models["text-embedding-3-small"].input_usd_per_mtok == Decimal("0.02")


GOOD_ENTRY = "provider: p\n    upstream_model: u\n    input_usd_per_mtok: 1\n"


@pytest.mark.parametrize(("text", "names"), [
    ("default_model: a\nmodels:\n  a:\n    provider: p\n    upstream_model: u\n"
     "    input_usd_per_mtok: -1\n", ["models.a.input_usd_per_mtok"]),
    ("default_model: a\nmodels:\n  a:\n    " + GOOD_ENTRY + "    colour: red\n", ["models.a.colour"]),
    ("default_model: a\nmodels:\n  a:\n    provider: p\n    input_usd_per_mtok: 1\n",
     ["models.a.upstream_model"]),
    ("default_model: a\nmodels:\n  a:\n    " + GOOD_ENTRY + "fallbacks:\n  a: [ghost]\n",
     ["fallbacks.a", "ghost"]),
    ("default_model: zzz\nmodels:\n  a:\n    " + GOOD_ENTRY, ["zzz"]),
    ("models: [unclosed\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["mapping"]),
])
def test_a_bad_catalog_names_the_file_the_entry_and_the_field(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(path) in str(caught.value)
    for name in names:
        assert name in str(caught.value)


def test_a_missing_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.yaml")


# --- settings -----------------------------------------------------------------------------

def test_settings_come_from_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", "sk-secret")
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "http://upstream.test/v1/")
    monkeypatch.setenv("GATEWAY_API_KEYS", " a , b,,c ")
    monkeypatch.setenv("GATEWAY_RETRY_STATUSES", "429, 503")
    settings = Settings()
    assert settings.upstream_base_url == "http://upstream.test/v1"
    assert settings.api_keys == (b"a", b"b", b"c")
    assert settings.retry_statuses == frozenset({429, 503})
    assert "sk-secret" not in repr(settings)
    assert settings.upstream_secret == "sk-secret"


def test_a_base_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "ftp://nope")
    with pytest.raises(ValueError, match="http"):
        Settings()


# --- SSE ----------------------------------------------------------------------------------

def test_events_are_whole_whatever_the_chunk_boundaries() -> None:
    stream = b'data: {"a":1}\r\n\r\n: keep-alive\n\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n'
    decoder = EventDecoder()
    events = [e for byte in range(len(stream)) for e in decoder.feed(stream[byte:byte + 1])]
    assert [e.data for e in events] == [b'{"a":1}', b"line one\nline two", b"[DONE]"]
    assert events[-1].is_done and not events[0].is_done
    assert decoder.pending == b""


def test_an_unterminated_event_is_pending() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b"') [0].data == b'{"a":1}'
    assert decoder.pending == b'data: {"b"'


# --- circuit breaker ----------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **overrides: float) -> CircuitBreaker:
    options = {"failures": 3, "ratio": 0.5, "window_s": 10, "min_calls": 6, "cooldown_s": 5}
    options.update(overrides)
    return CircuitBreaker(clock=clock, **options)  # type: ignore[arg-type]


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=1000)
    b.record_failure(), b.record_failure(), b.record_success(), b.record_failure()
    b.record_failure()
    assert b.state is State.CLOSED
    b.record_failure()
    assert b.state is State.OPEN and not b.allow()


def test_a_failure_ratio_over_the_window_opens_it_and_old_calls_fall_out() -> None:
    clock = Clock()
    b = breaker(clock, failures=100)
    for ok in (True, False, True, False, True):
        b.record_success() if ok else b.record_failure()
        clock.now += 1
    assert b.state is State.CLOSED  # 5 calls < min_calls
    clock.now += 20  # everything so far leaves the window
    for ok in (True, True, True, True, True, False):
        b.record_success() if ok else b.record_failure()
    assert b.state is State.CLOSED  # 1 in 6
    for _ in range(5):
        b.record_failure()
    assert b.state is State.OPEN  # 6 in 11


def test_after_the_cooldown_one_probe_decides() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    assert b.retry_in() == 5
    clock.now += 5
    assert b.state is State.HALF_OPEN
    assert b.allow() and not b.allow()  # exactly one probe
    b.release()
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN and b.retry_in() == 5  # re-opened, cooldown restarted
    clock.now += 5
    assert b.allow()
    b.record_success()
    assert b.state is State.CLOSED and b.allow() and b.allow()


# --- planning -----------------------------------------------------------------------------

def test_seed_defaults_fill_model_max_tokens_and_temperature_but_keep_client_values() -> None:
    plan = plan_chat(CATALOG, {"messages": [{"role": "user", "content": "x"}]}, seed_defaults=True)
    assert (plan.model, plan.payload["max_tokens"], plan.payload["temperature"]) == (
        "deepseek-v3.2", 4096, 0.7)
    plan = plan_chat(CATALOG, {"model": "gemini-2.5-flash", "temperature": 0.1,
                               "messages": [{"role": "user", "content": "x"}]}, seed_defaults=True)
    assert (plan.payload["max_tokens"], plan.payload["temperature"]) == (8192, 0.1)


def test_openai_semantics_require_a_model_and_add_nothing() -> None:
    with pytest.raises(GatewayError) as caught:
        plan_chat(CATALOG, {"messages": [{"role": "user", "content": "x"}]}, seed_defaults=False)
    assert caught.value.status == 400 and caught.value.param == "model"
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], "seed": 7,
            "logit_bias": {"1": 2}}
    plan = plan_chat(CATALOG, body, seed_defaults=False)
    assert plan.payload == body


def test_streams_always_ask_for_usage_and_remember_whether_the_client_did() -> None:
    base = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], "stream": True}
    plan = plan_chat(CATALOG, base, seed_defaults=False)
    assert plan.payload["stream_options"] == {"include_usage": True} and not plan.wants_usage
    plan = plan_chat(CATALOG, {**base, "stream_options": {"include_usage": True}},
                     seed_defaults=False)
    assert plan.wants_usage


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "gpt-4.1", "messages": []}, 400, "messages"),
    ({"model": "gpt-4.1"}, 400, "messages"),
    ({"model": "gpt-4.1", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    (["not", "an", "object"], 400, None),
])
def test_bad_requests_are_refused_naming_the_field(body: object, status: int,
                                                   param: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        plan_chat(CATALOG, body, seed_defaults=False)
    assert (caught.value.status, caught.value.param) == (status, param)
