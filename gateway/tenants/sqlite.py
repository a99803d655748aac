"""The embedded store's SQLite files: opened one way for keys, teams and the ledger."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


def open_sqlite(path: Path, *, sync_every_commit: bool = True) -> tuple[sqlite3.Connection,
                                                                        threading.Lock]:
    """A connection in WAL mode, so every worker process can read while one writes, and the lock
    its calls take: they run in threads, off the event loop, and share the one connection.

    ``sync_every_commit=False`` (the ledger's): commits reach the operating system, which keeps
    them through a crash of the gateway, but are not flushed to the disk one by one (SQLite's
    ``synchronous=NORMAL``): a power cut may lose the last commits, as a crash loses the
    increments still gathering between two writes. It takes the disk flush off each write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    if not sync_every_commit:
        db.execute("PRAGMA synchronous=NORMAL")
    return db, threading.Lock()
