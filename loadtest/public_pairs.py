"""The public paraphrase set the semantic tier is measured on: PAWS-Wiki (labeled, final).

PAWS (Zhang, Baldridge and He, NAACL 2019, "PAWS: Paraphrase Adversaries from Word
Scrambling"): Wikipedia sentence pairs with high word overlap, human-labeled, half of the
"different" ones made by swapping words, exactly the near misses a cache must not serve. Licence:
"may be freely used for any purpose, although acknowledgement of Google LLC as the data source
would be appreciated". The copy in loadtest/data/paws/ (dev.tsv, test.tsv; sha256 in
loadtest/data/paws/SOURCE.md, checked here) lives in the repo so CI reproduces every figure.

PAWS' own dev split is cut once, seed 15, into a training part (the verifier learns from it) and
a tuning part (thresholds are chosen on it); pairs made from the same source sentence stay on one
side. The test split is only ever reported.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

DATA = Path(__file__).parent / "data" / "paws"
PAWS_DEV = DATA / "dev.tsv"
PAWS_TEST = DATA / "test.tsv"
SHA256 = {
    "dev.tsv": "70fd05a74d77576035f9a9eff65a850a67782d7d02ad7a185c37127f85f4c515",
    "test.tsv": "a4dfaa993492e02982bf6f2cebe7e3903dcb18e591b336517bdb78ddfb2e852d",
}
SEED = 15
TUNE_SHARE = 0.25  # of PAWS dev's source groups: ~2,000 pairs to choose thresholds on

Pairs = list[dict[str, str]]


def load_paws(path: Path) -> Pairs:
    """PAWS tsv (id, sentence1, sentence2, label; header optional) as eval pairs; a known file
    whose bytes changed is refused, so every reported figure is on the recorded data."""
    data = path.read_bytes()
    expected = SHA256.get(path.name) if path.parent.resolve() == DATA.resolve() else None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"{path}: sha256 differs from loadtest/data/paws/SOURCE.md")
    pairs = []
    for row in data.decode("utf-8").splitlines():
        cells = row.split("\t")
        if len(cells) != 4 or cells[3] not in ("0", "1"):
            continue
        pairs.append({"a": cells[1], "b": cells[2], "kind": "paws", "lang": "en",
                      "label": "paraphrase" if cells[3] == "1" else "different"})
    return pairs


def load_mrpc(path: Path) -> Pairs:
    """MRPC's tsv (Quality, #1 ID, #2 ID, #1 String, #2 String), for a local copy only: its
    licence is research use, so it is not in the repo."""
    pairs = []
    for row in path.read_text(encoding="utf-8-sig").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 5:
            pairs.append({"a": cells[3], "b": cells[4], "kind": "mrpc", "lang": "en",
                          "label": "paraphrase" if cells[0] == "1" else "different"})
    return pairs


def load_public(path: Path) -> Pairs:
    return load_mrpc(path) if "msr_paraphrase" in path.name else load_paws(path)


def _key(text: str) -> str:
    return " ".join(sorted(re.findall(r"\w+", text.lower())))


def paws_dev_split(seed: int = SEED) -> tuple[Pairs, Pairs]:
    """(training part, tuning part) of PAWS dev. Pairs whose sentences have the same bag of
    words (PAWS' word swaps keep it) are one group, and a group goes wholly to one side."""
    pairs = load_paws(PAWS_DEV)
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, p in enumerate(pairs):
        for text in (p["a"], p["b"]):
            j = first.setdefault(_key(text), i)
            parent[find(i)] = find(j)
    groups = sorted({find(i) for i in range(len(pairs))})
    tune_groups = set(random.Random(seed).sample(groups, round(len(groups) * TUNE_SHARE)))
    train = [p for i, p in enumerate(pairs) if find(i) not in tune_groups]
    tune = [p for i, p in enumerate(pairs) if find(i) in tune_groups]
    return train, tune
