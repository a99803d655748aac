"""The locks cover their requirement files: every requirement has an exact, hashed version in
its lock that satisfies it (else someone changed a requirements file without scripts/lock.sh)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from loadtest.harness import ROOT

LOCKS = {"requirements.txt": "requirements.lock",
         "requirements-semantic.txt": "requirements-semantic.lock",
         "requirements-dev.txt": "requirements-dev.lock"}


def requirements(path: Path) -> list[Requirement]:
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """Name → (version, number of hashes)."""
    text = path.read_text()
    pins = {}
    for match in re.finditer(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+) \\\n((?:    --hash=sha256:\w+.*\n)+)",
                             text, re.MULTILINE):
        name = canonicalize_name(match.group(1).split("[")[0])
        pins[name] = (match.group(2), match.group(3).count("--hash=sha256:"))
    return pins


@pytest.mark.parametrize("source", list(LOCKS))
def test_every_requirement_has_a_hashed_version_in_its_lock_that_satisfies_it(
    source: str,
) -> None:
    pins = locked(ROOT / LOCKS[source])
    for requirement in requirements(ROOT / source):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCKS[source]}: run scripts/lock.sh"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCKS[source]} has {name}=={version}, outside {requirement}: run scripts/lock.sh")
        assert hashes >= 1


def test_the_runtime_lock_is_the_dev_locks_versions_without_the_test_tools() -> None:
    runtime, dev = locked(ROOT / "requirements.lock"), locked(ROOT / "requirements-dev.lock")
    assert {name: pin[0] for name, pin in runtime.items()} == {
        name: dev[name][0] for name in runtime}
    assert "pytest" in dev and "pytest" not in runtime
    assert "onnxruntime" not in runtime and "onnxruntime" in dev
