"""Guarded patches of third-party internals: checked at start-up (versions and shapes), loud
when either changed, undoable, and off only when asked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from gateway.server import bentoml_fixes, fastpath, headerguard, onewrite, patches, seams
from gateway.settings import Settings
from loadtest.harness import ROOT


class Target:
    def method(self, a: int, b: int) -> int:
        return a + b


def test_a_patch_replaces_the_target_and_can_be_undone() -> None:
    original = Target.method
    patch = seams.replace(Target, "method", ["self", "a", "b"], "a test patch",
                          lambda old: lambda self, a, b: old(self, a, b) * 10)
    assert Target().method(1, 2) == 30
    patch.undo()
    assert Target.method is original and Target().method(1, 2) == 3


def test_a_target_of_another_shape_fails_loudly_naming_the_bentoml_versions() -> None:
    with pytest.raises(seams.SeamError) as info:
        seams.replace(Target, "method", ["self", "scope", "receive", "send"], "a test patch",
                      lambda old: old)
    message = str(info.value)
    assert "a test patch" in message and seams.EXPECTED_BENTOML in message
    assert seams.bentoml_version() in message
    with pytest.raises(seams.SeamError, match="missing"):
        seams.replace(Target, "gone", ["self"], "a test patch", lambda old: old)


def test_the_timeout_fix_checks_bentomls_middleware_and_is_undoable() -> None:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    before = TimeoutMiddleware.__call__
    patch = bentoml_fixes.apply()
    assert TimeoutMiddleware.__call__ is bentoml_fixes.RequestTimeout.__call__
    patch.undo()
    assert TimeoutMiddleware.__call__ is before


class Factory:
    """Stands in for BentoML's ServiceAppFactory instance."""

    enable_access_control = False

    def __init__(self, name: str) -> None:
        self.service = type("Service", (), {"name": name})()


@pytest.mark.parametrize("mounted", [True, False])
def test_the_fast_path_falls_back_to_the_full_stack_when_the_app_is_not_mounted(
    mounted: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    gateway_app = Starlette()
    built = Starlette(routes=[Mount("/", gateway_app)] if mounted else [])

    def build(self: Any) -> Starlette:
        return built

    monkeypatch.setattr(ServiceAppFactory, "__call__", build)
    patch = fastpath.patch(ServiceAppFactory, "svc", gateway_app, timeout=5)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        served = ServiceAppFactory.__call__(Factory("svc"))  # type: ignore[arg-type]
    assert isinstance(served, fastpath.FastPath) is mounted
    assert (served is built) is not mounted
    assert ("found no mount" in caplog.text) is not mounted
    assert ServiceAppFactory.__call__(Factory("other")) is built  # type: ignore[arg-type]
    patch.undo()
    assert ServiceAppFactory.__call__ is build


def test_a_pinned_library_at_another_version_names_the_library_and_both_versions() -> None:
    with pytest.raises(seams.SeamError) as info:
        seams.check_versions({"uvicorn": "0.0.1", "bentoml": seams.PINNED["bentoml"]})
    message = str(info.value)
    assert f"uvicorn: expected 0.0.1, found {seams.installed_version('uvicorn')}" in message
    assert "bentoml" not in message.split("(")[1]  # the matching pin is not named
    assert "GATEWAY_UNPATCHED=1" in message
    seams.check_versions()  # the installed versions are the pinned ones


def test_the_pins_are_the_versions_the_requirements_and_the_locks_name() -> None:
    for name in ("requirements.txt", "requirements.lock", "requirements-dev.lock"):
        lines = {line.split()[0] for line in (ROOT / name).read_text().splitlines()
                 if "==" in line and not line.startswith("#")}
        for library, version in seams.PINNED.items():
            assert f"{library}=={version}" in lines, (name, library)


def test_a_uvicorn_method_of_another_shape_stops_the_header_limits_naming_uvicorn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    monkeypatch.setattr(HttpToolsProtocol, "on_header", lambda self, name, value, extra: None)
    with pytest.raises(seams.SeamError) as info:
        headerguard.apply(header_timeout_s=1, max_header_bytes=2048, max_headers=20)
    message = str(info.value)
    assert "the header limits" in message and "on_header" in message
    assert f"uvicorn {seams.PINNED['uvicorn']}" in message
    assert not hasattr(HttpToolsProtocol, "_gateway_header_guard")


def test_a_uvicorn_cycle_of_another_shape_stops_the_one_write_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    async def send(self: Any, message: Any, more: Any) -> None: ...

    monkeypatch.setattr(RequestResponseCycle, "send", send)
    with pytest.raises(seams.SeamError, match="one-write answers.*uvicorn"):
        onewrite.apply()
    assert RequestResponseCycle.send is send


def test_unpatched_applies_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    monkeypatch.setattr(seams, "PINNED", {**seams.PINNED, "uvicorn": "0.0.1"})
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert patches.apply(Settings(GATEWAY_UNPATCHED="1")) is False
    assert "GATEWAY_UNPATCHED" in caplog.text
    assert not hasattr(HttpToolsProtocol, "_gateway_header_guard")


def test_a_patch_waits_for_its_module_and_runs_once_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "late_module_for_seams.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    seams.when_imported("late_module_for_seams", lambda module: seen.append(module.VALUE))
    assert seen == []
    import late_module_for_seams  # noqa: F401

    assert seen == [1]
    seams.when_imported("late_module_for_seams", lambda module: seen.append(2))  # already in
    assert seen == [1, 2]
    monkeypatch.delitem(sys.modules, "late_module_for_seams")


def test_bentomls_supervisor_loads_the_service_without_the_app_factory_which_workers_patch(
) -> None:
    script = (
        "import sys\n"
        "from _bentoml_impl.loader import load\n"
        "load('service:LLMGateway', '.')\n"
        "print('_bentoml_impl.server.app' in sys.modules, 'numpy' in sys.modules)\n"
        "from _bentoml_impl.server.app import ServiceAppFactory\n"
        "print(ServiceAppFactory.__call__.__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ,
                                                        "BENTOML_DO_NOT_TRACK": "true"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", "build_with_fast_path"]
