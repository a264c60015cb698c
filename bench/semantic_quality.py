"""Precision and recall of the semantic cache on the labelled pairs, per category, at the default threshold.

Embeds tests/data/semantic_pairs.jsonl with the built-in embedder (needs the `semantic`
extra), then prints, at the default threshold of `SemanticConfig`, recall per positive
category (paraphrase, typo, reorder), false hits and precision per near-miss category, and
the same with the precision guard off; then a sweep of thresholds. Run:
    python bench/semantic_quality.py [--misses]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.cache.semantic_config import SemanticConfig
from proxy.embed.local import LocalEmbedder, available
from tests.data.semantic_scoring import Report, load_pairs, report, score_pairs


def show(result: Report, title: str) -> None:
    print(f"{title}: threshold {result.threshold:.2f}, precision {result.precision:.3f}, recall {result.recall:.3f}")
    for category in result.positive_categories():
        hits, total = result.hits[category], result.totals[category]
        print(f"  {category:<17} recall    {hits:3}/{total:<3} {result.category_recall(category):.3f}")
    for category in result.negative_categories():
        hits, total = result.hits[category], result.totals[category]
        print(f"  {category:<17} false hits {hits:2}/{total:<3} precision {result.category_precision(category):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list the pairs judged wrongly at the default")
    args = parser.parse_args()
    if (missing := available()) is not None:
        sys.exit(f"the built-in embedder cannot run: {missing}")
    pairs = load_pairs()
    embedder = LocalEmbedder()
    scored = score_pairs(pairs, embedder.embed_now)
    threshold = SemanticConfig().threshold
    print(f"{len(pairs)} labelled pairs, embedder {embedder.name}")
    show(report(scored, threshold), "with the guard")
    show(report(scored, threshold, guard=False), "similarity alone")
    print("sweep (with the guard): threshold precision recall min-category-recall")
    for step in range(70, 100, 2):
        result = report(scored, step / 100)
        worst = min(result.category_recall(c) for c in result.positive_categories())
        print(f"  {step / 100:.2f} {result.precision:.3f} {result.recall:.3f} {worst:.3f}")
    if args.misses:
        result = report(scored, threshold)
        for s in scored:
            hit = s.similarity >= threshold and s.guard
            if hit != s.pair.label:
                print(f"  {s.pair.category:<17} sim {s.similarity:.3f} guard {s.guard}: {s.pair.a!r} / {s.pair.b!r}")


if __name__ == "__main__":
    main()
