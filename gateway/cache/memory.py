"""The embedded store: in process, bounded in entries and bytes, with a TTL, evicting LRU."""

from __future__ import annotations

import time
from collections import OrderedDict


class MemoryStore:
    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._bytes = 0

    def entries(self) -> int | None:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        if len(value) > self._max_bytes:
            return
        if key in self._data:
            self._remove(key)
        self._data[key] = (time.monotonic() + self._ttl_s, value)
        self._bytes += len(value)
        while len(self._data) > self._max_entries or self._bytes > self._max_bytes:
            self._remove(next(iter(self._data)))

    async def delete(self, key: str) -> None:
        if key in self._data:
            self._remove(key)

    def _remove(self, key: str) -> None:
        _, value = self._data.pop(key)
        self._bytes -= len(value)

    async def aclose(self) -> None:
        self._data.clear()
        self._bytes = 0
