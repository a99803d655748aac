"""Dashboard login sessions: the admin key is posted once, the browser then holds a cookie with
a random session id and its expiry, signed so that every worker (and replica) sharing the admin
key accepts it. The cookie never holds the key; its signing key is derived from the admin key
with scrypt (a stolen cookie gives no cheap way to guess the admin key), so changing the admin
key ends every session. Logout clears the cookie and revokes its id in this worker's memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

COOKIE = "gw_dashboard"
PATH = "/dashboard"
SALT = b"llm-gateway dashboard session v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    def __init__(self, admin_key: bytes, ttl_s: int, clock: Callable[[], float] = time.time):
        self._admin = admin_key
        self.ttl_s = ttl_s
        self._clock = clock
        self._signing: bytes | None = None
        self._revoked: dict[str, float] = {}  # session id -> its expiry

    async def _key(self) -> bytes:
        if self._signing is None:
            # ~50 ms of CPU once per worker: off the event loop.
            self._signing = await asyncio.to_thread(
                hashlib.scrypt, self._admin, salt=SALT, n=2 ** 14, r=8, p=1, dklen=32)
        return self._signing

    def _mac(self, key: bytes, sid: str, expires: int) -> str:
        return _b64(hmac.new(key, f"{sid}.{expires}".encode(), hashlib.sha256).digest())

    def admin_matches(self, presented: str) -> bool:
        return bool(self._admin) and hmac.compare_digest(presented.encode(), self._admin)

    async def open(self) -> tuple[str, int]:
        """A new session: the cookie value and its expiry (epoch seconds)."""
        sid = secrets.token_urlsafe(24)
        expires = int(self._clock()) + self.ttl_s
        return f"{sid}.{expires}.{self._mac(await self._key(), sid, expires)}", expires

    async def valid(self, cookie: str | None) -> int | None:
        """The session's expiry if the cookie is a live session of this admin key, else None."""
        if not cookie or not self._admin or len(cookie) > 200:
            return None
        sid, _, rest = cookie.partition(".")
        expires_text, _, mac = rest.partition(".")
        if not (sid and mac and expires_text.isdigit()):
            return None
        expires = int(expires_text)
        if expires <= self._clock() or sid in self._revoked:
            return None
        if not hmac.compare_digest(mac, self._mac(await self._key(), sid, expires)):
            return None
        return expires

    async def revoke(self, cookie: str | None) -> None:
        if await self.valid(cookie) is None:
            return
        assert cookie is not None
        sid, _, rest = cookie.partition(".")
        now = self._clock()
        self._revoked = {s: e for s, e in self._revoked.items() if e > now}
        self._revoked[sid] = float(rest.partition(".")[0])
