"""digest: CPython's own SHA-256, the same digests as hashlib's (OpenSSL's)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.digest import sha256


@pytest.mark.parametrize("data", [b"", b"gk-" + b"x" * 43, "é€😀".encode(), bytes(range(256)) * 40])
def test_same_digest_as_hashlib(data: bytes) -> None:
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def test_same_digest_fed_in_parts() -> None:
    ours, theirs = sha256(), hashlib.sha256()
    for part in (b"abc", b"", b"def" * 1000):
        ours.update(part)
        theirs.update(part)
    assert ours.hexdigest() == theirs.hexdigest()


def test_not_openssl_where_cpython_has_its_own() -> None:
    try:
        import _sha256  # noqa: F401
    except ImportError:
        pytest.skip("no built-in _sha256 module (CPython 3.12+ names it _sha2)")
    assert sha256 is not hashlib.sha256
