"""``service.py``'s start-up wiring, in a fresh interpreter each (importing it patches uvicorn
and BentoML for the whole process): the tracer is looked up only when tracing is configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.harness import ROOT

SCRIPT = """
import service
looked_up = []
service.configured_tracer = lambda: looked_up.append(1)
instance = service.LLMGateway.inner()
print(len(looked_up), instance.gateway.router._spans.enabled)
"""


@pytest.mark.parametrize(("tracing", "expected"), [
    ({}, ["0", "False"]),
    ({"GATEWAY_TRACING_EXPORTER": "zipkin",
      "GATEWAY_TRACING_ENDPOINT": "http://127.0.0.1:9/api/v2/spans"}, ["1", "False"]),
])
def test_the_tracer_is_looked_up_only_when_tracing_is_configured(
    tracing: dict[str, str], expected: list[str], tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_TRACING")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true", **tracing})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == expected
