"""The precision guard: two prompts may share an answer only if the facts they ask about agree.

Embedding similarity cannot tell "flights from Paris to London" from "from London to Paris",
nor "is X safe" from "is X not safe": sentence embeddings score such pairs above 0.95. A
wrong cached answer is worse than a miss, so a candidate above the similarity threshold is
served only when, in both prompts, these agree:

- negation: how many negation words each has (not, no, never, without, n't ...);
- numbers (number words read as digits), per role and in order;
- units and currencies, per role and in order;
- dates: months, weekdays, relative days ("tomorrow", "next week"), per role and in order;
- named entities (capitalised or mixed-case words, acronyms, names with digits, known places
  even in lower case), per role and in order, the names being found in either prompt and then
  looked up in both case-insensitively ("Python" in one finds "python" in the other);
- opposites: one prompt saying "encrypt" and the other "decrypt" (proxy/cache/semantic_lexicon.py).

A fact's role is the preposition before it (from, to, than, in ...), so a swap of "from A to B"
is caught even when the words are otherwise the same, while "In Rust, how do I parse JSON?" and
"How do I parse JSON in Rust?" still agree. Facts of one kind with the same role must come in
the same order: "Why did Apple sue Samsung?" never matches "Why did Samsung sue Apple?".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.cache.semantic_lexicon import (
    AFTER_NUMBER_ONLY,
    AMBIGUOUS_MONTHS,
    DATE_MODIFIERS,
    DATE_WORDS,
    MONTHS,
    NEGATIONS,
    NUMBER_WORDS,
    OPPOSITES,
    PERIODS,
    PLACES,
    UNITS,
)

# Words, numbers with their separators (3.5, 1,000, 2024-01-15, 12/05, 0x1f, 3pm), units with a slash, symbols.
_TOKEN = re.compile(
    r"\d+(?:,\d{3})+(?:\.\d+)?|[A-Za-z0-9]+(?:'[A-Za-z]+)?(?:[-./:+#][A-Za-z0-9]+)*[+#]*|[%$€£¥]|[.!?;:]"
)
# Prepositions that give the fact after them a direction, by the role they give it: "from Paris" and
# "to Paris" disagree. Others (in, with, using) give none, so "in Python" and "a Python list" agree;
# facts without a role must then come in the same order, which keeps "in Tokyo when it is noon in
# Sydney" apart from its swap at the cost of missing some reordered clauses.
ROLES = {
    **dict.fromkeys(("from", "out"), "source"),
    **dict.fromkeys(("to", "into", "onto", "towards", "toward"), "target"),
    **dict.fromkeys(("than", "vs", "versus", "against", "over"), "compared"),
    "before": "before",
    "after": "after",
    "between": "between",
}
_SKIPPED_BEFORE = frozenset(
    ("the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these", "those", "some")
)
_SENTENCE_END = frozenset(".!?;:")


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # as written, apostrophe suffix ('s) removed
    lower: str
    sentence_start: bool


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    start = True
    for match in _TOKEN.finditer(text.replace("\u2019", "'")):
        raw = match.group()
        if raw in _SENTENCE_END:
            start = True
            continue
        lower = raw.lower()
        if lower.endswith("n't"):
            lower = "not"
        elif lower.endswith("'s"):
            raw, lower = raw[:-2], lower[:-2]
        found.append(_Token(raw, lower, start))
        start = False
    return found


_NOT_NAMES = MONTHS | DATE_WORDS | frozenset(NUMBER_WORDS) | frozenset(UNITS) | NEGATIONS


def _is_number(lower: str) -> bool:
    return lower[0].isdigit() or lower in NUMBER_WORDS


def _number_value(lower: str) -> str:
    if lower in NUMBER_WORDS:
        return NUMBER_WORDS[lower]
    return lower.replace(",", "")


def _looks_like_name(token: _Token) -> bool:
    """A proper name by its shape alone: used to collect names, which are then looked up in both prompts."""
    text = token.text
    if not text[0].isalpha() or token.lower in NUMBER_WORDS or text == "I":
        return False
    if any(c.isdigit() for c in text):  # gpt-4o, S3, X1, Q2
        return True
    if len(text) >= 2 and text.isupper():  # SQL, TCP, AWS
        return True
    if any(c.isupper() for c in text[1:]) and not text.isupper():  # iPhone, GitHub, MacBook
        return True
    return text[0].isupper() and not token.sentence_start


def _role(tokens: list[_Token], index: int) -> str:
    """The preposition that governs the fact at `index`, looking back over articles and possessives."""
    i = index - 1
    while i >= 0 and tokens[i].lower in _SKIPPED_BEFORE:
        i -= 1
    return ROLES.get(tokens[i].lower, "") if i >= 0 else ""


def _names(tokens: list[_Token]) -> set[tuple[str, ...]]:
    """Runs of name-shaped tokens, lower-cased: "Google Drive" is one name, not two."""
    names: set[tuple[str, ...]] = set()
    run: list[str] = []
    for token in [*tokens, None]:
        if token is not None and _looks_like_name(token) and token.lower not in _NOT_NAMES:
            run.append(token.lower)
            continue
        if run:
            names.add(tuple(run))
            names.update((word,) for word in run)  # "Tesla" alone still matches "tesla" in the other prompt
            run = []
    return names


@dataclass(slots=True)
class Facts:
    """What a prompt asks about, as the guard compares it."""

    negations: int
    ordered: dict[tuple[str, str], list[str]]  # (kind, role) -> values in order of appearance
    words: frozenset[str]

    def opposite_of(self, other: Facts) -> bool:
        for sides in OPPOSITES:
            mine = [bool(side & self.words) for side in sides]
            theirs = [bool(side & other.words) for side in sides]
            if (
                mine != theirs
                and any(a and not b for a, b in zip(mine, theirs, strict=True))
                and any(b and not a for a, b in zip(mine, theirs, strict=True))
            ):
                return True
        return False


Phrases = dict[str, list[tuple[str, ...]]]  # first word -> the phrases it starts, longest first


def _phrases(phrases: Iterable[tuple[str, ...]]) -> Phrases:
    index: Phrases = {}
    for phrase in phrases:
        index.setdefault(phrase[0], []).append(phrase)
    for starting in index.values():
        starting.sort(key=len, reverse=True)
    return index


_PLACES = _phrases(tuple(place.split()) for place in PLACES)


def _phrase_at(lowers: list[str], index: int, phrases: Phrases) -> int:
    """How many words from `index` spell one of `phrases` (0 if none), the longest match first."""
    for phrase in phrases.get(lowers[index], ()):
        if tuple(lowers[index : index + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def extract(text: str) -> Facts:
    """The facts of one prompt alone (its own names)."""
    tokens = _tokens(text)
    return _facts(tokens, _phrases(_names(tokens)))


def _facts(tokens: list[_Token], names: Phrases) -> Facts:
    """The facts of one prompt; `names` are proper names found in either prompt of a pair."""
    lowers = [t.lower for t in tokens]
    ordered: dict[tuple[str, str], list[str]] = {}
    negations = 0

    def add(kind: str, index: int, value: str) -> None:
        ordered.setdefault((kind, _role(tokens, index)), []).append(value)

    i = 0
    while i < len(tokens):
        token = tokens[i]
        lower = token.lower
        size = _phrase_at(lowers, i, names) or _phrase_at(lowers, i, _PLACES)
        if size:
            add("entity", i, " ".join(lowers[i : i + size]))
            i += size
            continue
        previous = tokens[i - 1].lower if i else ""
        following = tokens[i + 1].lower if i + 1 < len(tokens) else ""
        if lower in NEGATIONS:
            negations += 1
        elif _is_number(lower):
            add("number", i, _number_value(lower))
        elif lower in UNITS and (lower not in AFTER_NUMBER_ONLY or (previous and _is_number(previous))):
            add("unit", i, UNITS[lower])
        elif lower in MONTHS and (
            lower not in AMBIGUOUS_MONTHS
            or (previous and previous[0].isdigit())
            or (following and following[0].isdigit())
            or (token.text[0].isupper() and not token.sentence_start)
        ):
            add("date", i, lower[:3])
        elif lower in DATE_MODIFIERS and following in PERIODS:
            add("date", i, f"{lower} {following}")
            i += 1
        elif lower in DATE_WORDS:
            add("date", i, lower)
        i += 1
    return Facts(negations, ordered, frozenset(t.lower for t in tokens))


def agree(a: str, b: str) -> bool:
    """Whether prompts `a` and `b` ask about the same facts (the guard's verdict on a similar pair)."""
    tokens_a, tokens_b = _tokens(a), _tokens(b)
    names = _phrases(_names(tokens_a) | _names(tokens_b))
    facts_a, facts_b = _facts(tokens_a, names), _facts(tokens_b, names)
    if facts_a.negations != facts_b.negations:
        return False
    if facts_a.ordered != facts_b.ordered:
        return False
    return not facts_a.opposite_of(facts_b)


def fingerprint(text: str) -> Counter[str]:
    """The facts of one prompt as a multiset, for tests and the quality report's explanations."""
    facts = extract(text)
    found: Counter[str] = Counter({"negation": facts.negations} if facts.negations else {})
    for (kind, role), values in facts.ordered.items():
        found.update(f"{kind}:{role}:{value}" for value in values)
    return found
