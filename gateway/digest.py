"""SHA-256 for the request path: CPython's own implementation, not OpenSSL's.

``hashlib.sha256`` goes through OpenSSL 3's EVP layer, which run cold (as every request is at
100 req/s) costs several times what CPython's built-in module does (the README's *Teams, keys
and budgets* has the figures); a key check and a cache key each pay it once per request. The
digests are the same (checked here, at import); where the built-in module is missing, hashlib's
is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any


def _builtin() -> Callable[..., Any] | None:
    for module in ("_sha2", "_sha256"):  # CPython 3.12+, then 3.11
        try:
            return __import__(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return None


def _chosen() -> Callable[..., Any]:
    builtin = _builtin()
    probe = b"gateway"
    if builtin is not None and builtin(probe).hexdigest() == hashlib.sha256(probe).hexdigest():
        return builtin
    return hashlib.sha256


sha256: Callable[..., Any] = _chosen()
