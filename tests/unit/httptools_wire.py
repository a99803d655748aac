"""uvicorn's real httptools protocol fed bytes in process, writing to a transport that records
every write: for the patches the gateway makes to that protocol (``headerguard``, ``onewrite``)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.lifespan.off import LifespanOff
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class Transport:
    """Every write the protocol makes (one entry each), and whether it closed the connection."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def status(self) -> int:
        return int(self.written.split(b" ", 2)[1])


def connect(app: Any) -> tuple[HttpToolsProtocol, Transport]:
    """A new connection to ``app`` on the running loop."""
    config = Config(app=app, http="httptools", lifespan="off")
    config.load()
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(),
                                 app_state=LifespanOff(config).state,
                                 _loop=asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport
