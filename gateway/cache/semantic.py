"""The semantic tier's decision: is the nearest earlier request close enough, and safe?

A candidate is served only if both texts are in a language the embedder covers, their cosine
similarity reaches the threshold, and the verifier (``verify.py``) finds nothing the embedding
is blind to. The candidate already shares the scope (model, parameters, system prompt, tenant,
number of turns: ``keys.semantic_scope``), so the embedded text is the conversation without its
system prompt.
"""

from __future__ import annotations

from typing import Any

from .verify import compatible

# Chosen on loadtest/semantic_pairs.jsonl by `python -m loadtest.semantic_eval`: the lowest
# threshold at which precision with the verifier stays >= 0.99, plus a margin (see README).
DEFAULT_THRESHOLD = 0.86


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """Every non-system turn, in order: a follow-up question means nothing without its context."""
    turns = [_content(m.get("content")) for m in messages
             if isinstance(m, dict) and m.get("role") not in ("system", "developer")]
    return "\n".join(t for t in turns if t)


class SemanticMatcher:
    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold

    def accept(self, query: str, candidate: str, similarity: float) -> tuple[bool, str]:
        if similarity < self.threshold:
            return False, f"similarity {similarity:.3f} below {self.threshold}"
        return compatible(query, candidate)
