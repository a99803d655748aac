"""The semantic tier's learned verifier: a cross-encoder that reads both prompts together.

A bi-encoder squeezes each prompt into one vector before comparing, so "CSV to JSON" and "JSON to
CSV" land at cosine 0.997. The cross-encoder attends across the two token sequences and is
trained (training/train_verifier.py) to say whether one prompt's answer serves the other. It is
all-MiniLM-L6-v2 fine-tuned as a pair classifier, exported to ONNX and quantised to int8; the
file ships in the repo and is sha256-checked at load. Its tokenizer is MiniLM's own
(``gateway/cache/models/tokenizer.json``, as for the embedder). Both orders of the pair
are scored in one batch and the lower probability counts: "does A's answer serve B" and "does
B's answer serve A" must both hold for a paraphrase.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gateway.cache.modelfiles import TOKENIZER_PATH, TOKENIZER_SHA256, VERIFIER_PATH, checked
from gateway.cache.modelfiles import VERIFIER_SHA256 as MODEL_SHA256
from gateway.eventloop import running_loop

MODEL_PATH = VERIFIER_PATH
MAX_TOKENS = 64


def _softmax_positive(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp[:, 1] / exp.sum(axis=1)


class CrossEncoder:
    """Probability that two prompts ask for the same answer, computed off the event loop."""

    def __init__(self, model_path: Path = MODEL_PATH, sha256: str | None = MODEL_SHA256) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        data = model_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise RuntimeError(f"{model_path}: sha256 {digest} is not the expected verifier's")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # two cores are shared with the server itself
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(checked(TOKENIZER_PATH, TOKENIZER_SHA256)))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier")

    def score_sync(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One probability per pair: the lower of the two orders' paraphrase probabilities."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        both = [*pairs, *((b, a) for a, b in pairs)]
        encodings = self._tokenizer.encode_batch(both)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (logits,) = self._session.run(None, feed)
        probs = _softmax_positive(logits.astype(np.float64))
        return np.minimum(probs[: len(pairs)], probs[len(pairs) :]).astype(np.float32)

    async def score(self, a: str, b: str) -> float:
        """In the verifier's own thread: the event loop never waits on the model."""
        loop = running_loop()
        (probability,) = await loop.run_in_executor(self._executor, self.score_sync, [(a, b)])
        return float(probability)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
