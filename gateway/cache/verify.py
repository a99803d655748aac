"""The semantic tier's verifier: reject a nearest neighbour that differs in what sentence
embeddings are blind to. Measured here: all-MiniLM-L6-v2 puts "convert 100 Celsius to
Fahrenheit" and "convert 100 Fahrenheit to Celsius" at cosine 0.991, above most true
paraphrases. Each guard is cheap, deterministic and errs towards a miss: a wrong hit is worse.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

WORD = re.compile(r"[A-Za-z][A-Za-z0-9_+#'.-]*[A-Za-z0-9+#]|[A-Za-z]|\d+(?:[.,]\d+)*")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
IDENTIFIER = re.compile(r"\b(?:[a-z]+_[a-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*|\w+\.\w+\(?\)?|\w+\(\))")

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "dozen": "12",
    "half": "0.5",
    "twice": "2x",
    "double": "2x",
    "triple": "3x",
    "once": "1x",
    "single": "1",
    "couple": "2",
    "first": "#1",
    "second": "#2",
    "third": "#3",
    "last": "#-1",
}
NEGATIONS = {
    "not",
    "no",
    "never",
    "without",
    "none",
    "nothing",
    "neither",
    "nor",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "won't",
    "shouldn't",
    "wouldn't",
    "couldn't",
    "mustn't",
    "except",
    "excluding",
    "exclude",
    "avoid",
    "avoiding",
    "unless",
    "lack",
    "lacks",
    "non",
    "hardly",
}
CONNECTORS = {
    "to",
    "into",
    "than",
    "vs",
    "versus",
    "from",
    "before",
    "after",
    "over",
    "under",
    "above",
    "below",
    "onto",
    "towards",
    "per",
}
KEY_TERMS = {
    # programming languages, formats and tools
    "python",
    "java",
    "javascript",
    "typescript",
    "golang",
    "go",
    "rust",
    "c",
    "c++",
    "c#",
    "ruby",
    "php",
    "sql",
    "kotlin",
    "swift",
    "bash",
    "shell",
    "powershell",
    "scala",
    "r",
    "haskell",
    "perl",
    "lua",
    "dart",
    "html",
    "css",
    "react",
    "vue",
    "angular",
    "django",
    "flask",
    "fastapi",
    "node",
    "docker",
    "kubernetes",
    "git",
    "linux",
    "windows",
    "macos",
    "postgres",
    "postgresql",
    "mysql",
    "sqlite",
    "redis",
    "mongodb",
    "pandas",
    "numpy",
    # natural languages
    "english",
    "french",
    "spanish",
    "german",
    "italian",
    "portuguese",
    "vietnamese",
    "chinese",
    "japanese",
    "korean",
    "russian",
    "arabic",
    "hindi",
    "thai",
    "dutch",
    "polish",
    "turkish",
    # units and currencies
    "celsius",
    "fahrenheit",
    "kelvin",
    "km",
    "kilometer",
    "kilometers",
    "kilogram",
    "pound",
    "gram",
    "ounce",
    "meter",
    "liter",
    "gallon",
    "dollar",
    "euro",
    "kilometres",
    "miles",
    "mile",
    "kg",
    "kilograms",
    "pounds",
    "lbs",
    "grams",
    "ounces",
    "meters",
    "metres",
    "feet",
    "foot",
    "inches",
    "inch",
    "cm",
    "mm",
    "liters",
    "litres",
    "gallons",
    "cups",
    "usd",
    "eur",
    "gbp",
    "jpy",
    "vnd",
    "dollars",
    "euros",
    "yen",
    "dong",
    "bitcoin",
    "seconds",
    "minutes",
    "hours",
    "days",
    "weeks",
    "months",
    "years",
    "bytes",
    "kb",
    "mb",
    "gb",
    "tb",
    "percent",
    "%",
}
FORMATS = {
    "json",
    "yaml",
    "csv",
    "xml",
    "markdown",
    "html",
    "table",
    "bullet",
    "bullets",
    "numbered",
    "haiku",
    "poem",
    "limerick",
    "sonnet",
    "essay",
    "email",
    "tweet",
    "uppercase",
    "lowercase",
    "formal",
    "informal",
    "casual",
    "funny",
    "serious",
    "pseudocode",
    "diagram",
    "one-liner",
    "recursive",
    "recursively",
    "iterative",
    "iteratively",
    "async",
    "asynchronous",
    "synchronous",
    "regex",
    "paragraph",
    "paragraphs",
    "sentence",
    "sentences",
    "words",
}
LENGTHS = {
    "brief": "short",
    "briefly": "short",
    "short": "short",
    "concise": "short",
    "concisely": "short",
    "quick": "short",
    "detailed": "long",
    "detail": "long",
    "long": "long",
    "thorough": "long",
    "comprehensive": "long",
    "in-depth": "long",
}
ANTONYMS = [
    {"largest", "smallest"},
    {"biggest", "smallest"},
    {"max", "min"},
    {"maximum", "minimum"},
    {"increase", "decrease"},
    {"increasing", "decreasing"},
    {"best", "worst"},
    {"highest", "lowest"},
    {"most", "least"},
    {"more", "less", "fewer"},
    {"above", "below"},
    {"add", "remove", "delete"},
    {"encrypt", "decrypt"},
    {"encode", "decode"},
    {"compress", "decompress"},
    {"upload", "download"},
    {"push", "pull"},
    {"ascending", "descending"},
    {"buy", "sell"},
    {"import", "export"},
    {"open", "close"},
    {"start", "stop"},
    {"enable", "disable"},
    {"true", "false"},
    {"input", "output"},
    {"read", "write"},
    {"left", "right"},
    {"up", "down"},
    {"positive", "negative"},
    {"even", "odd"},
    {"pros", "cons"},
    {"advantages", "disadvantages"},
    {"benefits", "drawbacks", "risks"},
    {"serialize", "deserialize"},
    {"before", "after"},
    {"hot", "cold"},
    {"fast", "slow"},
    {"faster", "slower"},
    {"cheap", "expensive"},
    {"cheaper", "pricier"},
    {"longest", "shortest"},
    {"oldest", "newest", "youngest"},
    {"north", "south"},
    {"east", "west"},
    {"win", "lose"},
    {"import", "export"},
    {"client", "server"},
    {"sender", "receiver"},
    {"union", "intersection"},
    {"prime", "composite"},
    {"rows", "columns"},
    {"horizontal", "vertical"},
    {"male", "female"},
    {"past", "future"},
    {"yesterday", "tomorrow"},
    {"inner", "outer"},
    {"sum", "product", "difference", "average", "mean", "median", "mode"},
    {"lend", "borrow"},
    {"high", "low"},
    {"higher", "lower"},
    {"gain", "lose"},
    {"on", "off"},
    {"lock", "unlock"},
    {"block", "unblock"},
    {"install", "uninstall"},
    {"follow", "unfollow"},
    {"good", "bad"},
    {"safe", "dangerous", "unsafe"},
    {"legal", "illegal"},
    {"similarities", "differences"},
    {"synonym", "antonym"},
    {"constant", "mutable", "variable"},
    {"bold", "italic"},
    {"square", "cube", "root"},
    {"causes", "consequences", "effects"},
    {"teach", "learn"},
    {"import", "export"},
    {"deposit", "withdraw"},
    {"merge", "split"},
]
SYNONYMS = [
    {"function", "method", "routine"},
    {"make", "create", "build", "write", "generate"},
    {"program", "code", "script"},
    {"fix", "repair", "debug", "solve", "resolve"},
    {"big", "large"},
    {"quick", "fast", "rapid"},
    {"explain", "describe", "clarify"},
    {"show", "give", "provide", "tell", "list"},
    {"difference", "distinction"},
    {"find", "get", "compute", "calculate", "determine", "obtain", "work"},
    {"use", "utilize", "employ"},
    {"way", "method", "approach"},
    {"help", "assist"},
    {"begin", "start"},
    {"error", "bug", "issue", "problem"},
    {"car", "automobile"},
    {"buy", "purchase"},
    {"simple", "easy", "basic"},
    {"reverse", "invert"},
    {"string", "text"},
    {"doctor", "physician"},
    {"film", "movie"},
]
STOPWORDS = {
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "of",
    "in",
    "on",
    "at",
    "for",
    "with",
    "by",
    "and",
    "or",
    "but",
    "if",
    "then",
    "so",
    "as",
    "that",
    "this",
    "these",
    "those",
    "it",
    "its",
    "i",
    "me",
    "my",
    "we",
    "our",
    "you",
    "your",
    "he",
    "she",
    "they",
    "them",
    "their",
    "do",
    "does",
    "did",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "please",
    "how",
    "what",
    "which",
    "who",
    "whom",
    "why",
    "when",
    "where",
    "there",
    "here",
    "some",
    "any",
    "all",
    "each",
    "every",
    "about",
    "into",
    "up",
    "out",
    "just",
    "also",
    "very",
    "really",
    "kindly",
    "want",
    "need",
    "like",
    "know",
    "tell",
    "let",
    "us",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "quick",
    "question",
    "have",
    "has",
    "had",
    "got",
    "using",
    "via",
    "ways",
    "good",
    "someone",
    "something",
    "anyone",
    "to",
    "from",
    "whether",
    "than",
    "able",
    "possible",
    "im",
    "i'm",
    "what's",
    "whats",
    "explain",
    "suggest",
    "recommend",
    "describe",
    "steps",
    "step",
    "way",
    "reason",
    "purpose",
    "main",
    "mainly",
    "usually",
    "actually",
    "exactly",
    "simple",
    "simply",
    "terms",
    "basically",
}


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def tokens(text: str) -> list[str]:
    words = [t.lower().strip(".'") for t in WORD.findall(_fold(text))]
    return [w.removesuffix("'s") for w in words]


VIETNAMESE_ASCII = {
    "cach",
    "lam",
    "sao",
    "cua",
    "nhu",
    "nao",
    "bang",
    "trong",
    "cho",
    "toi",
    "voi",
    "khong",
    "duoc",
    "nhung",
    "mot",
    "nguoi",
    "sang",
    "doi",
    "viet",
    "ham",
    "gi",
    "la",
    "va",
    "cac",
    "nay",
    "khi",
    "thi",
    "de",
    "tai",
    "bao",
    "nhieu",
    "tieng",
    "ngay",
    "nam",
    "hay",
    "giup",
    "minh",
    "ban",
    "em",
    "anh",
}


def covered_language(text: str) -> bool:
    """English-only embedder: text with a share of non-ASCII letters (Vietnamese diacritics,
    other scripts), or Vietnamese typed without its diacritics, is not covered, and such
    requests use the exact tier only."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    foreign = sum(1 for c in letters if ord(c) > 127)
    if foreign / len(letters) > 0.06:
        return False
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", text)]
    vietnamese = sum(1 for w in words if w in VIETNAMESE_ASCII)
    return vietnamese < 2 or vietnamese / len(words) < 0.25


SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _numbers(words: list[str]) -> Counter[str]:
    """Numbers as values: "200", "two hundred" and "2,00" would all read 200 ("2,00" as 200)."""
    found: Counter[str] = Counter()
    pending: int | None = None  # a spelled-out cardinal being read ("two hundred five")
    for w in [*words, ""]:
        value = NUMBER_WORDS.get(w)
        if value is not None and value.isdigit():
            n = int(value)
            if w in SCALES:
                pending = (pending or 1) * n
            else:
                pending = (pending or 0) + n
            continue
        if pending is not None:
            found[str(pending)] += 1
            pending = None
        if NUMBER.fullmatch(w):
            plain = w.replace(",", "")
            found[plain.rstrip("0").rstrip(".") if "." in plain else plain] += 1
        elif value is not None:
            found[value] += 1
    return found


def numbers_match(a: list[str], b: list[str]) -> bool:
    """Numbers and quantities (digits or words) must be the same, as many times each."""
    return _numbers(a) == _numbers(b)


def negations_match(a: list[str], b: list[str]) -> bool:
    """Negation flips meaning while barely moving the vector."""

    def count(words: list[str]) -> int:
        return sum(1 for w in words if w in NEGATIONS or w.endswith("n't"))

    return count(a) == count(b)


def _key_sequence(words: list[str], original: str) -> list[str]:
    capitalised = {
        w.lower() for w in re.findall(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+", _fold(original))
    }
    idents = {m.lower() for m in IDENTIFIER.findall(_fold(original))}
    return [
        w
        for w in words
        if (w in KEY_TERMS or w in capitalised or w in idents)
        and w not in FORMATS
        and w not in NUMBER_WORDS
    ]


def key_terms_match(a: list[str], b: list[str], text_a: str, text_b: str) -> bool:
    """Named things (proper nouns, identifiers, languages, units, currencies) must be the same,
    in the same order: "Celsius to Fahrenheit" is not "Fahrenheit to Celsius", and "a kilogram
    of steel or a pound of feathers" is not "a pound of steel or a kilogram of feathers"."""
    return _key_sequence(a, text_a) == _key_sequence(b, text_b)


def directions_match(a: list[str], b: list[str]) -> bool:
    """X-to-Y, X-than-Y, X-vs-Y relations must not be reversed."""

    def pairs(words: list[str]) -> set[tuple[str, str]]:
        content = [(i, w) for i, w in enumerate(words) if w not in STOPWORDS or w in CONNECTORS]
        found = set()
        for j, (_, w) in enumerate(content):
            if w in CONNECTORS and 0 < j < len(content) - 1:
                left, right = content[j - 1][1], content[j + 1][1]
                if left not in CONNECTORS and right not in CONNECTORS:
                    found.add((left, right))
        return found

    pa, pb = pairs(a), pairs(b)
    return not any((y, x) in pb for x, y in pa if x != y)


def formats_match(a: list[str], b: list[str]) -> bool:
    """Output format and constraints (JSON vs YAML, a table, a haiku, briefly vs in detail)."""
    if {w for w in a if w in FORMATS} != {w for w in b if w in FORMATS}:
        return False
    return {LENGTHS[w] for w in a if w in LENGTHS} == {LENGTHS[w] for w in b if w in LENGTHS}


def antonyms_match(a: list[str], b: list[str]) -> bool:
    """Opposites (largest/smallest, encrypt/decrypt, ascending/descending...) must not face
    each other across the two texts."""
    set_a, set_b = set(a), set(b)
    return not any(
        (group & set_a) and (group & set_b) and (group & set_a) != (group & set_b)
        for group in ANTONYMS
    )


def _synonym_groups() -> dict[str, frozenset[int]]:
    """Word -> the synonym groups it belongs to. A word may sit in several groups ("method" is a
    "function" and a "way"); words that are stopwords are left out, since they never count."""
    groups: dict[str, set[int]] = {}
    for i, group in enumerate(SYNONYMS):
        for word in group - STOPWORDS:
            groups.setdefault(word, set()).add(i)
    return {word: frozenset(ids) for word, ids in groups.items()}


SYNONYM_GROUPS = _synonym_groups()


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _synonyms(a: str, b: str) -> bool:
    return bool(SYNONYM_GROUPS.get(a, frozenset()) & SYNONYM_GROUPS.get(b, frozenset()))


def substitution_is_synonym(a: list[str], b: list[str]) -> bool:
    """When the two differ by exactly one content word, that word must be a known synonym:
    one swapped word ("prime" for "even", "sort" for "shuffle") is how near-duplicates differ."""
    content_a = {_stem(w) for w in a if w not in STOPWORDS}
    content_b = {_stem(w) for w in b if w not in STOPWORDS}
    only_a, only_b = content_a - content_b, content_b - content_a
    if not (len(only_a) <= 1 and len(only_b) <= 1 and (only_a or only_b)):
        return True
    return bool(only_a and only_b) and _synonyms(next(iter(only_a)), next(iter(only_b)))


def _on_words(check: Callable[[list[str], list[str]], bool]) -> Callable[[str, str], bool]:
    return lambda a, b: check(tokens(a), tokens(b))


def _key_terms(a: str, b: str) -> bool:
    return key_terms_match(tokens(a), tokens(b), a, b)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    check: Callable[[str, str], bool]


ALL_RULES: tuple[Rule, ...] = (
    Rule("numbers differ", _on_words(numbers_match)),
    Rule("negation differs", _on_words(negations_match)),
    Rule("direction reversed", _on_words(directions_match)),
    Rule("output format or constraint differs", _on_words(formats_match)),
    Rule("opposite terms", _on_words(antonyms_match)),
    Rule("named entities, units or languages differ", _key_terms),
    Rule("one content word swapped", _on_words(substitution_is_synonym)),
)
RULES = {rule.name: rule for rule in ALL_RULES}
# The rules that still add precision on the tuning split, on top of the cross-encoder
# (measured by `python -m loadtest.semantic_eval --rules`; docs/caching.md).
KEPT_RULES: tuple[Rule, ...] = (
    RULES["named entities, units or languages differ"],
    RULES["one content word swapped"],
)


def compatible(a: str, b: str, rules: tuple[Rule, ...] = ALL_RULES) -> tuple[bool, str]:
    """Whether ``rules`` let ``b``'s answer serve ``a``; the second item names the refusing rule."""
    if not covered_language(a) or not covered_language(b):
        return False, "language not covered by the embedder"
    for rule in rules:
        if not rule.check(a, b):
            return False, rule.name
    return True, ""
