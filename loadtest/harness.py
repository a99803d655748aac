"""Real processes for tests, the demo and benchmarks: the fake provider, ``bentoml serve``.

Each runs on a free loopback port, logs to a file the tests can read (to prove, say, that the
upstream key never reaches a log line), and is stopped when the test or session ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-upstream-SECRET-5f3a9c"
CLIENT_KEY = "gw-client-key-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def throwaway_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A certificate for 127.0.0.1 from a CA made for this run (trustme): (certificate, key,
    CA), written into ``folder``."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


class Process:
    """A child process in its own process group, with its output in ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        # A wedged grandchild (a BentoML worker that ignored SIGTERM) must not outlive its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._log.close()


def fresh_log(log_dir: Path, stem: str) -> Path:
    """``<stem>.log``, or ``<stem>-2.log`` and so on for a process started again."""
    path, n = log_dir / f"{stem}.log", 1
    while path.exists():
        n += 1
        path = log_dir / f"{stem}-{n}.log"
    return path


def wait_http(url: str, proc: Process, timeout: float = 60.0,
              verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None or "startup failed" in proc.log():
            raise RuntimeError(f"process failed to start:\n{proc.log()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{proc.log()[-4000:]}")


class FakeProvider:
    """The fake OpenAI-compatible upstream, with its control API wrapped for tests."""

    verify: ssl.SSLContext | bool = True  # its control API's trust (its CA when served on TLS)

    def __init__(self, log_dir: Path, *args: str, name: str | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (certificate, key, the CA that signed it): served over HTTPS."""
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        if tls:
            self.verify = ssl.create_default_context(cafile=str(tls[2]))
        named = ["--name", name] if name is not None else []
        served = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
        self.process = Process(
            [sys.executable, "-m", "loadtest.fake_provider", "--host", "127.0.0.1",
             "--port", str(self.port), "--api-key", UPSTREAM_KEY, *named, *served, *args],
            log_dir / f"fake-{self.port}.log",
        )
        wait_http(f"{self.url}/_fake/stats", self.process, timeout=30, verify=self.verify)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def fault(self, **spec: Any) -> None:
        httpx.post(f"{self.url}/_fake/faults", json=spec, verify=self.verify).raise_for_status()

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.url}/_fake/config", json=config,
                   verify=self.verify).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset", verify=self.verify).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_fake/stats", verify=self.verify)
        response.raise_for_status()
        return dict(response.json())

    def received(self) -> list[dict[str, Any]]:
        """The last 50 ``/v1/*`` requests, oldest first: ``path``, ``body``, ``authorization``
        (its last 4 characters)."""
        response = httpx.get(f"{self.url}/_fake/requests", verify=self.verify)
        response.raise_for_status()
        return list(response.json()["requests"])

    def calls(self, model: str) -> int:
        return int(self.stats()["requests"].get(model, 0))

    def stop(self) -> None:
        self.process.stop()


class RedisServer:
    """A throwaway ``redis-server`` with no persistence: on a free loopback port by default; with
    ``password`` it requires AUTH; with ``tls`` (certificate, key, CA) it listens on TLS only;
    with ``unix`` on a unix socket in ``log_dir`` only. ``url`` is the ``REDIS_URL`` for it."""

    def __init__(self, log_dir: Path, port: int | None = None, *, password: str | None = None,
                 tls: tuple[Path, Path, Path] | None = None, unix: bool = False) -> None:
        self.port = port or free_port()
        self.socket = log_dir / f"redis-{self.port}.sock" if unix else None
        auth = f":{password}@" if password else ""
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--protected-mode", "yes"]
        if password:
            args += ["--requirepass", password]
        if self.socket is not None:
            args += ["--port", "0", "--unixsocket", str(self.socket)]
            self.url = f"unix://{auth}{self.socket}?db=0"
        elif tls is not None:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls[0]),
                     "--tls-key-file", str(tls[1]), "--tls-ca-cert-file", str(tls[2]),
                     "--tls-auth-clients", "no"]
            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={tls[2]}"
        else:
            args += ["--port", str(self.port)]
            self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process = Process(args, log_dir / f"redis-{self.port}.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._answers(tls is not None):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.process.log()}")

    def _answers(self, tls: bool) -> bool:
        try:
            if self.socket is not None:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(0.5)
                    sock.connect(str(self.socket))
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if tls:  # listening is enough: the TLS handshake is the clients' to prove
                    return True
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        self.process.stop()


class PassThroughServer:
    """``loadtest.passthrough`` in front of ``upstream``: the floor of the gateway's stack."""

    def __init__(self, log_dir: Path, upstream: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            [sys.executable, "-m", "loadtest.passthrough", "--port", str(self.port),
             "--upstream", upstream, "--key", UPSTREAM_KEY],
            log_dir / f"passthrough-{self.port}.log",
        )
        wait_http(self.url, self.process, timeout=30)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.process.stop()


class GatewayServer:
    """``bentoml serve service:LLMGateway`` (or a built bento) on a free loopback port."""

    def __init__(self, log_dir: Path, upstream: str, env: dict[str, str] | None = None,
                 target: str = "service:LLMGateway", extra_env: dict[str, str] | None = None,
                 root: Path = ROOT, port: int | None = None, home: Path | None = None):
        """``root`` is the checkout to serve (another version of the code, for a comparison);
        ``port``/``home``: a given port and ``BENTOML_HOME``, to start a replica again. A free
        port taken by someone else before the server binds it is replaced, twice at most."""
        for attempt in range(3):
            self.port = port or free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            full_env = {
                "HOLYSHEEP_BASE_URL": upstream,
                "HOLYSHEEP_API_KEY": UPSTREAM_KEY,
                "GATEWAY_API_KEYS": CLIENT_KEY,
                "GATEWAY_RETRY_BASE": "0.02",
                "GATEWAY_CACHE": "false",
                "BENTOML_DO_NOT_TRACK": "true",
                # Nothing balances across these: stop at SIGTERM without failing /readyz first
                # (tests of graceful shutdown set their own drain time).
                "GATEWAY_SHUTDOWN_DRAIN": "0",
                # `bentoml serve` wipes $BENTOML_HOME/prometheus_multiproc_dir at start: gateways
                # sharing a home would erase each other's metrics.
                "BENTOML_HOME": str(home or log_dir / f"bentoml-home-{self.port}"),
                **(env or {}),
                **(extra_env or {}),
            }
            self.process = Process(
                [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
                 "--port", str(self.port)],
                fresh_log(log_dir, f"gateway-{self.port}"),
                env=full_env,
                cwd=root,
            )
            try:
                wait_http(f"{self.url}/readyz", self.process, timeout=90)
                return
            except RuntimeError as exc:
                if port is not None or attempt == 2 or "Could not bind" not in str(exc):
                    raise
                self.process.stop()

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self.process.stop()


class DurableRedis:
    """``redis-server`` as deploy/selfhosted/redis.conf runs it (append-only file, no eviction),
    its data in ``data_dir``, on a loopback port; ``restart`` stops it (SIGTERM: it writes its
    file) and starts it again on the same port and data."""

    def __init__(self, log_dir: Path, data_dir: Path, port: int | None = None) -> None:
        self.log_dir, self.data_dir = log_dir, data_dir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = self._start()

    def _start(self) -> Process:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = Process(
            ["redis-server", str(ROOT / "deploy" / "selfhosted" / "redis.conf"), "--port",
             str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)],
            fresh_log(self.log_dir, f"redis-durable-{self.port}"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return process
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{process.log()}")

    def restart(self) -> None:
        self.process.stop()
        self.process = self._start()

    def stop(self) -> None:
        self.process.stop()
