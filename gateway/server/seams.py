"""Guarded patches of BentoML's internals.

BentoML's private modules have changed shape between minor releases. Every patch the gateway
applies goes through ``replace``, which checks at start-up that the target still has the shape
the patch was written against (the attribute exists, is callable and takes the same
parameters) and fails loudly, naming the BentoML version it expects and the one installed,
rather than on the first request. Each patch can be undone (tests restore what they patched).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("gateway")

EXPECTED_BENTOML = "1.4.39"


class SeamError(RuntimeError):
    """A BentoML internal the gateway patches is not what the patch was written for."""


def bentoml_version() -> str:
    import bentoml

    return str(bentoml.__version__)


@dataclass(slots=True)
class Patch:
    owner: Any
    name: str
    original: Any
    replacement: Any

    def undo(self) -> None:
        setattr(self.owner, self.name, self.original)


def check(owner: Any, name: str, parameters: list[str], what: str) -> Any:
    """The attribute ``owner.name``, if it is callable with exactly ``parameters``."""
    target = getattr(owner, name, None)
    where = f"{getattr(owner, '__module__', owner)}.{getattr(owner, '__qualname__', owner)}.{name}"
    if target is None or not callable(target):
        raise SeamError(f"{what}: {where} is missing in BentoML {bentoml_version()} "
                        f"(the gateway expects BentoML {EXPECTED_BENTOML}).")
    found = list(inspect.signature(target).parameters)
    if found != parameters:
        raise SeamError(f"{what}: {where} takes {found}, not {parameters}, in BentoML "
                        f"{bentoml_version()} (the gateway expects BentoML {EXPECTED_BENTOML}).")
    return target


def replace(owner: Any, name: str, parameters: list[str], what: str,
            make: Callable[[Any], Any]) -> Patch:
    """Check ``owner.name``'s shape, then put ``make(original)`` in its place."""
    original = check(owner, name, parameters, what)
    if bentoml_version() != EXPECTED_BENTOML:
        logger.warning("%s: written for BentoML %s, running on %s; its target's shape matches.",
                       what, EXPECTED_BENTOML, bentoml_version())
    replacement = make(original)
    setattr(owner, name, replacement)
    return Patch(owner, name, original, replacement)
