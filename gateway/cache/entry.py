"""What the cache keeps for an answer, and how it travels to and from a store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class CachedAnswer:
    """A complete, successful chat completion, as the upstream sent it (or assembled from a
    stream that ended normally), with the catalog model and deployment that answered and the
    tokens it was billed for, so a hit can be priced as what it saved. The cache never prices."""

    body: bytes
    model: str
    prompt_tokens: int
    completion_tokens: int
    created: float
    deployment: str = ""

    def data(self) -> dict[str, Any]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def size(self) -> int:
        return len(self.body) + 128

    def dumps(self) -> bytes:
        return orjson.dumps({
            "body": self.body.decode(), "model": self.model, "deployment": self.deployment,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "created": self.created,
        })

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer:
        d = orjson.loads(raw)
        return cls(d["body"].encode(), d["model"], d["prompt_tokens"], d["completion_tokens"],
                   d["created"], d.get("deployment", ""))
