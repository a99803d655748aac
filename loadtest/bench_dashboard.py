"""Does an open, refreshing dashboard cost the request path anything? k6 at 100 req/s through the
gateway, rounds alternating with the dashboard closed and open (a poller fetching every panel's
endpoint each ``--interval`` seconds, the page itself refreshes every 5 s).

    flock /tmp/bench.lock .venv/bin/python -m loadtest.bench_dashboard [--rounds 2 --duration 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
from pathlib import Path

import httpx

from .bench import CHAT, RESULTS, Bench, failed, print_table, trend
from .harness import CLIENT_KEY, UPSTREAM_KEY

ADMIN = "bench-admin-key"
PANELS = ("spend", "traffic", "cache", "budgets", "health", "requests")


class Poller(threading.Thread):
    """The dashboard's refresh loop, from outside the gateway."""

    def __init__(self, base: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.base, self.interval = base, interval
        self.stop = threading.Event()
        self.polls = 0
        self.slowest_ms = 0.0

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as http:
            login = http.post("/dashboard/login", data={"admin_key": ADMIN},
                              headers={"Accept": "application/json"})
            login.raise_for_status()
            while not self.stop.is_set():
                for panel in PANELS:
                    response = http.get(f"/dashboard/api/{panel}")
                    response.raise_for_status()
                    self.slowest_ms = max(self.slowest_ms,
                                          response.elapsed.total_seconds() * 1000)
                self.polls += 1
                self.stop.wait(self.interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    bench = Bench(args.out)
    stats: dict[str, list[dict[str, float]]] = {"closed": [], "open": []}
    polls = 0
    slowest = 0.0
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, \
            bench.gateway(fake, GATEWAY_ADMIN_KEY=ADMIN) as gw:
        via = f"{gw.v1}/chat/completions"
        httpx.post(via, json=CHAT, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        for r in range(args.rounds):
            for label in ("closed", "open"):
                poller = Poller(gw.url, args.interval) if label == "open" else None
                if poller is not None:
                    poller.start()
                m = bench.k6(f"dashboard-{label}-{r}", via, CHAT, rate=100,
                             duration=args.duration)
                if poller is not None:
                    poller.stop.set()
                    poller.join()
                    polls += poller.polls
                    slowest = max(slowest, poller.slowest_ms)
                stats[label].append({"p50": trend(m, "http_req_duration", "med"),
                                     "p99": trend(m, "http_req_duration", "p(99)"),
                                     "failed": failed(m)})

    def med(label: str, field: str) -> float:
        return statistics.median(s[field] for s in stats[label])

    rows = [[f"dashboard {label}: p50 / p99 (ms)",
             f"{med(label, 'p50'):.2f} / {med(label, 'p99'):.2f}"] for label in stats]
    rows.append(["open minus closed: p50 / p99 (ms)",
                 (f"{med('open', 'p50') - med('closed', 'p50'):+.2f} / "
                  f"{med('open', 'p99') - med('closed', 'p99'):+.2f}")])
    rows.append([f"dashboard refreshes (all {len(PANELS)} panels, every {args.interval:g} s)",
                 f"{polls}, slowest panel {slowest:.1f} ms"])
    rows.append(["worst error rate of any run",
                 f"{max(s['failed'] for runs in stats.values() for s in runs):.2%}"])
    print_table(f"Request path with the dashboard closed vs open ({args.rounds} round(s) of "
                f"{args.duration} s at 100 req/s, medians)", rows)
    (args.out / "dashboard.json").write_text(json.dumps({"stats": stats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
