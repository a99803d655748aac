"""What the cache keeps for an answer, and how it travels to and from a store."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson


@dataclass(slots=True)
class CachedAnswer:
    """A complete, successful chat completion, as the upstream sent it (or assembled from a
    stream that ended normally), with what it cost, so a hit can say what it saved."""

    body: bytes
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    created: float

    def data(self) -> dict[str, Any]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data

    def size(self) -> int:
        return len(self.body) + 128

    def dumps(self) -> bytes:
        return orjson.dumps({
            "body": self.body.decode(), "model": self.model,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost_usd": str(self.cost_usd), "created": self.created,
        })

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer:
        d = orjson.loads(raw)
        return cls(d["body"].encode(), d["model"], d["prompt_tokens"], d["completion_tokens"],
                   Decimal(d["cost_usd"]), d["created"])
