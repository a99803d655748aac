"""Every ``REDIS_URL`` form on the one Redis client, against real ``redis-server`` processes (and
a real Sentinel), running the limits script as the gateway does."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from gateway.redis_client import open_redis
from gateway.tenants.limits import LimitsScript
from loadtest.harness import Process, RedisServer, free_port, throwaway_tls

# Counts the call in KEYS[1] and echoes ARGV[1]: the reply shows the script ran there.
ECHO = "redis.call('INCR', KEYS[1]); return ARGV[1]"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RedisServer]]:
    folder = tmp_path_factory.mktemp("redis-forms")
    started = {
        "password": RedisServer(folder, password="pw-SECRET-1"),
        "tls": RedisServer(folder, tls=throwaway_tls(folder)),
        "unix": RedisServer(folder, unix=True),
    }
    yield started
    for server in started.values():
        server.stop()


async def echo(url: str, text: str) -> bytes:
    redis = open_redis(url, 2.0)
    try:
        return await LimitsScript(redis, ECHO).submit(["calls"], [text])
    finally:
        await redis.aclose()


@pytest.mark.parametrize("form", ["password", "tls", "unix"])
async def test_each_url_form_runs_the_limits_script(servers: dict[str, RedisServer],
                                                    form: str) -> None:
    assert await echo(servers[form].url, form) == form.encode()


async def test_a_wrong_password_is_refused(servers: dict[str, RedisServer]) -> None:
    with pytest.raises(AuthenticationError):
        await echo(servers["password"].url.replace("pw-SECRET-1", "wrong"), "x")


async def test_tls_without_the_ca_fails_the_handshake(servers: dict[str, RedisServer]) -> None:
    untrusted = servers["tls"].url.split("?")[0]  # no ssl_ca_certs: certifi/system roots only
    with pytest.raises(ConnectionError, match="(?i)certificate|ssl"):
        await echo(untrusted, "x")
    unchecked = f"{untrusted}?ssl_cert_reqs=none"  # the URL's own TLS option is honoured
    assert await echo(unchecked, "unchecked") == b"unchecked"


async def test_the_script_is_sent_again_after_redis_forgets_it(
    servers: dict[str, RedisServer],
) -> None:
    url = servers["unix"].url
    redis = open_redis(url, 2.0)
    try:
        script = LimitsScript(redis, ECHO)
        assert await script.submit(["calls"], ["first"]) == b"first"
        await redis.script_flush()
        assert await script.submit(["calls"], ["again"]) == b"again"
        with pytest.raises(ResponseError):
            await LimitsScript(redis, "return redis.call('NOSUCHCOMMAND')").submit([], [])
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int]]:
    folder = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(folder, password="master-pw-2")
    port = free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\n"
                    f"sentinel monitor gateway 127.0.0.1 {master.port} 1\n"
                    "sentinel auth-pass gateway master-pw-2\n")
    process = Process(["redis-server", str(conf), "--sentinel"], folder / "sentinel.log")
    deadline = time.monotonic() + 15
    while "+monitor master gateway" not in process.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield master, port
    process.stop()
    master.stop()


async def test_a_sentinel_url_reaches_the_master_it_names(
    sentinel: tuple[RedisServer, int],
) -> None:
    master, port = sentinel
    url = f"redis+sentinel://:master-pw-2@127.0.0.1:{port}/gateway/0"
    assert await echo(url, "via sentinel") == b"via sentinel"
    direct = open_redis(master.url, 2.0)
    try:
        assert await direct.get("calls") == b"1"
    finally:
        await direct.aclose()


def test_a_sentinel_url_without_a_service_is_refused() -> None:
    with pytest.raises(ValueError, match="names its Sentinels and a service"):
        open_redis("redis+sentinel://127.0.0.1:26379", 1.0)
