"""Cold start: from ``bentoml serve`` to the first 200 on a chat completion, and where it goes.

    flock /tmp/bench.lock .venv/bin/python -m loadtest.coldstart --runs 5

Each run starts ``bentoml serve service:LLMGateway`` (one worker, the fake provider as the
upstream) and polls ``POST /v1/chat/completions`` every 10 ms until it answers 200; the median
of the runs is the figure. The breakdown: ``import service`` in a fresh interpreter (the
gateway's own imports and BentoML's, as ``python -X importtime`` lists them) and ``bentoml``
alone, medians too. The rest is BentoML's own start (its supervisor, the worker process that
imports the service again, the socket).
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


def first_answer(upstream: str, log_dir: Path) -> float:
    port = free_port()
    env = {"HOLYSHEEP_BASE_URL": upstream, "HOLYSHEEP_API_KEY": UPSTREAM_KEY,
           "GATEWAY_API_KEYS": CLIENT_KEY, "BENTOML_DO_NOT_TRACK": "true",
           "BENTOML_HOME": str(log_dir / f"home-{port}")}
    started = time.perf_counter()
    process = Process([sys.executable, "-m", "bentoml", "serve", "service:LLMGateway",
                       "--host", "127.0.0.1", "--port", str(port)],
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


def import_time(statement: str) -> float:
    """Seconds a fresh interpreter takes to run ``statement`` (start-up included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True,
                   env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        fake = FakeProvider(log_dir)
        try:
            firsts = [first_answer(fake.base_url, log_dir) for _ in range(args.runs)]
        finally:
            fake.stop()
    python = statistics.median(import_time("pass") for _ in range(args.runs))
    bentoml = statistics.median(import_time("import bentoml") for _ in range(args.runs))
    service = statistics.median(import_time("import service") for _ in range(args.runs))
    print(f"bentoml serve to the first 200 on /v1/chat/completions: "
          f"median {statistics.median(firsts):.2f} s (runs: "
          + ", ".join(f"{s:.2f}" for s in firsts) + ")")
    print(f"a fresh interpreter: {python:.2f} s; import bentoml: {bentoml:.2f} s; "
          f"import service: {service:.2f} s (medians, interpreter start included)")


if __name__ == "__main__":
    main()
