"""The Bento: ``bentoml build`` in a scratch BENTOML_HOME, ``export``, and ``serve`` of it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from loadtest.harness import CLIENT_KEY, ROOT, FakeProvider, GatewayServer


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    yield tag, {"BENTOML_HOME": str(home)}


def test_build_makes_a_bento_with_the_labels_and_the_catalog(
    bento: tuple[str, dict[str, str]],
) -> None:
    tag, env = bento
    name, version = tag.split(":")
    assert name == "llm-gateway"
    bento_dir = Path(env["BENTOML_HOME"]) / "bentos" / name / version
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    labels = manifest["labels"]
    assert (labels["team"], labels["environment"]) == ("platform", "production")
    assert labels.get("openai_endpoint") == "/v1"  # BentoML's own tag for OpenAI-compatible routes
    assert (bento_dir / "src" / "gateway" / "models.yaml").is_file()
    # The semantic tier's models are an optional extra (bentofile.semantic.yaml), not shipped here.
    assert not (bento_dir / "src" / "gateway" / "cache" / "models").exists()
    assert (bento_dir / "src" / "service.py").is_file()
    assert not (bento_dir / "src" / "tests").exists()
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.39 \\\n    --hash=sha256:" in requirements  # the lock, with its hashes
    assert "onnxruntime" not in requirements


def test_export_writes_an_archive(bento: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    tag, env = bento
    target = tmp_path / "gateway.bento"
    subprocess.run(
        [sys.executable, "-m", "bentoml", "export", tag, str(target)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert target.stat().st_size > 1000


def test_serve_runs_the_built_bento(
    bento: tuple[str, dict[str, str]], fake: FakeProvider, log_dir: Path
) -> None:
    tag, env = bento
    server = GatewayServer(log_dir, fake.base_url, target=tag, extra_env=env)
    try:
        response = httpx.post(
            f"{server.url}/call",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"messages": [{"role": "user", "content": "from the bento"}]},
        )
        assert response.status_code == 200
        assert response.json()["content"].startswith("Fake answer to: from the bento")
    finally:
        server.stop()
