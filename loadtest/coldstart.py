"""Cold start: from ``bentoml serve`` to the first 200 on a chat completion, and where it goes.

    flock /tmp/bench.lock .venv/bin/python -m loadtest.coldstart --runs 5

Each run starts ``bentoml serve service:LLMGateway`` (one worker, the fake provider as the
upstream) and polls ``POST /v1/chat/completions`` every 10 ms until it answers 200; the median
of the runs is the figure. BentoML's own floor is the same measure for a minimal BentoML
service (one Starlette route mounted like the gateway's app), run interleaved with the gateway's.
The breakdown, in one fresh interpreter: BentoML's serving stack imported, then the gateway's
own imports and module-level start-up (settings, patches, catalog, app), the catalog alone, and
the worker's ``Gateway.build``. ``bentoml serve`` pays the imports twice: its supervisor process
loads the service to read its configuration, then the worker loads it again to serve.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from loadtest.harness import CLIENT_KEY, ROOT, UPSTREAM_KEY, FakeProvider, Process, free_port

CHAT = {"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "cold?"}]}
MINIMAL_SERVICE = """
import bentoml
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def chat(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@bentoml.service(name="minimal")
@bentoml.asgi_app(app, path="/")
class Minimal:
    pass
"""
BREAKDOWN = """
import time
t0 = time.perf_counter()
import bentoml, _bentoml_sdk, _bentoml_impl.server.app, _bentoml_impl.worker.service
t1 = time.perf_counter()
import service
t2 = time.perf_counter()
from gateway.catalog import load_catalog
load_catalog(service.settings.config_path)
t3 = time.perf_counter()
from gateway.assembly import Gateway
from gateway.observability.metrics import Metrics
from prometheus_client import CollectorRegistry
Gateway.build(service.settings, service.catalog, Metrics(CollectorRegistry()))
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def first_answer(upstream: str, log_dir: Path, target: str = "service:LLMGateway",
                 cwd: Path = ROOT) -> float:
    port = free_port()
    env = {"HOLYSHEEP_BASE_URL": upstream, "HOLYSHEEP_API_KEY": UPSTREAM_KEY,
           "GATEWAY_API_KEYS": CLIENT_KEY, "BENTOML_DO_NOT_TRACK": "true",
           "BENTOML_HOME": str(log_dir / f"home-{port}")}
    started = time.perf_counter()
    process = Process([sys.executable, "-m", "bentoml", "serve", target, "--working-dir",
                       str(cwd), "--host", "127.0.0.1", "--port", str(port)],
                      log_dir / f"gateway-{port}.log", env=env)
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if process.proc.poll() is not None:
                    raise RuntimeError(process.log()[-3000:])
                try:
                    response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                           json=CHAT,
                                           headers={"Authorization": f"Bearer {CLIENT_KEY}"})
                    if response.status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
    finally:
        process.stop()


def breakdown(log_dir: Path) -> list[float]:
    """Seconds: BentoML's serving imports, ``import service``, the catalog, ``Gateway.build``."""
    result = subprocess.run([sys.executable, "-c", BREAKDOWN], cwd=ROOT, check=True,
                            capture_output=True, text=True,
                            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true",
                                 "BENTOML_HOME": str(log_dir / "home-breakdown")})
    return [float(x) for x in result.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path,
                        help="another checkout of the gateway, measured interleaved with this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        minimal = log_dir / "minimal"
        minimal.mkdir()
        (minimal / "minimal.py").write_text(MINIMAL_SERVICE)
        fake = FakeProvider(log_dir)
        gateway: list[float] = []
        floor: list[float] = []
        baseline: list[float] = []
        try:
            for _ in range(args.runs):
                gateway.append(first_answer(fake.base_url, log_dir))
                floor.append(first_answer(fake.base_url, log_dir, "minimal:Minimal", minimal))
                if args.baseline:
                    baseline.append(first_answer(fake.base_url, log_dir,
                                                 cwd=args.baseline.resolve()))
        finally:
            fake.stop()
        parts = [statistics.median(column)
                 for column in zip(*(breakdown(log_dir) for _ in range(args.runs)), strict=True)]

    def runs(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (" + ", ".join(
            f"{v:.2f}" for v in values) + ")"

    print(f"bentoml serve to the first 200 on /v1/chat/completions: {runs(gateway)}")
    print(f"the same for a minimal BentoML service (BentoML's own floor): {runs(floor)}")
    if baseline:
        print(f"the same for {args.baseline}: {runs(baseline)}")
    print(f"in one process: BentoML's serving imports {parts[0]:.2f} s; import service (the "
          f"gateway's imports, settings, patches, catalog, app) {parts[1]:.2f} s, of which the "
          f"catalog {parts[2]:.3f} s; Gateway.build {parts[3]:.3f} s; no model is loaded")


if __name__ == "__main__":
    main()
