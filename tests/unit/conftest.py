"""Fixtures shared by the unit tests that need a real ``redis-server``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtest.harness import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
