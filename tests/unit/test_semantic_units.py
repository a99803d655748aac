"""The semantic tier's parts: each verifier guard, the language check, the conversation text,
the vector index, the real embedder, and precision on the evaluation set."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.embedder import LocalMiniLM
from gateway.cache.index import VectorIndex
from gateway.cache.semantic import DEFAULT_THRESHOLD, SemanticMatcher, conversation_text
from gateway.cache.verify import compatible, covered_language

PAIRS = Path(__file__).resolve().parents[2] / "loadtest" / "semantic_pairs.jsonl"


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("Summarize this in 3 bullets", "Summarize this in five bullets", "numbers differ"),
    ("Write 200 words on tea", "Write two hundred words on tea", None),
    ("How to cook rice without a rice cooker", "How to cook rice with a rice cooker",
     "negation differs"),
    ("How long is the flight from Hanoi to Tokyo", "How long is the flight from Tokyo to Hanoi",
     "direction reversed"),
    ("Which weighs more, a kilogram of steel or a pound of feathers?",
     "Which weighs more, a pound of steel or a kilogram of feathers?",
     "named entities, units or languages differ"),
    ("Reply in JSON please", "Reply in YAML please", "output format or constraint differs"),
    ("Explain it briefly", "Explain it in detail", "output format or constraint differs"),
    ("Find the largest value in the array", "Find the smallest value in the array",
     "opposite terms"),
    ("Check if the number is prime", "Check if the number is positive", "one content word swapped"),
    ("Reverse a list in Python", "Reverse a list in Go", "named entities, units or languages differ"),
    ("What is the capital of Spain?", "What is the capital of Italy?",
     "named entities, units or languages differ"),
    ("Viết hàm quicksort bằng Python", "Viết hàm quicksort trong Python",
     "language not covered by the embedder"),
    ("How do I merge two dictionaries in Python?", "How can I combine two dicts in Python?", None),
])
def test_each_guard_refuses_what_it_covers_and_lets_paraphrases_through(
    a: str, b: str, reason: str | None
) -> None:
    ok, why = compatible(a, b)
    assert (ok, why) == ((True, "") if reason is None else (False, reason))


def test_only_text_the_embedder_covers_is_covered() -> None:
    assert covered_language("How do I sort a list?")
    assert covered_language("Is a café open on Sunday?")  # one accented letter is fine
    assert not covered_language("Làm sao để sắp xếp một danh sách?")
    assert not covered_language("Cach lam bai tap nay nhu the nao")  # Vietnamese without marks
    assert not covered_language("如何对列表排序")
    assert not covered_language("1234 !!!")


def test_the_conversation_text_is_every_turn_but_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "and then?"}]}]
    assert conversation_text(messages) == "hi\nhello\nand then?"


def test_the_matcher_needs_both_similarity_and_the_verifier() -> None:
    matcher = SemanticMatcher(0.9)
    assert not matcher.accept("a b c", "a b c", 0.89)[0]
    assert not matcher.accept("Convert 1 km to miles", "Convert 1 miles to km", 0.99)[0]
    assert matcher.accept("Who wrote Hamlet?", "Who wrote Hamlet?", 0.95)[0]


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_the_index_finds_the_nearest_in_the_same_scope_only() -> None:
    index = VectorIndex(max_entries=10)
    later = time.time() + 60
    index.add("s1", "k1", unit(1, 0, 0), "one", later)
    index.add("s1", "k2", unit(0, 1, 0), "two", later)
    index.add("s2", "k3", unit(1, 0.1, 0), "three", later)
    found = index.nearest("s1", unit(0.9, 0.1, 0))
    assert found is not None and (found.key, found.text) == ("k1", "one")
    assert found.similarity == pytest.approx(float(unit(0.9, 0.1, 0) @ unit(1, 0, 0)))
    assert index.nearest("s3", unit(1, 0, 0)) is None


def test_the_index_drops_expired_and_oldest_entries() -> None:
    index = VectorIndex(max_entries=2)
    index.add("s", "gone", unit(1, 0), "x", time.time() - 1)
    assert index.nearest("s", unit(1, 0)) is None and len(index) == 0
    for i in range(3):
        index.add("s", f"k{i}", unit(1, i), "x", time.time() + 60)
    assert len(index) == 2
    found = index.nearest("s", unit(1, 0))
    assert found is not None and found.key != "k0"


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLM:
    return LocalMiniLM()


async def test_the_local_embedder_gives_unit_vectors_that_rank_paraphrases_first(
    embedder: LocalMiniLM,
) -> None:
    vectors = await embedder.embed(["How do I reverse a list in Python?",
                                    "What's the way to reverse a Python list?",
                                    "What is the boiling point of water?"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.9 > vectors[0] @ vectors[2]


def test_precision_on_the_evaluation_set_at_the_default_threshold(embedder: LocalMiniLM) -> None:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    assert sum(p["label"] == "paraphrase" for p in pairs) >= 100
    assert sum(p["label"] == "different" for p in pairs) >= 100
    a = embedder.embed_sync([p["a"] for p in pairs])
    b = embedder.embed_sync([p["b"] for p in pairs])
    matcher = SemanticMatcher(DEFAULT_THRESHOLD)
    hits = [p for p, sim in zip(pairs, (a * b).sum(axis=1), strict=True)
            if matcher.accept(p["a"], p["b"], float(sim))[0]]
    right = sum(p["label"] == "paraphrase" for p in hits)
    assert right / len(hits) >= 0.99
    assert right >= 30  # the tier is worth having: a third of the paraphrases hit
    assert not any(p["lang"] == "vi" for p in hits)
