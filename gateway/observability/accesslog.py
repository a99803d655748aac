"""One JSON line per request on stdout (logger ``gateway.access``), and the last entries of this
worker in a ring buffer for the dashboard. The key's *name* is logged, never the key.

Cheap by construction: an entry is a dict, serialised with one ``orjson.dumps`` (which escapes
every control character, so no client-chosen name can split a line). Inside the event loop the
lines of the next ``FLUSH_S`` are gathered and written to the logger's stream in one write (a
logger call and a flush per request cost a worker about a tenth of its throughput); outside a
loop a line is written at once. The logger's own handler writes bare lines to stdout (no
formatter, not propagated to BentoML's); with the log off, nothing is serialised at all.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from gateway.eventloop import running_loop
from gateway.observability.traffic import RecentTraffic
from gateway.pricing import format_usd

logger = logging.getLogger("gateway.access")

RING_SIZE = 100
FLUSH_S = 0.05


def _bare_stdout_handler() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class AccessLog:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            _bare_stdout_handler()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
        self._pending: list[bytes] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self.traffic = RecentTraffic()

    def record(self, *, request_id: str, key_name: str | None, team: str | None, route: str,
               requested_model: str | None, served_model: str | None, status: int,
               error_code: str | None, latency_ms: float, upstream_ms: float,
               input_tokens: int, output_tokens: int, cost: Decimal | None,
               cache: str | None, attempts: int) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id, "key": key_name, "team": team, "route": route,
            "requested_model": requested_model, "served_model": served_model, "status": status,
            "error_code": error_code, "latency_ms": round(latency_ms, 3),
            "upstream_ms": round(upstream_ms, 3), "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": format_usd(cost) if cost is not None else None,
            "cache": cache, "attempts": attempts,
        }
        self.recent.append(entry)
        self.traffic.add(status=status, latency_ms=latency_ms, upstream_ms=upstream_ms,
                         cache=cache, requested=requested_model, served=served_model,
                         error_code=error_code)
        if not self.enabled:
            return
        self._pending.append(orjson.dumps(entry))
        if self._flush_at is None:
            try:
                loop = running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_at = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Write the gathered lines in one go (also at shutdown)."""
        self._flush_at = None
        if self._pending:
            lines, self._pending = self._pending, []
            logger.info(b"\n".join(lines).decode())

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self.recent)
