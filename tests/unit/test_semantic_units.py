"""The semantic tier's parts: the rules, the language check, the conversation text, the vector
index, the real embedder, the shipped verifier (its checksum, its decisions, where it runs), and
precision on the test split through the matcher the gateway uses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.crossencoder import MODEL_PATH, MODEL_SHA256, CrossEncoder
from gateway.cache.embedder import LocalMiniLM
from gateway.cache.index import VectorIndex
from gateway.cache.semantic import (
    DEFAULT_FLOOR,
    DEFAULT_VERIFIER_THRESHOLD,
    Outcome,
    SemanticMatcher,
    conversation_text,
)
from gateway.cache.verify import KEPT_RULES, SYNONYM_GROUPS, compatible, covered_language
from loadtest import public_pairs
from loadtest.public_pairs import PAWS_TEST, load_paws, paws_dev_split

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
TEST_SPLIT = LOADTEST / "semantic_test.jsonl"


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Summarize this in 3 bullets", "Summarize this in five bullets", "numbers differ"),
        ("Write 200 words on tea", "Write two hundred words on tea", None),
        (
            "How to cook rice without a rice cooker",
            "How to cook rice with a rice cooker",
            "negation differs",
        ),
        (
            "How long is the flight from Hanoi to Tokyo",
            "How long is the flight from Tokyo to Hanoi",
            "direction reversed",
        ),
        (
            "Which weighs more, a kilogram of steel or a pound of feathers?",
            "Which weighs more, a pound of steel or a kilogram of feathers?",
            "named entities, units or languages differ",
        ),
        ("Reply in JSON please", "Reply in YAML please", "output format or constraint differs"),
        ("Explain it briefly", "Explain it in detail", "output format or constraint differs"),
        (
            "Find the largest value in the array",
            "Find the smallest value in the array",
            "opposite terms",
        ),
        (
            "Check if the number is prime",
            "Check if the number is positive",
            "one content word swapped",
        ),
        (
            "Reverse a list in Python",
            "Reverse a list in Go",
            "named entities, units or languages differ",
        ),
        (
            "Viết hàm quicksort bằng Python",
            "Viết hàm quicksort trong Python",
            "language not covered by the embedder",
        ),
        (
            "How do I merge two dictionaries in Python?",
            "How can I combine two dicts in Python?",
            None,
        ),
    ],
)
def test_each_rule_refuses_what_it_covers_and_lets_paraphrases_through(
    a: str, b: str, reason: str | None
) -> None:
    ok, why = compatible(a, b)
    assert (ok, why) == ((True, "") if reason is None else (False, reason))


def test_a_word_in_two_synonym_groups_keeps_both_and_stopwords_are_not_synonyms() -> None:
    # "method" is both a "function" and an "approach"; the old table kept only its last group.
    assert compatible("Write a function to parse dates", "Write a method to parse dates")[0]
    assert compatible("Pick an approach for caching", "Pick a method for caching")[0]
    assert not compatible("Write a function for caching", "Write an approach for caching")[0]
    assert "way" not in SYNONYM_GROUPS and "explain" not in SYNONYM_GROUPS


def test_only_the_rules_that_add_precision_on_unseen_pairs_are_kept() -> None:
    assert [rule.name for rule in KEPT_RULES] == [
        "named entities, units or languages differ",
        "one content word swapped",
    ]


def test_only_text_the_models_cover_is_covered() -> None:
    assert covered_language("How do I sort a list?")
    assert covered_language("Is a café open on Sunday?")  # one accented letter is fine
    assert not covered_language("Làm sao để sắp xếp một danh sách?")
    assert not covered_language("Cach lam bai tap nay nhu the nao")  # Vietnamese without marks
    assert not covered_language("如何对列表排序")
    assert not covered_language("1234 !!!")


def test_the_conversation_text_is_every_turn_but_the_system_prompt() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "and then?"}]},
    ]
    assert conversation_text(messages) == "hi\nhello\nand then?"


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


@pytest.fixture(scope="module")
def verifier() -> CrossEncoder:
    return CrossEncoder()


@pytest.fixture(scope="module")
def matcher(verifier: CrossEncoder) -> SemanticMatcher:
    return SemanticMatcher(verifier)


async def test_the_local_embedder_gives_unit_vectors_that_rank_paraphrases_first(
    embedder: LocalMiniLM,
) -> None:
    vectors = await embedder.embed(
        [
            "How do I reverse a list in Python?",
            "What's the way to reverse a Python list?",
            "What is the boiling point of water?",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.9 > vectors[0] @ vectors[2]


def test_the_shipped_verifier_is_the_checked_model() -> None:
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == MODEL_SHA256
    assert 10_000_000 < MODEL_PATH.stat().st_size < 40_000_000


def test_the_public_set_is_in_the_repo_checked_and_split_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAWS is read from the committed copy (CI has no other), checked against its sha256, and
    the tuning part of its dev split shares no source sentence with the training part."""
    test = load_paws(PAWS_TEST)
    assert len(test) == 8000 and sum(p["label"] == "paraphrase" for p in test) == 3536
    train, tune = paws_dev_split()
    assert len(train) + len(tune) == 8000 and 1800 < len(tune) < 2400
    assert not {p[k] for p in train for k in "ab"} & {p[k] for p in tune for k in "ab"}
    tampered = tmp_path / "test.tsv"
    tampered.write_bytes(PAWS_TEST.read_bytes()[:-2] + b"1\n")
    monkeypatch.setattr(public_pairs, "DATA", tmp_path)
    with pytest.raises(RuntimeError, match="sha256"):
        load_paws(tampered)


def test_a_verifier_file_with_another_checksum_is_refused(tmp_path: Path) -> None:
    tampered = tmp_path / "verifier-int8.onnx"
    data = bytearray(MODEL_PATH.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="sha256"):
        CrossEncoder(tampered)


# From loadtest/semantic_test.jsonl: never used to train the verifier or pick its threshold.
SAME = [
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"),
    ("How old is the Eiffel Tower?", "What is the age of the Eiffel Tower?"),
    ("How do I install Docker on Ubuntu?", "What are the steps to install Docker on Ubuntu?"),
    ("What's the capital of Canada?", "Which city is the capital of Canada?"),
]
DIFFERENT = [
    ("Convert a CSV file to a JSON file in Python", "Convert a JSON file to a CSV file in Python"),
    (
        "What is the cheapest way to fly from London to Rome?",
        "What is the most expensive way to fly from London to Rome?",
    ),
    ("How do I mount a USB drive on Linux?", "How do I unmount a USB drive on Linux?"),
    ("Fetch a web page with requests in Python.", "Fetch a web page with httpx in Python."),
    ("How do I make pancakes with almond flour?", "How do I make pancakes with coconut flour?"),
]


def test_the_example_pairs_come_from_the_test_split() -> None:
    split = {
        (p["a"], p["b"]) for p in (json.loads(line) for line in TEST_SPLIT.read_text().splitlines())
    }
    assert set(SAME) <= split and set(DIFFERENT) <= split


@pytest.mark.parametrize(("a", "b"), SAME)
def test_the_verifier_accepts_paraphrases_it_never_saw(
    verifier: CrossEncoder, a: str, b: str
) -> None:
    assert verifier.score_sync([(a, b)])[0] >= DEFAULT_VERIFIER_THRESHOLD


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_the_verifier_rejects_close_prompts_that_need_another_answer(
    verifier: CrossEncoder, a: str, b: str
) -> None:
    assert verifier.score_sync([(a, b)])[0] < DEFAULT_VERIFIER_THRESHOLD


def test_the_verifier_score_does_not_depend_on_the_order(verifier: CrossEncoder) -> None:
    a, b = DIFFERENT[0]
    assert verifier.score_sync([(a, b)])[0] == pytest.approx(verifier.score_sync([(b, a)])[0])


async def test_the_matcher_refuses_cheaply_before_asking_the_verifier(
    matcher: SemanticMatcher,
) -> None:
    low = await matcher.accept("Who wrote Hamlet?", "Who wrote Hamlet?", DEFAULT_FLOOR - 0.01)
    assert (low.accepted, low.outcome, low.score) == (False, Outcome.BELOW_FLOOR, None)
    vi = await matcher.accept("Thủ đô của Pháp là gì?", "Thủ đô nước Pháp là gì?", 0.99)
    assert (vi.accepted, vi.outcome) == (False, Outcome.LANGUAGE)
    swapped = await matcher.accept("Check if a number is prime", "Check if a number is even", 0.99)
    assert (swapped.accepted, swapped.outcome, swapped.reason) == (
        False,
        Outcome.RULE,
        "one content word swapped",
    )


async def test_the_matcher_asks_the_verifier_in_its_own_thread(
    matcher: SemanticMatcher, verifier: CrossEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    score = verifier.score_sync

    def recording(pairs: list[tuple[str, str]]) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return score(pairs)

    monkeypatch.setattr(verifier, "score_sync", recording)
    hit, miss = await asyncio.gather(
        matcher.accept(*SAME[2], 0.95), matcher.accept(*DIFFERENT[0], 0.99)
    )
    assert (hit.accepted, hit.outcome) == (True, Outcome.HIT)
    assert (miss.accepted, miss.outcome) == (False, Outcome.VERIFIER)
    assert len(threads) == 2 and all(t.startswith("verifier") for t in threads)
    assert threading.current_thread().name not in threads


def _test_split_decisions(embedder: LocalMiniLM, matcher: SemanticMatcher) -> tuple[int, int, int]:
    pairs = [json.loads(line) for line in TEST_SPLIT.read_text().splitlines() if line.strip()]
    a = np.vstack([embedder.embed_sync([p["a"]]) for p in pairs])  # one at a time, as served
    b = np.vstack([embedder.embed_sync([p["b"]]) for p in pairs])
    decisions = matcher.decide_many([(p["a"], p["b"]) for p in pairs], (a * b).sum(axis=1).tolist())
    hits = [p for p, d in zip(pairs, decisions, strict=True) if d.accepted]
    assert not any(p["lang"] == "vi" for p in hits)
    right = sum(p["label"] == "paraphrase" for p in hits)
    return right, len(hits) - right, sum(p["label"] == "paraphrase" for p in pairs)


def test_the_test_split_stays_where_it_was_measured(
    embedder: LocalMiniLM, matcher: SemanticMatcher
) -> None:
    """A regression guard at the measured point (35 right, 0 wrong: README), not the bar."""
    right, wrong, _ = _test_split_decisions(embedder, matcher)
    assert right >= 33 and wrong == 0


@pytest.mark.xfail(strict=True, reason="not met yet (1.000 / 0.407): the tier stays off by default")
def test_the_test_split_meets_the_bar(embedder: LocalMiniLM, matcher: SemanticMatcher) -> None:
    right, wrong, positives = _test_split_decisions(embedder, matcher)
    assert right / (right + wrong) >= 0.99 and right / positives >= 0.5
