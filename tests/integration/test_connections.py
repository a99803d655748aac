"""The upstream leg as operators expect it, through real ``bentoml serve`` gateways: a real
CONNECT proxy (Debian's tinyproxy) in front of a fake provider served over TLS by a throwaway
CA, a provider that gzips every answer, and one that closes a kept-alive connection after
reading the request."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from loadtest.harness import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    FakeProvider,
    GatewayServer,
    Process,
    free_port,
    throwaway_tls,
)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def ask(gateway: GatewayServer, model: str = "deepseek-v3.2", **extra: Any) -> httpx.Response:
    return httpx.post(f"{gateway.v1}/chat/completions", headers=AUTH, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hello"}],
                            **extra})


class Tinyproxy:
    """Debian's tinyproxy on a free loopback port, logging every request it serves."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"tinyproxy-{self.port}.log"
        conf = folder / f"tinyproxy-{self.port}.conf"
        conf.write_text(f'Port {self.port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 100\n'
                        f'LogFile "{self.log_path}"\nLogLevel Connect\nAllow 127.0.0.1\n')
        self.process = Process(["tinyproxy", "-d", "-c", str(conf)], folder / "tinyproxy.out")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tinyproxy did not start:\n{self.process.log()}")

    def tunnels_to(self, port: int) -> int:
        """How many CONNECT tunnels it opened to 127.0.0.1:``port``."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return len(re.findall(rf"CONNECT 127\.0\.0\.1:{port} HTTP", text))

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return throwaway_tls(tmp_path_factory.mktemp("upstream-tls"))


@pytest.fixture(scope="module")
def secure(log_dir: Path, tls: tuple[Path, Path, Path]) -> Iterator[FakeProvider]:
    provider = FakeProvider(log_dir, tls=tls)
    yield provider
    provider.stop()


@pytest.fixture
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    server = Tinyproxy(tmp_path_factory.mktemp("proxy"))
    yield server
    server.stop()


CLIENTS = ["aiohttp", "httpx", "pyreqwest"]


@pytest.fixture(params=CLIENTS)
def proxied(log_dir: Path, secure: FakeProvider, proxy: Tinyproxy, tls: tuple[Path, Path, Path],
            request: pytest.FixtureRequest) -> Iterator[GatewayServer]:
    gateway = GatewayServer(log_dir, secure.base_url, env={
        "HTTPS_PROXY": proxy.url, "GATEWAY_CA_BUNDLE": str(tls[2]),
        "GATEWAY_HTTP_CLIENT": request.param})
    yield gateway
    gateway.stop()


def test_with_https_proxy_every_call_goes_through_the_proxy(
    proxied: GatewayServer, secure: FakeProvider, proxy: Tinyproxy,
) -> None:
    secure.reset()
    for _ in range(3):
        assert ask(proxied).status_code == 200
    streamed = ask(proxied, stream=True)
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert secure.stats()["requests"]["deepseek-v3.2"] == 4
    assert proxy.tunnels_to(secure.port) >= 1
    proxy.stop()  # the proxy gone, the provider is unreachable: there is no way around it
    refused = ask(proxied)
    assert refused.status_code == 502, refused.text
    assert secure.stats()["requests"]["deepseek-v3.2"] == 4


def test_no_proxy_names_the_host_and_the_proxy_sees_nothing(
    log_dir: Path, secure: FakeProvider, tls: tuple[Path, Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    own = Tinyproxy(tmp_path_factory.mktemp("proxy-bypassed"))
    gateway = GatewayServer(log_dir, secure.base_url, env={
        "HTTPS_PROXY": own.url, "NO_PROXY": "localhost,127.0.0.1",
        "GATEWAY_CA_BUNDLE": str(tls[2])})
    try:
        secure.reset()
        assert ask(gateway).status_code == 200
        assert secure.stats()["requests"]["deepseek-v3.2"] == 1
        assert own.tunnels_to(secure.port) == 0
    finally:
        gateway.stop()
        own.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_without_the_ca_bundle_the_call_fails_as_a_tls_error(
    log_dir: Path, secure: FakeProvider, client: str,
) -> None:
    gateway = GatewayServer(log_dir, secure.base_url, env={"GATEWAY_HTTP_CLIENT": client})
    try:
        secure.reset()
        response = ask(gateway)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert "TLS certificate" in error["message"]
        assert {"type", "code"} <= set(error)
        assert secure.stats()["requests"].get("deepseek-v3.2", 0) == 0
    finally:
        gateway.stop()


class ClosingProvider:
    """Answers the first request on each connection and keeps it alive; reads the next one on
    it whole, then closes the connection without a byte. Counts every request it read."""

    ANSWER = orjson.dumps({
        "id": "chatcmpl-closing", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "kept alive"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    def __init__(self) -> None:
        self.received = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer, served = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])  # type: ignore[index]
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                with self._lock:
                    self.received += 1
                served += 1
                if served > 1:
                    return  # read, never answered: the connection closes
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(self.ANSWER), self.ANSWER))

    def stop(self) -> None:
        self._server.close()


def two_provider_catalog(path: Path, gzipped: FakeProvider, closing: ClosingProvider) -> Path:
    path.write_text(yaml.safe_dump({
        "default_model": "deepseek-v3.2",
        "providers": {"gzipped": {"base_url": gzipped.base_url, "api_key_env": "GZ_KEY"},
                      "closing": {"base_url": closing.base_url}},
        "models": {
            "deepseek-v3.2": {"owned_by": "deepseek", "upstream_model": "deepseek-v3.2",
                              "input_usd_per_mtok": "0.42", "output_usd_per_mtok": "0.42",
                              "deployments": [{"provider": "gzipped"}]},
            "gpt-4.1": {"owned_by": "openai", "upstream_model": "gpt-4.1",
                        "input_usd_per_mtok": "8", "output_usd_per_mtok": "8",
                        "deployments": [{"provider": "closing"}]}}}))
    return path


@pytest.fixture(scope="module", params=[(client, encoding) for client in CLIENTS
                                         for encoding in ("gzip", "br")],
                ids=lambda p: "-".join(p))
def odd_upstreams(log_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest,
                  ) -> Iterator[tuple[GatewayServer, FakeProvider, ClosingProvider]]:
    client, encoding = request.param
    gzipped = FakeProvider(log_dir, "--brotli" if encoding == "br" else "--gzip")
    closing = ClosingProvider()
    catalog = two_provider_catalog(tmp_path_factory.mktemp("catalog") / "catalog.yaml",
                                   gzipped, closing)
    gateway = GatewayServer(log_dir, gzipped.base_url, env={
        "GATEWAY_CONFIG": str(catalog), "GZ_KEY": UPSTREAM_KEY,
        "GATEWAY_HTTP_CLIENT": client})
    yield gateway, gzipped, closing
    gateway.stop()
    gzipped.stop()
    closing.stop()


def test_a_compressed_answer_reaches_the_client_decoded_and_priced(
    odd_upstreams: tuple[GatewayServer, FakeProvider, ClosingProvider],
) -> None:
    gateway, gzipped, _ = odd_upstreams
    raw = httpx.post(f"{gzipped.base_url}/chat/completions",
                     headers={"Authorization": f"Bearer {UPSTREAM_KEY}",
                              "accept-encoding": "identity"},
                     json={"model": "deepseek-v3.2", "messages": []})
    assert raw.headers["content-encoding"] in ("gzip", "br")  # whatever the client asked
    response = ask(gateway)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("Fake answer to: hello")
    assert float(response.headers["x-gateway-cost-usd"]) > 0
    assert response.headers["x-gateway-attempts"] == "1"
    streamed = ask(gateway, stream=True)
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    assert text == response.json()["choices"][0]["message"]["content"]


def test_a_connection_closed_after_the_request_is_an_attempt_the_client_is_told_of(
    odd_upstreams: tuple[GatewayServer, FakeProvider, ClosingProvider],
) -> None:
    gateway, _, closing = odd_upstreams
    assert ask(gateway, "gpt-4.1").status_code == 200  # opens a connection, kept alive
    before = closing.received
    response = ask(gateway, "gpt-4.1")  # reuses it: read, then the connection closes
    assert response.status_code == 200, response.text
    received = closing.received - before
    assert received == 2  # the closed attempt, then the retry on a new connection
    assert response.headers["x-gateway-attempts"] == str(received)


def test_the_proxy_and_ca_bundle_of_a_provider_in_the_catalog(
    log_dir: Path, secure: FakeProvider, tls: tuple[Path, Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("provider-proxy")
    own = Tinyproxy(folder)
    catalog = folder / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({
        "default_model": "deepseek-v3.2",
        "providers": {"private": {"base_url": secure.base_url, "api_key_env": "PRIVATE_KEY",
                                  "proxy": own.url, "ca_bundle": str(tls[2])}},
        "models": {"deepseek-v3.2": {
            "owned_by": "deepseek", "upstream_model": "deepseek-v3.2",
            "input_usd_per_mtok": "0.42", "output_usd_per_mtok": "0.42",
            "deployments": [{"provider": "private"}]}}}))
    gateway = GatewayServer(log_dir, "https://unused.invalid/v1", env={
        "GATEWAY_CONFIG": str(catalog), "PRIVATE_KEY": UPSTREAM_KEY})
    try:
        secure.reset()
        assert ask(gateway).status_code == 200
        assert own.tunnels_to(secure.port) >= 1
    finally:
        gateway.stop()
        own.stop()


@pytest.fixture(scope="module")
def secure_h2(log_dir: Path, tls: tuple[Path, Path, Path]) -> Iterator[FakeProvider]:
    provider = FakeProvider(log_dir, "--http2", tls=tls)
    yield provider
    provider.stop()


@pytest.mark.parametrize("client", CLIENTS)  # aiohttp's provider set to HTTP/2 runs on httpx
def test_http2_is_a_per_provider_setting(
    log_dir: Path, secure_h2: FakeProvider, tls: tuple[Path, Path, Path],
    tmp_path: Path, client: str,
) -> None:
    catalog = tmp_path / "catalog.yaml"
    provider = {"base_url": secure_h2.base_url, "api_key_env": "H2_KEY", "ca_bundle": str(tls[2])}
    catalog.write_text(yaml.safe_dump({
        "default_model": "deepseek-v3.2",
        "providers": {"two": {**provider, "http2": True}, "one": provider},
        "models": {name: {"owned_by": "x", "upstream_model": name, "input_usd_per_mtok": "1",
                          "output_usd_per_mtok": "1", "deployments": [{"provider": via}]}
                   for name, via in (("deepseek-v3.2", "two"), ("gpt-4.1", "one"))}}))
    gateway = GatewayServer(log_dir, "https://unused.invalid/v1", env={
        "GATEWAY_CONFIG": str(catalog), "H2_KEY": UPSTREAM_KEY, "GATEWAY_HTTP_CLIENT": client})
    try:
        secure_h2.reset()
        assert ask(gateway, "deepseek-v3.2").status_code == 200
        streamed = ask(gateway, "deepseek-v3.2", stream=True)
        assert "[DONE]" in streamed.text
        assert ask(gateway, "gpt-4.1").status_code == 200
        versions = [(r["body"]["model"], r["http_version"]) for r in secure_h2.received()]
        assert versions == [("deepseek-v3.2", "2"), ("deepseek-v3.2", "2"), ("gpt-4.1", "1.1")]
    finally:
        gateway.stop()
