"""Precision and recall of the semantic tier on pairs of prompts.

    python -m loadtest.semantic_eval [--pairs loadtest/semantic_pairs.jsonl] [--threshold T]

Each pair is {"a", "b", "label": "paraphrase" | "different", ...}. A pair "hits" when the tier
would serve b's answer for a. Precision = right hits / all hits (a wrong hit serves a wrong
answer); recall = right hits / paraphrase pairs. Exits 1 if precision at the threshold is under
0.99. Any file of the same shape (a held-out set) can be checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gateway.cache.embedder import LocalMiniLM
from gateway.cache.semantic import DEFAULT_THRESHOLD, SemanticMatcher
from gateway.cache.verify import compatible

HERE = Path(__file__).parent


def evaluate(pairs: list[dict[str, str]], sims: np.ndarray, threshold: float,
             verify: bool) -> dict[str, float]:
    right = wrong = 0
    for pair, sim in zip(pairs, sims, strict=True):
        hit = sim >= threshold and (not verify or compatible(pair["a"], pair["b"])[0])
        if hit and pair["label"] == "paraphrase":
            right += 1
        elif hit:
            wrong += 1
    positives = sum(1 for p in pairs if p["label"] == "paraphrase")
    hits = right + wrong
    return {"right": right, "wrong": wrong, "precision": right / hits if hits else 1.0,
            "recall": right / positives if positives else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=HERE / "semantic_pairs.jsonl")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    embedder = LocalMiniLM()
    a = embedder.embed_sync([p["a"] for p in pairs])
    b = embedder.embed_sync([p["b"] for p in pairs])
    sims = (a * b).sum(axis=1)
    labels = np.array([p["label"] == "paraphrase" for p in pairs])
    print(f"{len(pairs)} pairs: {labels.sum()} paraphrases, {(~labels).sum()} different; "
          f"median cosine {np.median(sims[labels]):.3f} vs {np.median(sims[~labels]):.3f}")
    print("\n| threshold | cosine alone: precision / recall (wrong hits) "
          "| with verifier: precision / recall (wrong hits) |\n|---|---|---|")
    chosen = None
    for t in np.round(np.arange(0.70, 0.99, 0.02), 2):
        raw, ver = evaluate(pairs, sims, t, False), evaluate(pairs, sims, t, True)
        if chosen is None and ver["precision"] >= 0.99 and ver["right"] > 0:
            chosen = t
        print(f"| {t:.2f} | {raw['precision']:.3f} / {raw['recall']:.3f} ({raw['wrong']}) "
              f"| {ver['precision']:.3f} / {ver['recall']:.3f} ({ver['wrong']}) |")
    at = evaluate(pairs, sims, args.threshold, True)
    matcher = SemanticMatcher(args.threshold)
    wrong = [(p, s) for p, s in zip(pairs, sims, strict=True)
             if p["label"] != "paraphrase" and matcher.accept(p["a"], p["b"], s)[0]]
    print(f"\nlowest threshold with precision >= 0.99 on this set: {chosen}")
    print(f"at threshold {args.threshold}: precision {at['precision']:.3f}, recall "
          f"{at['recall']:.3f}, {at['right']} right hits, {at['wrong']} wrong hits")
    for pair, sim in wrong:
        print(f"  wrong hit ({sim:.3f}, {pair.get('kind')}): {pair['a']!r} ~ {pair['b']!r}")
    return 0 if at["precision"] >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
