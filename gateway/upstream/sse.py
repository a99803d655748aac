"""Server-sent events: split an upstream byte stream into events without re-encoding them."""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


@dataclass(slots=True)
class Event:
    """One SSE event: its bytes as received (CRLF folded to LF) and its joined ``data`` field."""

    raw: bytes
    data: bytes

    @property
    def is_done(self) -> bool:
        return self.data == DONE


class EventDecoder:
    """Incremental SSE decoder: feed it chunks as they arrive, get whole events back."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *complete, self._buffer = buffer.split(b"\n\n")
        return [event for raw in complete if raw and (event := _parse(raw)) is not None]

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not been terminated by a blank line yet."""
        return self._buffer.strip()


def _parse(raw: bytes) -> Event | None:
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if not data:
        return None  # comments and keep-alives carry nothing to relay
    return Event(raw, b"\n".join(data))


def encode(data: bytes) -> bytes:
    """A ``data:`` event ready to write to the client."""
    return b"data: " + data + b"\n\n"
