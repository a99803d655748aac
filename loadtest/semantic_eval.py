"""Precision and recall of the semantic tier on pairs of prompts, through the tier's own matcher.

    python -m loadtest.semantic_eval                    # the three tables (test, public, README)
    python -m loadtest.semantic_eval --pairs other.jsonl   # any file of the same shape
    python -m loadtest.semantic_eval --choose           # pick floor and threshold (tuning split)
    python -m loadtest.semantic_eval --rules            # what each rule adds: tuning split only
    python -m loadtest.semantic_eval --cost             # verifier load time, memory, ms a candidate

Each pair is {"a", "b", "label": "paraphrase" | "different", "kind", "lang"}. A pair "hits" when
the tier would serve b's answer for a: the bi-encoder's cosine, then ``SemanticMatcher`` (the
class the gateway runs; one pair at a time, as on the request path). Precision = right hits /
all hits (a wrong hit serves a wrong answer); recall = right hits / paraphrase pairs.

The sets: loadtest/semantic_test.jsonl (the test half of our own pairs, never tuned on); MRPC
test (Microsoft Research Paraphrase Corpus, all 1,725 pairs, a public set we did not write, read
from --public, default /work/shared/data/mrpc/msr_paraphrase_test.txt; skipped if absent); and
loadtest/semantic_pairs.jsonl (the README's 243 pairs, half of them in the tuning split).
Exits 1 if any reported set's precision is under 0.99.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gateway.cache.crossencoder import MODEL_PATH, CrossEncoder
from gateway.cache.embedder import LocalMiniLM
from gateway.cache.semantic import Decision, Outcome, SemanticMatcher
from gateway.cache.verify import ALL_RULES, KEPT_RULES, covered_language

HERE = Path(__file__).parent
TEST = HERE / "semantic_test.jsonl"
TUNE = HERE / "semantic_tune.jsonl"
README_PAIRS = HERE / "semantic_pairs.jsonl"
MRPC_TEST = Path("/work/shared/data/mrpc/msr_paraphrase_test.txt")
BAR = 0.99
# The verifier's probabilities crowd near 1: the grid is finer there.
THRESHOLDS = [0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9998]

Pairs = list[dict[str, str]]


def load(path: Path) -> Pairs:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_mrpc(path: Path) -> Pairs:
    pairs = []
    for row in path.read_text(encoding="utf-8-sig").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 5:
            pairs.append(
                {
                    "a": cells[3],
                    "b": cells[4],
                    "kind": "mrpc",
                    "lang": "en",
                    "label": "paraphrase" if cells[0] == "1" else "different",
                }
            )
    return pairs


def similarities(embedder: LocalMiniLM, pairs: Pairs) -> np.ndarray:
    a = np.vstack([embedder.embed_sync([p["a"]]) for p in pairs])
    b = np.vstack([embedder.embed_sync([p["b"]]) for p in pairs])
    return (a * b).sum(axis=1)


def tally(pairs: Pairs, hits: list[bool]) -> dict[str, float]:
    right = sum(h and p["label"] == "paraphrase" for p, h in zip(pairs, hits, strict=True))
    wrong = sum(h and p["label"] != "paraphrase" for p, h in zip(pairs, hits, strict=True))
    positives = sum(p["label"] == "paraphrase" for p in pairs)
    return {
        "pairs": len(pairs),
        "positives": positives,
        "right": right,
        "wrong": wrong,
        "precision": right / (right + wrong) if right + wrong else 1.0,
        "recall": right / positives if positives else 0.0,
    }


def report(name: str, command: str, pairs: Pairs, decisions: list[Decision]) -> float:
    t = tally(pairs, [d.accepted for d in decisions])
    print(f"\n### {name}\n`{command}`\n")
    print("| pairs | paraphrases | right hits | wrong hits | precision | recall |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {t['pairs']} | {t['positives']} | {t['right']} | {t['wrong']} "
        f"| {t['precision']:.3f} | {t['recall']:.3f} |"
    )
    by_lang: dict[str, list[int]] = {}
    for pair, decision in zip(pairs, decisions, strict=True):
        if pair["label"] == "paraphrase":
            row = by_lang.setdefault(pair.get("lang", "?"), [0, 0])
            row[0] += decision.accepted
            row[1] += 1
    print(
        "recall by language: "
        + ", ".join(f"{lang} {r}/{n}" for lang, (r, n) in sorted(by_lang.items()))
    )
    for pair, decision in zip(pairs, decisions, strict=True):
        if decision.accepted and pair["label"] != "paraphrase":
            print(
                f"  wrong hit ({decision.score:.3f}, {pair.get('kind')}): "
                f"{pair['a']!r} ~ {pair['b']!r}"
            )
    return t["precision"]


def scores_for_all(matcher: SemanticMatcher, pairs: Pairs) -> np.ndarray:
    """The verifier's probability for every pair, whatever the floor (for choosing it)."""
    return np.array([float(matcher.verifier.score_sync([(p["a"], p["b"])])[0]) for p in pairs])


def choose(matcher: SemanticMatcher, pairs: Pairs, sims: np.ndarray) -> None:
    """Grid over (floor, threshold) on the tuning split: most right hits with no wrong hit, at
    that threshold and at the next lower one too (a margin: the probabilities crowd near 1)."""
    scores = scores_for_all(matcher, pairs)
    eligible = np.array(
        [
            covered_language(p["a"])
            and covered_language(p["b"])
            and all(r.check(p["a"], p["b"]) for r in matcher.rules)
            for p in pairs
        ]
    )
    labels = np.array([p["label"] == "paraphrase" for p in pairs])
    rows = []
    for floor in np.round(np.arange(0.50, 0.91, 0.05), 2):
        below = 1
        for threshold in THRESHOLDS:
            hit = eligible & (sims >= floor) & (scores >= threshold)
            wrong = int((hit & ~labels).sum())
            rows.append((int((hit & labels).sum()), max(wrong, below), floor, threshold))
            below = wrong
    print(
        "| floor | threshold | right hits | wrong hits (here or one step lower) |\n"
        "|---|---|---|---|"
    )
    safe = sorted((r for r in rows if r[1] == 0), key=lambda r: (-r[0], -r[3], -r[2]))
    for right, wrong, floor, threshold in safe[:10]:
        print(f"| {floor} | {threshold} | {right} | {wrong} |")
    print(
        f"\nparaphrases in the tuning split: {int(labels.sum())}; scores of the different "
        f"pairs above the floor, highest: "
        f"{np.sort(scores[~labels & eligible & (sims >= 0.6)])[-5:].round(3).tolist()}"
    )


def rules_table(matcher: SemanticMatcher, pairs: Pairs, sims: np.ndarray) -> None:
    """Each rule on top of the verifier alone: wrong hits it removes, right hits it costs, on
    the tuning pairs the rules were not written against (semantic_pairs_extra.jsonl) and on all."""
    extra = {(p["a"], p["b"]) for p in load(HERE / "semantic_pairs_extra.jsonl")}
    bare = SemanticMatcher(matcher.verifier, matcher.floor, matcher.threshold, rules=())
    base = bare.decide_many([(p["a"], p["b"]) for p in pairs], sims.tolist())
    print(
        "| rule | new pairs: wrong hits removed / right hits lost "
        "| all tuning pairs: removed / lost | kept |\n|---|---|---|---|"
    )
    for rule in ALL_RULES:
        counts = {"new": [0, 0], "all": [0, 0]}
        for pair, decision in zip(pairs, base, strict=True):
            if decision.accepted and not rule.check(pair["a"], pair["b"]):
                column = int(pair["label"] == "paraphrase")
                counts["all"][column] += 1
                if (pair["a"], pair["b"]) in extra:
                    counts["new"][column] += 1
        print(
            f"| {rule.name} | {counts['new'][0]} / {counts['new'][1]} "
            f"| {counts['all'][0]} / {counts['all'][1]} "
            f"| {'yes' if rule in KEPT_RULES else 'no'} |"
        )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cost() -> None:
    """What the verifier costs a worker: load time, resident memory, time per candidate."""
    before = _rss_mb()
    started = time.perf_counter()
    verifier = CrossEncoder()
    loaded = time.perf_counter() - started
    pairs = [(p["a"], p["b"]) for p in load(TUNE) if p["lang"] == "en"]
    verifier.score_sync(pairs[:5])
    timings = []
    for pair in pairs:
        started = time.perf_counter()
        verifier.score_sync([pair])
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"model file: {MODEL_PATH.stat().st_size / 1e6:.1f} MB; load (with sha256 check): "
        f"{loaded * 1000:.0f} ms; resident memory added: {_rss_mb() - before:.0f} MB"
    )
    print(
        f"per candidate (both orders, one thread, {len(pairs)} tuning pairs): median "
        f"{np.median(timings):.1f} ms, p95 {np.percentile(timings, 95):.1f} ms, "
        f"max {max(timings):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, help="evaluate this file only")
    parser.add_argument("--public", type=Path, default=MRPC_TEST)
    parser.add_argument("--choose", action="store_true")
    parser.add_argument("--rules", action="store_true")
    parser.add_argument("--cost", action="store_true")
    args = parser.parse_args()
    if args.cost:
        cost()
        return 0
    embedder = LocalMiniLM()
    matcher = SemanticMatcher(CrossEncoder())
    print(
        f"operating point: similarity floor {matcher.floor}, verifier threshold "
        f"{matcher.threshold}, rules: {[r.name for r in matcher.rules]}"
    )
    if args.choose or args.rules:
        pairs = load(TUNE)
        sims = similarities(embedder, pairs)
        (choose if args.choose else rules_table)(matcher, pairs, sims)
        return 0
    if args.pairs is not None:
        sets = [
            (
                str(args.pairs),
                f"python -m loadtest.semantic_eval --pairs {args.pairs}",
                load(args.pairs),
            )
        ]
    else:
        sets = [
            (
                "Test split (loadtest/semantic_test.jsonl, never tuned on)",
                "python -m loadtest.semantic_eval",
                load(TEST),
            )
        ]
        if args.public.exists():
            sets.append(
                (
                    "Public: MRPC test, all 1,725 pairs",
                    "python -m loadtest.semantic_eval --public msr_paraphrase_test.txt",
                    load_mrpc(args.public),
                )
            )
        else:
            print(f"\n(public set {args.public} not found: skipped)")
        sets.append(
            (
                ("The README's 243 pairs (loadtest/semantic_pairs.jsonl; half are tuning pairs)"),
                "python -m loadtest.semantic_eval",
                load(README_PAIRS),
            )
        )
    worst = 1.0
    for name, command, pairs in sets:
        sims = similarities(embedder, pairs)
        decisions = matcher.decide_many([(p["a"], p["b"]) for p in pairs], sims.tolist())
        worst = min(worst, report(name, command, pairs, decisions))
        asked = sum(d.outcome in (Outcome.HIT, Outcome.VERIFIER) for d in decisions)
        print(f"verifier asked on {asked} of {len(pairs)} pairs (the rest stopped earlier)")
    return 0 if worst >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
