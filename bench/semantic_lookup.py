"""Semantic cache costs: lookup latency at 100,000 entries, and the built-in embedder's cost per request.

Fills a `VectorIndex` with 100,000 random unit vectors of the built-in model's 384 dimensions,
all in one partition (the worst case: one scope, model and system prompt) and spread over 1,000
partitions, then times `scores` + `confirm` (the search `SemanticIndex.find` runs after
embedding). Then loads the built-in embedder (time and resident memory it adds) and times
embeddings of prompts of several lengths, wall and CPU per request, single-threaded as the
proxy runs it. numpy's BLAS may use every core for the matrix product; the figures say which.
Run:
    python bench/semantic_lookup.py [--entries N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.cache.semantic_config import SemanticConfig
from proxy.cache.semantic_index import VectorIndex
from proxy.embed.local import LocalEmbedder, available

DIM = 384
THRESHOLD = SemanticConfig().threshold


def rss_mb() -> float:
    """Resident memory now (Linux), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    return f"p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, mean {statistics.fmean(samples) * 1000:.3f} ms"


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def corpus(entries: int, topics: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors in `topics` clusters (about 0.5 similarity within one, like prompts on one subject); 0: uniform."""
    noise = rng.standard_normal((entries, DIM), dtype=np.float32)
    if not topics:
        return unit_rows(noise)
    centres = unit_rows(rng.standard_normal((topics, DIM), dtype=np.float32))
    return unit_rows(centres[rng.integers(0, topics, entries)] + noise / np.sqrt(DIM))


def lookups(entries: int, partitions: int, topics: int, rng: np.random.Generator) -> None:
    vectors = corpus(entries, topics, rng)
    index = VectorIndex(entries)
    started = time.perf_counter()
    for i in range(entries):
        index.add(f"part-{i % partitions}", f"key-{i}", "text", vectors[i])
    filled = time.perf_counter() - started
    picked = rng.integers(0, entries, 200)
    queries = unit_rows(vectors[picked] + rng.standard_normal((200, DIM), dtype=np.float32) * 0.02)
    samples, agree = [], 0
    for n, query in enumerate(queries):
        partition = f"part-{picked[n] % partitions}"
        t0 = time.perf_counter()
        snapshot = index.snapshot(partition)
        found = VectorIndex.scores(snapshot, query, THRESHOLD, 4) if snapshot is not None else []
        best = index.confirm(partition, found, query, THRESHOLD)
        samples.append(time.perf_counter() - t0)
        exact = snapshot.vectors @ query if snapshot is not None else np.zeros(1)
        agree += (
            bool(best)
            and exact.max() >= THRESHOLD
            and index.confirm(partition, [int(exact.argmax())], query, THRESHOLD)[0].key == best[0].key
        )
    shape = f"{topics} topics" if topics else "uniform"
    print(
        f"  {entries:,} entries ({shape}) in {partitions:,} partition(s), {entries // partitions:,} searched: "
        f"{percentiles(samples)}; same best entry as the exact product: {agree}/200; filled in {filled:.1f} s"
    )


def embedder_cost() -> None:
    if (missing := available()) is not None:
        print(f"built-in embedder: not measured ({missing})")
        return
    before = rss_mb()
    t0 = time.perf_counter()
    embedder = LocalEmbedder()
    embedder.embed_now("warm up")
    loaded = time.perf_counter() - t0
    print(f"built-in embedder {embedder.name}: loaded in {loaded:.2f} s, +{rss_mb() - before:.0f} MB resident")
    prompts = {
        "short (8 words)": "How do I undo the last git commit?",
        "medium (60 words)": " ".join(["Explain how the retry budget interacts with the circuit breaker."] * 6),
        "long (250 tokens, the window)": " ".join(["Summarise the incident report and list the follow-ups."] * 19),
    }
    for label, text in prompts.items():
        wall, cpu = [], []
        for _ in range(100):
            w0, c0 = time.perf_counter(), time.process_time()
            embedder.embed_now(text)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        print(f"  {label}: wall {percentiles(wall)}; CPU mean {statistics.fmean(cpu) * 1000:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    embedder_cost()  # first: its memory figure is a peak
    print(f"lookup (search after embedding), {DIM} dimensions, threshold {THRESHOLD}:")
    lookups(args.entries, 1, 0, rng)
    lookups(args.entries, 1, 100, rng)
    lookups(args.entries, 1_000, 100, rng)
    print(f"  index memory: {DIM * 4 * args.entries / 1e6:.0f} MB of vectors for {args.entries:,} entries")


if __name__ == "__main__":
    main()
