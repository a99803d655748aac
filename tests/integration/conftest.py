"""Session-wide real servers: one fake provider and one gateway in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.harness import CLIENT_KEY, FakeProvider, GatewayServer


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def fake(log_dir: Path) -> Iterator[FakeProvider]:
    provider = FakeProvider(log_dir, "--chunks", "5")
    yield provider
    provider.stop()


@pytest.fixture(autouse=True)
def _clean_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture(scope="session")
def gateway(fake: FakeProvider, log_dir: Path) -> Iterator[GatewayServer]:
    # A high breaker threshold keeps fault tests on this shared gateway from tripping breakers
    # that later tests would trip over; breaker behaviour has its own gateways.
    server = GatewayServer(log_dir, fake.base_url, env={"GATEWAY_BREAKER_FAILURES": "1000",
                                                        "GATEWAY_BREAKER_MIN_CALLS": "1000"})
    yield server
    server.stop()


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      timeout=30) as http:
        yield http
