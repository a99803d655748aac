"""The limits script's own Redis connection, against a real ``redis-server`` and loopback
servers that never answer or answer junk."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.tenants.scriptwire import ScriptWire, command
from loadtest.harness import RedisServer, free_port

# Echoes its argument after counting the call in KEYS[1]: replies show which call they answer.
ECHO = "redis.call('INCR', KEYS[1]); return ARGV[1]"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis.from_url(redis_server.url) as client:
        await client.flushall()
        await client.script_flush()
        yield client


async def silent_server(answer: bytes | None,
                        accepted: list[int] | None = None) -> tuple[asyncio.Server, str]:
    """Accepts and reads; sends ``answer`` once a command arrives (None: never answers);
    appends to ``accepted`` for every connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if accepted is not None:
            accepted.append(1)
        try:
            while await reader.read(65536):
                if answer is not None:
                    writer.write(answer)
        except ConnectionError:
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"redis://127.0.0.1:{port}/0"


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert command(b"EVALSHA", "ab", 1, "k") == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n")
    assert command("é") == b"*1\r\n$2\r\n\xc3\xa9\r\n"  # lengths count bytes, not characters


async def test_calls_in_flight_together_each_get_their_own_reply(
        redis_server: RedisServer, redis: Redis) -> None:
    wire = ScriptWire(redis_server.url, ECHO, 2.0)
    try:
        replies = [wire.submit(["calls"], [f"call-{i}"]) for i in range(200)]
        assert await asyncio.gather(*replies) == [f"call-{i}".encode() for i in range(200)]
        assert int(await redis.get("calls")) == 200
    finally:
        await wire.aclose()


async def test_a_flushed_script_is_sent_again_whole(redis_server: RedisServer,
                                                     redis: Redis) -> None:
    wire = ScriptWire(redis_server.url, ECHO, 2.0)
    try:
        assert await wire.submit(["calls"], ["one"]) == b"one"
        await redis.script_flush()
        assert await wire.submit(["calls"], ["two"]) == b"two"
        assert int(await redis.get("calls")) == 2  # the EVALSHA that missed ran nothing
    finally:
        await wire.aclose()


async def test_a_script_error_is_a_response_error_and_the_connection_goes_on(
        redis_server: RedisServer, redis: Redis) -> None:
    wire = ScriptWire(redis_server.url, "return redis.call('INCR', KEYS[1])", 2.0)
    try:
        await redis.set("text", "not a number")
        with pytest.raises(ResponseError):
            await wire.submit(["text"], [])
        with pytest.raises(ResponseError, match="no text"):  # an integer is not the JSON expected
            await wire.submit(["counter"], [])
        assert await redis.get("counter") == b"1"
    finally:
        await wire.aclose()


async def test_the_url_selects_the_database_and_authenticates_without_leaking_the_password(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:
        async with Redis.from_url(server.url) as admin:
            await admin.config_set("requirepass", "s3cret-pw")
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/3"
        wire = ScriptWire(url, ECHO, 2.0)
        try:
            assert await wire.submit(["in-db-3"], ["x"]) == b"x"
        finally:
            await wire.aclose()
        async with Redis.from_url(url) as db3:
            assert await db3.get("in-db-3") == b"1"
        wrong = ScriptWire(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", ECHO, 2.0)
        with pytest.raises(RedisConnectionError) as refused:
            await wrong.submit(["k"], ["x"])
        assert "wrong-pw" not in str(refused.value)
        await wrong.aclose()
    finally:
        server.stop()


async def test_redis_gone_fails_at_once_and_its_return_is_found_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    wire = ScriptWire(server.url, ECHO, 2.0)
    try:
        assert await wire.submit(["k"], ["up"]) == b"up"
        server.stop()
        for _ in range(2):
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(wire.submit(["k"], ["down"]), 1.0)
        server = RedisServer(tmp_path, port=server.port)
        assert await wire.submit(["k"], ["back"]) == b"back"
    finally:
        server.stop()
        await wire.aclose()


async def test_no_answer_times_out_and_the_next_call_opens_a_new_connection() -> None:
    accepted: list[int] = []
    server, url = await silent_server(None, accepted)
    wire = ScriptWire(url, ECHO, 0.2)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError):
            await wire.submit(["k"], ["x"])
        assert asyncio.get_running_loop().time() - started < 1.0
        with pytest.raises(RedisTimeoutError):
            await wire.submit(["k"], ["x"])
        assert len(accepted) == 2
    finally:
        await wire.aclose()
        server.close()


@pytest.mark.parametrize("junk", [b"%%%garbage\r\n", b"$3\r\nabc\r\n$3\r\nxyz\r\n"])
async def test_junk_or_a_reply_nobody_asked_for_is_a_connection_error(junk: bytes) -> None:
    server, url = await silent_server(junk)
    wire = ScriptWire(url, ECHO, 2.0)
    try:
        if junk.startswith(b"$"):  # the first reply is well formed and is the call's own
            assert await wire.submit(["k"], ["x"]) == b"abc"
            await asyncio.sleep(0.05)
            assert wire._wire is not None and wire._wire.lost  # the extra reply closed it
        else:
            with pytest.raises(RedisConnectionError, match="malformed"):
                await wire.submit(["k"], ["x"])
    finally:
        await wire.aclose()
        server.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    server, url = await silent_server(None)
    server.close()
    await server.wait_closed()
    wire = ScriptWire(url, ECHO, 1.0)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await wire.submit(["k"], ["x"])
    await wire.aclose()


def test_it_runs_on_uvloop_as_the_gateway_does(redis_server: RedisServer) -> None:
    """uvloop's transports are not asyncio's classes: a first version asserted they were."""

    async def call() -> bytes:
        wire = ScriptWire(redis_server.url, ECHO, 2.0)
        try:
            return await wire.submit(["calls"], ["on uvloop"])
        finally:
            await wire.aclose()

    assert uvloop.run(call()) == b"on uvloop"


@pytest.fixture
def tls_and_unix_redis(tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A ``redis-server`` listening on TLS (a throwaway CA the process trusts through
    ``SSL_CERT_FILE``) and on a unix socket, not on plain TCP: (``rediss://`` URL, socket path)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    port, sock = free_port(), tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(tmp_path / "key.pem"),
         "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no",
         "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"rediss://127.0.0.1:{port}/0", str(sock)
    finally:
        server.terminate()
        server.wait(10)


async def test_tls_and_unix_socket_urls_reach_redis(tls_and_unix_redis: tuple[str, str]) -> None:
    tls_url, sock = tls_and_unix_redis
    for url in (tls_url, f"unix://{sock}?db=2"):
        wire = ScriptWire(url, ECHO, 2.0)
        try:
            assert await wire.submit(["calls"], [url]) == url.encode()
        finally:
            await wire.aclose()
    with pytest.MonkeyPatch.context() as patch:  # a CA nobody trusts: the handshake fails
        patch.setenv("SSL_CERT_FILE", "/nonexistent.pem")
        untrusted = ScriptWire(tls_url, ECHO, 2.0)
    with pytest.raises(RedisConnectionError, match="SSL"):
        await untrusted.submit(["calls"], ["x"])
    await untrusted.aclose()
