"""Guarded patches of third-party internals (BentoML's, uvicorn's), and the versions they need.

Private modules change shape between minor releases. The gateway pins exactly the libraries
whose internals it patches or subclasses (``PINNED``, the same versions as ``requirements.txt``
and the locks), and ``check_versions`` stops start-up when another version is installed, naming
the library, the version expected and the one found. Every patch then goes through ``check`` /
``replace``, which also verify the target's shape (the attribute exists, is callable and takes
the same parameters) and raise ``SeamError`` rather than fail on the first request. Running
without the patches is a deliberate setting (``GATEWAY_UNPATCHED``, ``gateway.server.patches``).
Each patch can be undone (tests restore what they patched).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

logger = logging.getLogger("gateway")

# The libraries whose internals the gateway touches, at the versions its patches were written
# and tested against: bentoml (fastpath, bentoml_fixes, tracing), uvicorn and httptools
# (headerguard, onewrite, intake's transport), starlette (api.pipeline's ``Answered``,
# server.streaming's ``EventStream``).
PINNED = {"bentoml": "1.4.39", "uvicorn": "0.55.0", "httptools": "0.9.0", "starlette": "1.10.0"}
EXPECTED_BENTOML = PINNED["bentoml"]
UNPATCHED_HINT = ("Install the locked versions (requirements.lock; scripts/lock.sh re-locks and "
                  "re-tests an upgrade), or set GATEWAY_UNPATCHED=1 to run without the "
                  "gateway's patches.")


class SeamError(RuntimeError):
    """A third-party internal the gateway patches is not what the patch was written for."""


def installed_version(library: str) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "none (not installed)"


def bentoml_version() -> str:
    return installed_version("bentoml")


def check_versions(pinned: dict[str, str] = PINNED) -> None:
    """Raise ``SeamError`` naming every pinned library installed at another version."""
    wrong = [(library, expected, installed_version(library))
             for library, expected in pinned.items()]
    wrong = [(library, expected, found) for library, expected, found in wrong if found != expected]
    if wrong:
        found = "; ".join(f"{library}: expected {expected}, found {found}"
                          for library, expected, found in wrong)
        raise SeamError(f"The gateway patches internals of libraries installed at versions it "
                        f"was not written for ({found}). {UNPATCHED_HINT}")


@dataclass(slots=True)
class Patch:
    owner: Any
    name: str
    original: Any
    replacement: Any

    def undo(self) -> None:
        setattr(self.owner, self.name, self.original)


def mismatch(what: str, detail: str, library: str = "bentoml") -> SeamError:
    return SeamError(f"{what}: {detail} in {library} {installed_version(library)} (the gateway "
                     f"expects {library} {PINNED[library]}). {UNPATCHED_HINT}")


def check(owner: Any, name: str, parameters: list[str], what: str,
          library: str = "bentoml") -> Any:
    """The attribute ``owner.name``, if it is callable with exactly ``parameters``."""
    target = getattr(owner, name, None)
    where = f"{getattr(owner, '__module__', owner)}.{getattr(owner, '__qualname__', owner)}.{name}"
    if target is None or not callable(target):
        raise mismatch(what, f"{where} is missing", library)
    found = list(inspect.signature(target).parameters)
    if found != parameters:
        raise mismatch(what, f"{where} takes {found}, not {parameters},", library)
    return target


def replace(owner: Any, name: str, parameters: list[str], what: str,
            make: Callable[[Any], Any], library: str = "bentoml") -> Patch:
    """Check ``owner.name``'s shape, then put ``make(original)`` in its place."""
    original = check(owner, name, parameters, what, library)
    replacement = make(original)
    setattr(owner, name, replacement)
    return Patch(owner, name, original, replacement)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` once module ``name`` has been imported (by anyone), once."""

    def __init__(self, name: str, then: Callable[[ModuleType], object]) -> None:
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module
        then = self.then

        def exec_module(module: ModuleType) -> None:
            execute(module)
            then(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def when_imported(name: str, then: Callable[[ModuleType], object]) -> None:
    """``then(module)`` now if ``name`` is imported already, else right after it is. A patch of
    a module that only some processes load (BentoML's app factory: its workers, not its
    supervisor) costs the others nothing, and still runs before anything uses the module."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))
