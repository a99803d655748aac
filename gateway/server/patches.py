"""Every patch of a third-party internal, applied in one place at start-up, or deliberately not.

``apply`` first checks that the pinned libraries (``seams.PINNED``) are installed at the
versions the patches were written for, then applies each patch, which checks its own target's
shape: any mismatch raises ``SeamError`` and stops start-up, naming the library, the version
expected and the one found. ``GATEWAY_UNPATCHED=1`` skips both and runs on the libraries as
they are (no header limits, no one-write answers, BentoML's own request timeout and middleware
stack on every route); ``/health`` (``patched``) and the ``gateway_patched`` gauge show it.
"""

from __future__ import annotations

import inspect
import logging

from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp

from gateway.server import bentoml_fixes, fastpath, headerguard, onewrite, seams
from gateway.settings import Settings

logger = logging.getLogger("gateway")


def check_subclassed() -> None:
    """Starlette internals the gateway's responses build on (``Answered`` fills a ``Response``
    without its ``__init__``; ``EventStream`` sends through ``stream_response``): checked even
    unpatched, since those classes are used either way."""
    what = "the gateway's responses"
    seams.check(Response, "__call__", ["self", "scope", "receive", "send"], what, "starlette")
    seams.check(StreamingResponse, "stream_response", ["self", "send"], what, "starlette")
    init = list(inspect.signature(Response.init_headers).parameters)
    if init != ["self", "headers"]:
        raise seams.mismatch(what, f"Response.init_headers takes {init}", "starlette")


def apply(settings: Settings) -> bool:
    """Apply the patches that need nothing but the settings; True when applied, False when
    ``GATEWAY_UNPATCHED`` leaves the libraries as they are."""
    check_subclassed()
    if settings.unpatched:
        logger.warning("GATEWAY_UNPATCHED is set: the gateway runs without its patches of "
                       "uvicorn's and BentoML's internals (no header deadline or size limits, "
                       "no one-write answers, BentoML's full middleware stack on every route).")
        return False
    seams.check_versions()
    bentoml_fixes.apply()
    headerguard.apply(settings.header_timeout_s, settings.max_header_bytes, settings.max_headers)
    onewrite.apply()
    return True


def install_fast_path(settings: Settings, app: ASGIApp, timeout: float) -> None:
    """The fast path past BentoML's middleware (unless GATEWAY_BENTOML_TELEMETRY or
    GATEWAY_UNPATCHED): it needs the app, so it comes after ``apply``."""
    if not settings.unpatched and not settings.bentoml_telemetry:
        fastpath.install("llm-gateway", app, timeout=timeout)
