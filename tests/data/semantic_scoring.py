"""Precision and recall of the semantic cache's match rule on the labelled pairs (tests/data/semantic_pairs.jsonl).

A pair is served as a hit when its similarity reaches the threshold and the precision guard
agrees, which is what `SemanticIndex.find` does. Positive categories (paraphrase, typo,
reorder) report recall; each near-miss category reports its false hits and the precision the
cache would have if that were the only kind of near-miss it met. Shared by
tests/unit/test_semantic_quality.py and bench/semantic_quality.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proxy.cache.semantic_guard import agree

PAIRS = Path(__file__).with_name("semantic_pairs.jsonl")


@dataclass(frozen=True, slots=True)
class Pair:
    category: str
    label: bool
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class Scored:
    pair: Pair
    similarity: float
    guard: bool


@dataclass(slots=True)
class Report:
    threshold: float
    scored: list[Scored]
    hits: dict[str, int] = field(default_factory=dict)  # per category
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def true_hits(self) -> int:
        return sum(n for c, n in self.hits.items() if self._positive(c))

    @property
    def false_hits(self) -> int:
        return sum(n for c, n in self.hits.items() if not self._positive(c))

    @property
    def precision(self) -> float:
        served = self.true_hits + self.false_hits
        return self.true_hits / served if served else 1.0

    @property
    def recall(self) -> float:
        positives = sum(n for c, n in self.totals.items() if self._positive(c))
        return self.true_hits / positives

    def category_recall(self, category: str) -> float:
        return self.hits[category] / self.totals[category]

    def category_precision(self, category: str) -> float:
        """Precision if `category` were the only kind of near-miss: all true hits against its false ones."""
        served = self.true_hits + self.hits[category]
        return self.true_hits / served if served else 1.0

    def positive_categories(self) -> list[str]:
        return sorted(c for c in self.totals if self._positive(c))

    def negative_categories(self) -> list[str]:
        return sorted(c for c in self.totals if not self._positive(c))

    def _positive(self, category: str) -> bool:
        return next(s.pair.label for s in self.scored if s.pair.category == category)


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def score_pairs(pairs: Sequence[Pair], embed: Callable[[str], np.ndarray | None]) -> list[Scored]:
    """Embed every text once and score each pair by cosine similarity (vectors are unit length)."""
    vectors: dict[str, np.ndarray] = {}
    for text in {t for p in pairs for t in (p.a, p.b)}:
        vector = embed(text)
        assert vector is not None, text
        vectors[text] = vector
    return [Scored(p, float(vectors[p.a] @ vectors[p.b]), agree(p.a, p.b)) for p in pairs]


def report(scored: Sequence[Scored], threshold: float, guard: bool = True) -> Report:
    result = Report(threshold, list(scored))
    for s in scored:
        category = s.pair.category
        result.totals[category] = result.totals.get(category, 0) + 1
        hit = s.similarity >= threshold and (s.guard or not guard)
        result.hits[category] = result.hits.get(category, 0) + int(hit)
    return result
