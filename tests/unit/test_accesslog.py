"""The access log inside the event loop: lines gathered for a moment, written together, in
order, none lost (also at shutdown)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from gateway.observability.accesslog import FLUSH_S, AccessLog


def record(log: AccessLog, i: int) -> None:
    log.record(request_id=f"r{i}", key_name="k", team=None, route="/v1/chat/completions",
               requested_model="gpt-4.1", served_model="gpt-4.1", status=200, error_code=None,
               latency_ms=1.0, upstream_ms=0.5, input_tokens=1, output_tokens=1, cost=None,
               cache=None, attempts=1)


async def test_lines_in_the_loop_are_written_together_in_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("gateway.access").handlers.clear()
    log = AccessLog(True)
    for i in range(5):
        record(log, i)
    assert capsys.readouterr().out == ""  # gathered, not yet written
    await asyncio.sleep(FLUSH_S * 4)
    lines = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(5)]
    record(log, 5)
    log.flush()  # shutdown
    assert orjson.loads(capsys.readouterr().out)["request_id"] == "r5"
    logging.getLogger("gateway.access").handlers.clear()
