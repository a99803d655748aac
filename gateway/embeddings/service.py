"""``/v1/embeddings`` with adaptive batching: concurrent requests for the same model and options
share one upstream call, and each caller gets exactly its own vectors, in its own order, with
its own share of the usage and cost.

Pricing is the accounting's (``gateway/books/accounting.py``): this module only counts tokens.
The upstream reports usage for a whole call only, so a caller's share of a merged call is the
call's tokens split in proportion to the length of each input (largest remainder, so the shares
add up to exactly what the upstream billed). A request that went up alone is billed exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.catalog import Catalog, ModelEntry
from gateway.embeddings.batcher import Batcher
from gateway.errors import ErrorCode, GatewayError, bad_request, model_not_found
from gateway.observability.metrics import Metrics
from gateway.pricing import Price
from gateway.routing.deadline import Deadline
from gateway.routing.router import Router
from gateway.settings import Settings

EmbeddingInput = str | list[int]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: str | None = Field(None, pattern="^(float|base64)$")
    dimensions: int | None = Field(None, ge=1)


@dataclass(slots=True)
class Vector:
    """One input's result: its embedding as the upstream encoded it, and its token share."""

    embedding: Any
    tokens: int
    model: str
    served: str
    batch_size: int
    upstream_s: float
    provider: str = ""
    deployment: str = ""
    price: Price | None = None  # the deployment's that answered
    attempts: int = 0  # upstream calls the batch's answer took


@dataclass(slots=True)
class EmbeddingsAnswer:
    """The answer's body and what the accounting needs to price it (this module never prices)."""

    body: bytes
    requested: str
    served: str
    tokens: int
    batch_size: int
    upstream_s: float
    provider: str = ""
    deployment: str = ""
    price: Price | None = None
    attempts: int = 0


def split_tokens(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` so the parts add up to ``total`` exactly."""
    weights = [max(1, w) for w in weights]
    weight_sum = sum(weights)
    parts = [total * w // weight_sum for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % weight_sum))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def parse_request(
    catalog: Catalog, body: Any
) -> tuple[EmbeddingsRequest, ModelEntry, list[EmbeddingInput]]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        request = EmbeddingsRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"][:1]) or "input"
        raise GatewayError(
            ErrorCode.INVALID_VALUE, f"Invalid value for '{field}': {err['msg']}.", param=field
        ) from None
    entry = catalog.get(request.model)
    if entry is None:
        raise model_not_found(request.model)
    if entry.kind != "embedding":
        raise bad_request(
            f"The model {request.model!r} is not an embedding model.",
            param="model",
            code=ErrorCode.MODEL_NOT_SUPPORTED,
        )
    raw = request.input
    items: list[EmbeddingInput]
    if isinstance(raw, str):
        items = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        items = [raw]  # type: ignore[list-item]  # one input given as token ids
    else:
        items = list(raw)  # type: ignore[arg-type]
    if not items or any(isinstance(x, str) and not x for x in items):
        raise bad_request(
            "'input' must be a non-empty string or a list of non-empty inputs.", param="input"
        )
    return request, entry, items


class Embeddings:
    """One batcher per (model, options); a request's inputs always travel in one batch."""

    def __init__(self, settings: Settings, catalog: Catalog, router: Router, metrics: Metrics):
        self._settings = settings
        self._catalog = catalog
        self._router = router
        self._metrics = metrics
        self._batchers: dict[tuple[str, bytes], Batcher[EmbeddingInput, Vector]] = {}

    async def embed(self, body: Any) -> EmbeddingsAnswer:
        request, _, items = parse_request(self._catalog, body)
        options = {k: v for k, v in body.items() if k not in ("model", "input")}
        if self._settings.batch_max_size <= 1 or len(items) >= self._settings.batch_max_size:
            vectors = await self._call(request.model, options, items)
        else:
            vectors = await self._batcher(request.model, options).submit(items)
        tokens = sum(v.tokens for v in vectors)
        data = [
            {"object": "embedding", "index": i, "embedding": v.embedding}
            for i, v in enumerate(vectors)
        ]
        body_out = orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": vectors[0].model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
        first = vectors[0]
        return EmbeddingsAnswer(
            body_out,
            request.model,
            first.served,
            tokens,
            first.batch_size,
            first.upstream_s,
            first.provider,
            first.deployment,
            first.price,
            first.attempts,
        )

    def _batcher(self, model: str, options: dict[str, Any]) -> Batcher[EmbeddingInput, Vector]:
        key = (model, orjson.dumps(options, option=orjson.OPT_SORT_KEYS))
        batcher = self._batchers.get(key)
        if batcher is None:

            async def call(items: list[EmbeddingInput]) -> list[Vector]:
                return await self._call(model, options, items)

            batcher = Batcher(
                call,
                max_batch_size=self._settings.batch_max_size,
                max_latency_s=self._settings.batch_max_latency_ms / 1000,
                max_concurrent=self._settings.batch_max_concurrent,
                observe=self._observe,
            )
            self._batchers[key] = batcher
        return batcher

    def _observe(self, size: int, waited_s: float) -> None:
        self._metrics.batch_size.observe(size)
        self._metrics.batch_wait.observe(waited_s)

    async def _call(
        self, model: str, options: dict[str, Any], items: list[EmbeddingInput]
    ) -> list[Vector]:
        deadline = Deadline.after(self._settings.timeout_s)
        served = await self._router.embed(model, {**options, "input": items}, deadline)
        data = served.result.data
        rows = sorted(data.get("data") or [], key=lambda row: row.get("index", 0))
        if len(rows) != len(items):
            raise GatewayError(
                ErrorCode.UPSTREAM_PROTOCOL,
                f"The upstream returned {len(rows)} embeddings for {len(items)} inputs.",
            )
        usage = data.get("usage") or {}
        total = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        shares = split_tokens(total, [len(item) for item in items])
        upstream_model = str(data.get("model") or served.entry.upstream_model)
        return [
            Vector(
                row.get("embedding"),
                share,
                upstream_model,
                served.name,
                len(items),
                served.upstream_s,
                served.provider,
                served.deployment,
                served.price,
                served.attempts,
            )
            for row, share in zip(rows, shares, strict=True)
        ]

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()
