"""Split the semantic tier's own pairs into a tuning part and a test part, once, with a fixed seed.

    python -m loadtest.semantic_split

Reads loadtest/semantic_pairs.jsonl (the README's 243 pairs) and loadtest/semantic_pairs_extra.jsonl
(pairs written later, from other domains), shuffles each (label, language) group with seed 15 and
sends half of each group to loadtest/semantic_tune.jsonl and half to loadtest/semantic_test.jsonl.
Thresholds, the similarity floor and rule selection are chosen on the tuning part only; the test
part is only ever reported. The two files are committed: rerunning rewrites them identically.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = [HERE / "semantic_pairs.jsonl", HERE / "semantic_pairs_extra.jsonl"]
SEED = 15


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def split(pairs: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for pair in pairs:
        groups[(pair["label"], pair["lang"])].append(pair)
    rng = random.Random(SEED)
    tune: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        half = len(group) // 2
        tune.extend(group[:half])
        test.extend(group[half:])
    return tune, test


def main() -> None:
    pairs = [pair for source in SOURCES for pair in load(source)]
    for name, part in zip(
        ("semantic_tune.jsonl", "semantic_test.jsonl"), split(pairs), strict=True
    ):
        (HERE / name).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in part))
        print(f"{name}: {len(part)} pairs")


if __name__ == "__main__":
    main()
