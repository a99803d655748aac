"""Slow-body clients for ``bench hostile``: k6 cannot trickle a body, so this does.

Keeps ``--connections`` connections open against the gateway for ``--duration`` seconds; each
sends its headers and a few bytes of a valid chat body, then one more byte every ``--interval``
seconds, and when the gateway answers (408 once its body deadline passes) or closes, opens
another. Prints a JSON summary: statuses seen and connections opened.

    python -m loadtest.slow_clients --port 3000 --key KEY --connections 10 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter

BODY = (b'{"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "'
        + b"x" * 200 + b'"}]}')


async def one_client(port: int, key: str, interval: float, until: float,
                     seen: Counter[str]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            seen["connect_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        seen["opened"] += 1
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:5])
        sent = 5
        answer = b""
        try:
            while time.monotonic() < until and sent < len(BODY) - 1:
                try:
                    answer = await asyncio.wait_for(reader.read(4096), interval)
                    break  # the gateway answered (or closed): start over
                except TimeoutError:
                    writer.write(BODY[sent:sent + 1])
                    sent += 1
        except ConnectionError:
            seen["reset"] += 1
        finally:
            writer.close()
        status = re.match(rb"HTTP/1\.1 (\d{3})", answer)
        if status:
            seen[status.group(1).decode()] += 1
        elif answer == b"" and time.monotonic() < until:
            seen["closed"] += 1


async def run(args: argparse.Namespace) -> Counter[str]:
    seen: Counter[str] = Counter()
    until = time.monotonic() + args.duration
    await asyncio.gather(*(one_client(args.port, args.key, args.interval, until, seen)
                           for _ in range(args.connections)))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(dict(asyncio.run(run(args)))))


if __name__ == "__main__":
    main()
