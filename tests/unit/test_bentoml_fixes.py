"""The patched BentoML timeout middleware: same answers, no timer left behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from gateway.server import bentoml_fixes

bentoml_fixes.apply()


async def run(app: Any, timeout: float) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await TimeoutMiddleware(app, timeout=timeout)({"type": "http", "path": "/"}, receive, send)
    return sent


async def test_a_request_that_answers_in_time_leaves_no_timer_behind() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    for _ in range(100):
        sent = await run(app, timeout=300)
    assert sent[0]["status"] == 200
    await asyncio.sleep(0)
    assert len(loop._scheduled) == before  # type: ignore[attr-defined]


async def test_a_request_silent_past_the_timeout_gets_a_504() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    sent = await run(app, timeout=0.05)
    assert sent[0]["status"] == 504
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"


async def test_a_stream_that_started_in_time_is_not_cut() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"late but fine"})

    sent = await run(app, timeout=0.05)
    assert [m.get("status") or m.get("body") for m in sent] == [200, b"late but fine"]
