"""The image build, replayed: ``bentoml build``, then the install steps of the Dockerfile BentoML
generated for that Bento, run with the same tools in a scratch directory, and the Bento served
from the environment they made.

Docker is not available here, so the Dockerfile (BentoML's own output, read from the built
Bento) is interpreted: its ``ARG``/``ENV``/``WORKDIR``/``COPY`` and every ``RUN`` but the ones
that need root in a base image (creating the ``bentoml`` user, ``apt-get``), with the image's
absolute paths (``/app``, ``/home/bentoml``) moved under the scratch directory. uv creates the
environment (``uv venv``: no pip in it) and installs the Bento's requirements, from the package
index uv is configured with, exactly as in the image; the image's entrypoint then serves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.server.seams import PINNED
from loadtest.harness import (
    CLIENT_KEY,
    ROOT,
    UPSTREAM_KEY,
    FakeProvider,
    free_port,
    wait_http,
)

# RUN steps of the base image that need root and a distribution: not replayed.
ROOT_ONLY = ("if command -v groupadd", "apt-get ")
IMAGE_PATHS = ("/app", "/home/bentoml")


@dataclass
class Image:
    """What the replayed Dockerfile left: its environment variables and where things are."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    entrypoint: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)

    def path(self, text: str) -> str:
        """``text`` with the image's absolute paths moved under the scratch root."""
        for prefix in IMAGE_PATHS:
            text = re.sub(rf"(?<![\w/.]){re.escape(prefix)}(?=/|\b)", f"{self.root}{prefix}", text)
        return text

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                      lambda m: self.env.get(m.group(1) or m.group(2), m.group(0)), text)

    @property
    def venv(self) -> Path:
        return Path(self.env["VIRTUAL_ENV"])


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def replay(dockerfile: str, context: Path, root: Path, log: Path) -> Image:
    # The image's shell starts from the base image's PATH, where uv lives (installed with pip
    # there, the same tool from this project's environment here).
    # Its build mounts a cache at /root/.cache/: here, uv's cache of this machine.
    cache = os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    image = Image(root, env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                             "HOME": str(root / "home" / "root"), "UV_CACHE_DIR": cache})
    Path(image.env["HOME"]).mkdir(parents=True)
    base = {k: v for k, v in os.environ.items()
            if k not in ("PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "HOME")}
    # The build runs as root in a base image; chown has no bentoml user to give files to here.
    prelude = "chown() { :; }\n"
    with log.open("a") as out:
        for keyword, rest in instructions(dockerfile):
            if keyword in ("ARG", "ENV"):
                name, _, value = rest.partition("=")
                value = image.path(image.expand(value.strip('"')))
                if keyword == "ENV" or name not in image.env:
                    image.env[name] = value
            elif keyword == "WORKDIR":
                image.workdir = Path(image.path(image.expand(rest)))
                image.workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                source, target = [a for a in rest.split() if not a.startswith("--")]
                assert image.workdir is not None
                destination = image.workdir / target
                if (context / source).is_dir():
                    shutil.copytree(context / source, destination, dirs_exist_ok=True)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, destination)
            elif keyword == "RUN":
                if rest.startswith(ROOT_ONLY):
                    if "useradd -m" in rest:  # what creating the user leaves: its home
                        (root / "home" / "bentoml").mkdir(parents=True, exist_ok=True)
                    continue
                command = image.path(rest)
                out.write(f"\n$ {command}\n")
                out.flush()
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", prelude + command], cwd=image.workdir,
                    env={**base, **image.env}, stdout=out, stderr=subprocess.STDOUT,
                    timeout=600)
                assert result.returncode == 0, f"RUN {command} failed:\n{log.read_text()[-3000:]}"
                image.replayed.append(rest)
            elif keyword == "ENTRYPOINT":
                image.entrypoint = [image.path(a) for a in json.loads(rest)]
    return image


def build(home: Path, bentofile: str = "bentofile.yaml") -> Path:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", bentofile, "--output", "tag"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    name, version = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:").split(":")
    return home / "bentos" / name / version


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("bentoml-home"))


@pytest.fixture(scope="module")
def image(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    dockerfile = (built / "env" / "docker" / "Dockerfile").read_text()
    return replay(dockerfile, built, root, root / "build.log")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    provider = FakeProvider(tmp_path_factory.mktemp("fake"))
    yield provider
    provider.stop()


class Container:
    """The image's entrypoint, run in the image's working directory with the image's
    environment, on a free loopback port."""

    def __init__(self, image: Image, upstream: FakeProvider, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        full_env = {**image.env, "HOLYSHEEP_BASE_URL": upstream.base_url,
                    "HOLYSHEEP_API_KEY": UPSTREAM_KEY, "GATEWAY_API_KEYS": CLIENT_KEY,
                    "BENTOML_DO_NOT_TRACK": "true", **env}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*image.entrypoint, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=image.workdir, env={**os.environ, **full_env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command_line(self) -> str:
        """What the entrypoint exec'd (it replaces itself with ``bentoml serve``)."""
        raw = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode()

    def wait_ready(self) -> None:
        wait_http(f"{self.url}/readyz", self, timeout=90)  # type: ignore[arg-type]

    def wait_exit(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.proc.poll() is not None, f"the server did not stop:\n{self.log()[-2000:]}"
        return self.proc.returncode

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def test_the_image_installs_the_locked_runtime_with_uv_and_no_setup_script(
    built: Path, image: Image,
) -> None:
    assert any(step.startswith("UV_PYTHON_INSTALL_DIR=") and " uv venv " in step
               for step in image.replayed)
    assert any("uv --directory $INSTALL_ROOT pip install -r" in step for step in image.replayed)
    assert not [step for step in image.replayed if "script__" in step]  # no setup script
    assert not (image.venv / "bin" / "pip").exists()  # uv's environment: no pip in it
    python = image.venv / "bin" / "python"
    frozen = subprocess.run([str(python), "-c", (
        "import importlib.metadata as m, importlib.util as u, sys;"
        "print(sys.prefix, *[m.version(p) for p in ('bentoml', 'uvicorn', 'starlette', "
        "'httptools')], u.find_spec('onnxruntime') is None)")],
        capture_output=True, text=True, check=True)
    # The lock's versions, in the image's own environment, without the semantic extra.
    assert frozen.stdout.split() == [str(image.venv), "1.4.39", "0.55.0", "1.10.0", "0.9.0",
                                     "True"]


def test_the_replayed_image_serves_a_chat_completion(
    image: Image, upstream: FakeProvider, tmp_path: Path,
) -> None:
    container = Container(image, upstream, tmp_path / "serve.log")
    try:
        container.wait_ready()
        response = httpx.post(
            f"{container.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "deepseek-v3.2",
                  "messages": [{"role": "user", "content": "from the image"}]},
            timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()["choices"][0]["message"]["content"]
        assert answer.startswith("Fake answer to: from the image")
        health = httpx.get(f"{container.url}/health", timeout=10).json()
        assert health["patched"] is True
        served_by = container.command_line()
        assert f"{image.venv}/bin/bentoml serve" in served_by  # the image's environment
        assert served_by.rstrip().endswith(image.env["BENTO_PATH"])  # serving the copied Bento
    finally:
        container.stop()


def test_the_semantic_tier_without_its_extra_stops_start_up_naming_it(
    image: Image, upstream: FakeProvider, tmp_path: Path,
) -> None:
    container = Container(image, upstream, tmp_path / "semantic.log",
                          GATEWAY_SEMANTIC_CACHE="true")
    try:
        assert container.wait_exit() != 0
    finally:
        container.stop()
    log = container.log()
    assert "GATEWAY_SEMANTIC_CACHE=true needs the semantic extra" in log
    assert "requirements-semantic.txt" in log and "onnxruntime" in log


DRIFTED_UVICORN = "0.54.0"


@pytest.fixture(scope="module")
def drifted(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image, then uvicorn moved off its pin, as an unlocked install or upgrade would."""
    root = tmp_path_factory.mktemp("drifted")
    dockerfile = (built / "env" / "docker" / "Dockerfile").read_text()
    image = replay(dockerfile, built, root, root / "build.log")
    subprocess.run(["uv", "pip", "install", "--quiet", f"uvicorn=={DRIFTED_UVICORN}"],
                   env={**os.environ, **image.env}, check=True, timeout=300)
    return image


def test_a_patched_library_at_another_version_stops_start_up_naming_it(
    drifted: Image, upstream: FakeProvider, tmp_path: Path,
) -> None:
    container = Container(drifted, upstream, tmp_path / "drifted.log")
    try:
        assert container.wait_exit() != 0
    finally:
        container.stop()
    log = container.log()
    assert f"uvicorn: expected {PINNED['uvicorn']}, found {DRIFTED_UVICORN}" in log
    assert "GATEWAY_UNPATCHED=1" in log


def test_unpatched_is_a_deliberate_setting_shown_in_health_and_metrics(
    drifted: Image, upstream: FakeProvider, tmp_path: Path,
) -> None:
    container = Container(drifted, upstream, tmp_path / "unpatched.log", GATEWAY_UNPATCHED="1")
    try:
        container.wait_ready()
        response = httpx.post(
            f"{container.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "as is"}]},
            timeout=30)
        assert response.status_code == 200, response.text
        assert httpx.get(f"{container.url}/health", timeout=10).json()["patched"] is False
        metrics = httpx.get(f"{container.url}/metrics", timeout=10).text
        assert re.search(r"^gateway_patched(\{[^}]*\})? 0\.0$", metrics, re.MULTILINE), metrics
    finally:
        container.stop()
    assert "GATEWAY_UNPATCHED is set" in container.log()


def test_the_semantic_bento_carries_its_models_and_serves_the_semantic_tier(
    upstream: FakeProvider, tmp_path: Path,
) -> None:
    bento = build(tmp_path / "home", "bentofile.semantic.yaml")
    assert (bento / "src" / "gateway" / "cache" / "models" / "verifier-int8.onnx").is_file()
    assert (bento / "src" / "gateway" / "cache" / "models" / "tokenizer.json").is_file()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    image = replay(dockerfile, bento, tmp_path / "image", tmp_path / "build.log")
    container = Container(image, upstream, tmp_path / "serve.log", GATEWAY_SEMANTIC_CACHE="true")
    try:
        container.wait_ready()
        answers = []
        for prompt in ("How do I reverse a list in Python?",
                       "How can I reverse a list in Python?"):
            response = httpx.post(
                f"{container.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                json={"model": "deepseek-v3.2", "messages": [{"role": "user", "content": prompt}]},
                timeout=60)
            assert response.status_code == 200, response.text
            answers.append(response)
            time.sleep(0.1)  # the first answer is stored once written
        assert answers[1].headers["x-gateway-cache"] == "semantic-hit"
    finally:
        container.stop()
