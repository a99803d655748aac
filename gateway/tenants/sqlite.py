"""The embedded store's SQLite files: opened one way for keys, teams and the ledger."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


def open_sqlite(path: Path) -> tuple[sqlite3.Connection, threading.Lock]:
    """A connection in WAL mode, so every worker process can read while one writes, and the lock
    its calls take: they run in threads, off the event loop, and share the one connection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    return db, threading.Lock()
