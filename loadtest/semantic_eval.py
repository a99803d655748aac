"""Precision and recall of the semantic tier on pairs of prompts, through the tier's own matcher.

    python -m loadtest.semantic_eval                    # the three tables (test, public, README)
    python -m loadtest.semantic_eval --pairs other.jsonl   # any file of the same shape
    python -m loadtest.semantic_eval --choose           # pick floor and threshold (tuning sets)
    python -m loadtest.semantic_eval --rules            # what each rule adds: tuning sets only
    python -m loadtest.semantic_eval --cost             # verifier load time, memory, ms a candidate

Each pair is {"a", "b", "label": "paraphrase" | "different", "kind", "lang"}. A pair "hits" when
the tier would serve b's answer for a: the bi-encoder's cosine, then ``SemanticMatcher`` (the
class the gateway runs; one pair at a time, as on the request path). Precision = right hits /
all hits (a wrong hit serves a wrong answer); recall = right hits / paraphrase pairs.

The sets: loadtest/semantic_test.jsonl (the test half of our own pairs, never tuned on); PAWS
test (all 8,000 pairs, a public adversarial set we did not write, committed in
loadtest/data/paws/ with its source, licence and sha256; ``--public PATH`` reads another file in
PAWS's or MRPC's format); and loadtest/semantic_pairs.jsonl (the README's 243 pairs, half of
them in the tuning split). Tuning (--choose, --rules) reads only loadtest/semantic_tune.jsonl
and the tuning part of PAWS dev. Exits 1 if any reported set's precision is under 0.99.
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
from gateway.cache.verify import ALL_RULES, KEPT_RULES
from loadtest.public_pairs import PAWS_TEST, load_public, paws_dev_split

HERE = Path(__file__).parent
TEST = HERE / "semantic_test.jsonl"
TUNE = HERE / "semantic_tune.jsonl"
README_PAIRS = HERE / "semantic_pairs.jsonl"
BAR = 0.99
# The verifier's probabilities crowd near 1: the grid is finer there.
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]

Pairs = list[dict[str, str]]


def load(path: Path) -> Pairs:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def tuning_sets() -> list[tuple[str, Pairs]]:
    """The only pairs anything is chosen on: our tuning split and PAWS dev's tuning part."""
    return [("our tuning split", load(TUNE)), ("PAWS dev, tuning part", paws_dev_split()[1])]


def choose(matcher: SemanticMatcher, embedder: LocalMiniLM) -> None:
    """Grid over (floor, threshold) on both tuning sets. A point is safe on a set when its
    precision is >= 0.99 there at that threshold and at the next lower one too (a margin). Best
    first: safe on both; else safe on our tuning split (the gateway's own kind of prompts) with
    the most right hits there, then the best precision on PAWS' tuning part."""
    grids = []
    for name, pairs in tuning_sets():
        sims = similarities(embedder, pairs)
        scores = scores_for_all(matcher, pairs)
        eligible = np.array([matcher.precheck(p["a"], p["b"], 1.0) is None for p in pairs])
        labels = np.array([p["label"] == "paraphrase" for p in pairs])
        grid = {}
        for floor in np.round(np.arange(0.50, 0.91, 0.05), 2):
            for threshold in THRESHOLDS:
                hit = eligible & (sims >= floor) & (scores >= threshold)
                grid[(float(floor), threshold)] = (int((hit & labels).sum()),
                                                   int((hit & ~labels).sum()))
        grids.append((name, grid))
        print(f"{name}: {len(pairs)} pairs, {int(labels.sum())} paraphrases; highest scores of "
              f"the different pairs past the rules: "
              f"{np.sort(scores[~labels & eligible])[-5:].round(4).tolist()}")

    def precision(right: int, wrong: int) -> float:
        return right / (right + wrong) if right + wrong else 1.0

    rows = []
    for key in grids[0][1]:
        floor, threshold = key
        lower = (floor, THRESHOLDS[max(0, THRESHOLDS.index(threshold) - 1)])
        safe = [g[key][0] > 0 and precision(*g[key]) >= BAR and precision(*g[lower]) >= BAR
                for _, g in grids]
        rows.append((all(safe), safe[0], grids[0][1][key][0], precision(*grids[1][1][key]),
                     floor, threshold))
    rows.sort(key=lambda r: (not r[0], not r[1], -r[2], -r[3], -r[5], -r[4]))
    columns = " | ".join(f"{n}: right / wrong (precision)" for n, _ in grids)
    print(f"\n| floor | threshold | {columns} | safe (>= {BAR} here and one step lower) |")
    print("|---|---|" + "---|" * len(grids) + "---|")
    for both, ours, _, _, floor, threshold in rows[:12]:
        cells = " | ".join(f"{g[(floor, threshold)][0]} / {g[(floor, threshold)][1]} "
                           f"({precision(*g[(floor, threshold)]):.3f})" for _, g in grids)
        print(f"| {floor} | {threshold} | {cells} | "
              f"{'both' if both else 'ours only' if ours else 'no'} |")


def rules_table(matcher: SemanticMatcher, embedder: LocalMiniLM) -> None:
    """Each rule on top of the verifier alone: wrong hits it removes, right hits it costs, on
    the tuning pairs the rules were not written against (semantic_pairs_extra.jsonl), on all
    our tuning pairs, and on PAWS dev's tuning part."""
    extra = {(p["a"], p["b"]) for p in load(HERE / "semantic_pairs_extra.jsonl")}
    bare = SemanticMatcher(matcher.verifier, matcher.floor, matcher.threshold, rules=())
    ours, paws = (pairs for _, pairs in tuning_sets())
    counts = {rule.name: {"new": [0, 0], "all": [0, 0], "paws": [0, 0]} for rule in ALL_RULES}
    for column, pairs in (("all", ours), ("paws", paws)):
        base = bare.decide_many([(p["a"], p["b"]) for p in pairs],
                                similarities(embedder, pairs).tolist())
        for rule in ALL_RULES:
            for pair, decision in zip(pairs, base, strict=True):
                if decision.accepted and not rule.check(pair["a"], pair["b"]):
                    right = int(pair["label"] == "paraphrase")
                    counts[rule.name][column][right] += 1
                    if column == "all" and (pair["a"], pair["b"]) in extra:
                        counts[rule.name]["new"][right] += 1
    print(
        "| rule | new pairs: wrong hits removed / right hits lost "
        "| all our tuning pairs: removed / lost | PAWS dev tuning part: removed / lost "
        "| kept |\n|---|---|---|---|---|"
    )
    for rule in ALL_RULES:
        c = counts[rule.name]
        print(
            f"| {rule.name} | {c['new'][0]} / {c['new'][1]} | {c['all'][0]} / {c['all'][1]} "
            f"| {c['paws'][0]} / {c['paws'][1]} | {'yes' if rule in KEPT_RULES else 'no'} |"
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
    parser.add_argument("--public", type=Path, default=PAWS_TEST)
    parser.add_argument("--choose", action="store_true")
    parser.add_argument("--rules", action="store_true")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--model", type=Path, help="a candidate verifier (no checksum check)")
    args = parser.parse_args()
    if args.cost:
        cost()
        return 0
    embedder = LocalMiniLM()
    verifier = CrossEncoder(args.model, sha256=None) if args.model else CrossEncoder()
    matcher = SemanticMatcher(verifier)
    print(
        f"operating point: similarity floor {matcher.floor}, verifier threshold "
        f"{matcher.threshold}, rules: {[r.name for r in matcher.rules]}"
    )
    if args.choose or args.rules:
        (choose if args.choose else rules_table)(matcher, embedder)
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
        public = load_public(args.public)  # a missing file is an error, never a silent skip
        default = args.public.resolve() == PAWS_TEST.resolve()
        sets.append(
            (
                f"Public: PAWS-Wiki test, all {len(public):,} pairs, never trained or tuned on"
                if default else f"Public: {args.public}",
                "python -m loadtest.semantic_eval"
                + ("" if default else f" --public {args.public}"),
                public,
            )
        )
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
