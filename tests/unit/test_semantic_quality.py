"""The semantic cache's default threshold on the labelled pairs: precision first, recall enough.

At the default threshold of `SemanticConfig`, with the guard and the built-in embedder:
precision at least 0.98 overall and against each kind of near-miss alone, recall at least
0.5 in each positive category (bench/semantic_quality.py prints the figures).
"""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.cache.semantic_config import SemanticConfig
from proxy.embed.local import LocalEmbedder, available
from tests.data.semantic_scoring import load_pairs, report, score_pairs

NEAR_MISSES = {"negation", "swapped_entities", "number", "date", "unit", "city", "product", "entity", "wording"}
POSITIVES = {"paraphrase", "typo", "reorder"}


def test_the_labelled_set_covers_every_kind():
    pairs = load_pairs()
    counts = Counter(p.category for p in pairs)
    assert len(pairs) >= 300
    assert set(counts) == NEAR_MISSES | POSITIVES
    assert all(counts[c] >= 15 for c in counts)
    assert all(p.label == (p.category in POSITIVES) for p in pairs)
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)


@pytest.fixture(scope="module")
def scored():
    if available() is not None:
        pytest.skip("the `semantic` extra is not installed")
    return score_pairs(load_pairs(), LocalEmbedder().embed_now)


def test_precision_and_recall_at_the_default_threshold(scored):
    result = report(scored, SemanticConfig().threshold)
    assert result.precision >= 0.98
    for category in result.negative_categories():
        assert result.category_precision(category) >= 0.98, category
    for category in result.positive_categories():
        assert result.category_recall(category) >= 0.5, category


def test_the_guard_is_what_keeps_precision(scored):
    """Similarity alone at the same threshold serves many near-misses: the guard's work is measured, not assumed."""
    alone = report(scored, SemanticConfig().threshold, guard=False)
    assert alone.precision < 0.9
    assert alone.hits["negation"] > 10 and alone.hits["swapped_entities"] > 10
