"""Cache keys: what makes two requests the same request.

The exact key hashes the tenant (the id of the client's key, never the key) and the whole request:
model, messages (system prompt included), tools, response format and every generation parameter.
Only fields that cannot change the answer are left out (streaming, usage reporting, user ids).
The semantic scope hashes the same minus the conversation's non-system turns, plus their count,
so a semantic candidate always shares model, parameters, system prompt, tenant and turn count.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.digest import sha256

NOT_PART_OF_THE_ANSWER = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls_hint",
    }
)


def _digest(*parts: bytes) -> str:
    h = sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _canonical(payload: dict[str, Any], model: str) -> dict[str, Any]:
    canonical = {k: v for k, v in payload.items() if k not in NOT_PART_OF_THE_ANSWER}
    canonical["model"] = model
    return canonical


def exact_key(tenant: str, model: str, payload: dict[str, Any]) -> str:
    body = orjson.dumps(_canonical(payload, model), option=orjson.OPT_SORT_KEYS)
    return _digest(b"exact", tenant.encode(), body)


def semantic_scope(tenant: str, model: str, payload: dict[str, Any]) -> str:
    canonical = _canonical(payload, model)
    messages = canonical.pop("messages", [])
    system = [
        m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    turns = len(messages) - len(system)
    body = orjson.dumps(
        {**canonical, "system": system, "turns": turns}, option=orjson.OPT_SORT_KEYS
    )
    return _digest(b"scope", tenant.encode(), body)
