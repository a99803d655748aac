"""The semantic tier's decision: may the nearest earlier request's answer serve this one?

The bi-encoder (``embedder.py``) only finds the candidate. It is served when both texts are in a
language the models cover, their cosine similarity reaches a floor (below it the verifier is not
even asked, so its cost is paid rarely), the few cheap rules that still add precision on pairs
they were not written against pass (``verify.py``), and the cross-encoder (``crossencoder.py``),
which reads both prompts together, judges them to be the same request. The candidate already
shares the scope (model, parameters, system prompt, tenant, number of turns:
``keys.semantic_scope``), so the texts are the conversation without its system prompt.

``python -m loadtest.semantic_eval`` measures exactly this class: the gateway and the evaluation
share one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from gateway.cache.verify import KEPT_RULES, Rule, covered_language

if TYPE_CHECKING:  # numpy and onnxruntime come with the semantic extra only
    from gateway.cache.crossencoder import CrossEncoder

# Chosen on loadtest/semantic_tune.jsonl only, by `python -m loadtest.semantic_eval --choose`:
# the operating point with the most right hits and no wrong hit there (a lower threshold lets
# one through). Neither is ever fitted on the test split or the public set.
DEFAULT_FLOOR = 0.70
DEFAULT_VERIFIER_THRESHOLD = 0.90


class Outcome(StrEnum):
    HIT = "hit"
    BELOW_FLOOR = "below_floor"
    LANGUAGE = "language"
    RULE = "rule"
    VERIFIER = "verifier"


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    outcome: Outcome
    reason: str = ""
    score: float | None = None


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
    def __init__(self, verifier: CrossEncoder, floor: float = DEFAULT_FLOOR,
                 threshold: float = DEFAULT_VERIFIER_THRESHOLD,
                 rules: Sequence[Rule] = KEPT_RULES) -> None:
        self.verifier = verifier
        self.floor = floor
        self.threshold = threshold
        self.rules = tuple(rules)

    def precheck(self, query: str, candidate: str, similarity: float) -> Decision | None:
        """The cheap refusals, in order; None when only the verifier can decide."""
        if similarity < self.floor:
            return Decision(False, Outcome.BELOW_FLOOR,
                            f"similarity {similarity:.3f} below {self.floor}")
        if not covered_language(query) or not covered_language(candidate):
            return Decision(False, Outcome.LANGUAGE, "language not covered by the models")
        for rule in self.rules:
            if not rule.check(query, candidate):
                return Decision(False, Outcome.RULE, rule.name)
        return None

    def conclude(self, score: float) -> Decision:
        if score >= self.threshold:
            return Decision(True, Outcome.HIT, score=score)
        return Decision(False, Outcome.VERIFIER,
                        f"verifier {score:.3f} below {self.threshold}", score)

    async def accept(self, query: str, candidate: str, similarity: float) -> Decision:
        """The request path's entry: the verifier runs in its own thread, off the event loop."""
        refused = self.precheck(query, candidate, similarity)
        if refused is not None:
            return refused
        return self.conclude(await self.verifier.score(query, candidate))

    def decide_many(self, pairs: Sequence[tuple[str, str]],
                    similarities: Sequence[float]) -> list[Decision]:
        """``accept`` for many pairs (the evaluation): the same checks and the same model call,
        one pair at a time as on the request path, since a padded batch would quantise its
        activations differently."""
        decisions = []
        for (query, candidate), similarity in zip(pairs, similarities, strict=True):
            refused = self.precheck(query, candidate, similarity)
            decisions.append(refused if refused is not None else self.conclude(
                float(self.verifier.score_sync([(query, candidate)])[0])))
        return decisions
