"""Where a gateway worker's time goes under load: py-spy samples one worker while k6 sends
completions at a fixed rate on loopback, then the samples are summed by function.

    python -m loadtest.profile [--stream] [--rate 25] [--duration 20] [--top 30]

py-spy samples without pausing the worker (``--nonblocking``): pausing it at every sample
overweights lines that make system calls. A function's *own* share is the samples in which it
was running; its *inclusive* share counts those in which it was on the stack. Samples of
threads and of the event loop's own C code are counted too (``Runner.run``'s own share is the
loop's I/O and callbacks). The raw samples are kept in ``loadtest/results/profile.txt``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

import psutil

from loadtest.bench import CHAT, RESULTS, Bench
from loadtest.harness import CLIENT_KEY, UPSTREAM_KEY


def summarise(raw: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Samples in all, and the ``top`` functions by own and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return total, own.most_common(top), inclusive.most_common(top)


def _function(frame: str) -> str:
    """``name (path/file.py:line)`` as ``name (file.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="streamed completions")
    parser.add_argument("--rate", type=int, default=25, help="requests a second")
    parser.add_argument("--duration", type=int, default=20, help="seconds sampled")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    bench = Bench(args.out)
    raw = args.out / "profile.txt"
    body = {**CHAT, "stream": True} if args.stream else CHAT
    with bench.fake("--api-key", UPSTREAM_KEY) as fake, bench.gateway(fake) as gw:
        url = f"{gw.v1}/chat/completions"
        bench.k6("profile-warm", url, body, rate=args.rate, duration=3, key=CLIENT_KEY,
                 unique=True)
        workers = psutil.Process(gw.process.proc.pid).children(recursive=True)
        worker = max(workers, key=lambda p: p.memory_info().rss)
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(worker.pid),
             "--rate", "1000", "--duration", str(args.duration), "--format", "raw",
             "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.k6("profile", url, body, rate=args.rate, duration=args.duration + 1,
                 key=CLIENT_KEY, unique=True)
        spy.wait()
    total, own, inclusive = summarise(raw, args.top)
    kind = "streamed" if args.stream else "non-streaming"
    print(f"{total} samples of one worker under {args.rate} {kind} completions a second")
    for title, rows in (("own", own), ("inclusive", inclusive)):
        print(f"\n{title} share")
        for name, n in rows:
            print(f"{n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
