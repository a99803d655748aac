"""Graceful shutdown on SIGTERM, for replicas behind a load balancer.

BentoML's arbiter passes SIGTERM to each worker, and uvicorn's handler stops at once: it closes
its listening socket, finishes what is in flight, runs the shutdown hooks. But the arbiter
still holds the listening socket, so connections the balancer opens meanwhile are queued and
then reset when the arbiter exits: clients see "server disconnected". So the first SIGTERM
only marks the worker draining, which fails ``/readyz`` (``__is_ready__``) while requests are
still served; after ``drain_s`` (long enough for the balancer's health checks to take the
replica out), uvicorn's own handler runs: no new connections, requests in flight (streams
included) get ``grace_s`` to finish, then the shutdown hooks flush the ledger and access log.
A second SIGTERM changes nothing. (The arbiter passes Ctrl-C on to its workers as SIGTERM, so
that drains too.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("gateway")

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    def __init__(self, drain_s: float, grace_s: float) -> None:
        self.drain_s = drain_s
        self.grace_s = grace_s
        self.draining = False
        self._stop: Handler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> bool:
        """Called from a start-up hook, in the worker's event loop, while uvicorn's SIGTERM
        handler is in place; False (and nothing changed) if there is none to defer."""
        current = signal.getsignal(signal.SIGTERM)
        if not callable(current):
            return False
        server = getattr(current, "__self__", None)
        config = getattr(server, "config", None)
        if config is not None and hasattr(config, "timeout_graceful_shutdown"):
            config.timeout_graceful_shutdown = self.grace_s  # uvicorn's public Config field
        self._stop = current
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_term)
        return True

    def _on_term(self, sig: int, frame: FrameType | None) -> None:
        if self.draining:
            return
        self.draining = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_s, self._begin_stop,
                                        sig)

    def _begin_stop(self, sig: int) -> None:
        logger.info("SIGTERM: drained for %.1f s; closing, %.0f s for requests in flight",
                    self.drain_s, self.grace_s)
        assert self._stop is not None
        self._stop(sig, None)
