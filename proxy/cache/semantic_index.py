"""The in-process vector index of the semantic cache: one numpy matrix per partition, LRU-bounded overall.

Vectors are unit length, so cosine similarity is one matrix-vector product over a partition's
rows. That product reads 1.5 KB per entry (384 float32 dimensions): at 100,000 entries in one
partition, 150 MB per lookup, tens of milliseconds on a busy machine's memory bus. So a large
partition is searched in two steps: a 256-bit sign sketch of each vector under a fixed random
rotation (SimHash, 32 bytes per entry) keeps the rows whose Hamming distance to the query's
sketch can belong to a similarity at or above the threshold (with 5 standard deviations to
spare), and only those rows get the exact product. bench/semantic_lookup.py measures both.

Rows are kept dense: removing an entry moves the partition's last row into its place. A
partition's arrays double when full and halve when a quarter used.

`scores` may run in a thread while the loop adds or removes entries: it reads arrays that stay
valid, and `confirm` re-checks the rows it found on the loop before they are used.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from proxy.embed.vector import Vector

MIN_ROWS = 16
SKETCH_BITS = 256
SKETCH_FROM_ROWS = 2048  # smaller partitions are read whole: the exact product is as fast as the sketch
SKETCH_MAX_KEPT = 4096  # a sketch pass keeping more rows than this keeps the nearest of them
_WORDS = SKETCH_BITS // 64


@dataclass(slots=True)
class Candidate:
    key: str
    text: str
    similarity: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A partition's rows as they were when taken: safe to read from a thread."""

    vectors: npt.NDArray[np.float32]
    sketches: npt.NDArray[np.uint64]  # (words, rows): one contiguous array per 64 bits


@cache
def _planes(dim: int) -> npt.NDArray[np.float32]:
    """The fixed random hyperplanes of the sketch (seeded: the same in every process)."""
    return np.random.default_rng(20_250_601).standard_normal((SKETCH_BITS, dim), dtype=np.float32)


def sketch(vector: Vector) -> npt.NDArray[np.uint64]:
    """The vector's 256 sign bits under the fixed rotation, as 4 words."""
    bits = np.packbits((_planes(vector.shape[0]) @ vector) > 0)
    return bits.view(np.uint64)


@cache
def max_distance(threshold: float) -> int:
    """The most differing sketch bits a pair at `threshold` similarity shows, 5 standard deviations out."""
    p = math.acos(max(-1.0, min(1.0, threshold))) / math.pi  # chance that one random hyperplane splits the pair
    return math.ceil(SKETCH_BITS * p + 5 * math.sqrt(SKETCH_BITS * p * (1 - p))) + 1


class _Partition:
    __slots__ = ("keys", "matrix", "rows", "sketches", "texts")

    def __init__(self, dim: int) -> None:
        self.matrix: npt.NDArray[np.float32] = np.empty((MIN_ROWS, dim), dtype=np.float32)
        self.sketches: npt.NDArray[np.uint64] = np.empty((_WORDS, MIN_ROWS), dtype=np.uint64)
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, key: str, text: str, vector: Vector) -> None:
        row = len(self.keys)
        if row == self.matrix.shape[0]:
            self._resize(row * 2)  # a search in a thread keeps reading the old arrays, which stay whole
        self.matrix[row] = vector
        self.sketches[:, row] = sketch(vector)
        self.keys.append(key)
        self.texts.append(text)
        self.rows[key] = row

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.matrix[row] = self.matrix[last]
            self.sketches[:, row] = self.sketches[:, last]
            self.keys[row], self.texts[row] = moved, self.texts[last]
            self.rows[moved] = row
        self.keys.pop()
        self.texts.pop()
        size = self.matrix.shape[0]
        if size > MIN_ROWS and len(self.keys) <= size // 4:
            self._resize(size // 2)

    def _resize(self, rows: int) -> None:
        used = len(self.keys)
        matrix = np.empty((rows, self.matrix.shape[1]), dtype=np.float32)
        matrix[:used] = self.matrix[:used]
        sketches = np.empty((_WORDS, rows), dtype=np.uint64)
        sketches[:, :used] = self.sketches[:, :used]
        self.matrix, self.sketches = matrix, sketches


class VectorIndex:
    """Entries (key, text, vector) by partition; at most `max_entries` in all, least recently used evicted."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._partitions: dict[str, _Partition] = {}
        self._lru: OrderedDict[str, str] = OrderedDict()  # key -> partition

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: str) -> bool:
        return key in self._lru

    def size(self, partition: str) -> int:
        found = self._partitions.get(partition)
        return len(found.keys) if found is not None else 0

    def add(self, partition: str, key: str, text: str, vector: Vector) -> None:
        """Index `key` (replacing an entry of the same key); a vector of another dimension is refused."""
        self.remove(key)
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(vector.shape[0])
        elif part.matrix.shape[1] != vector.shape[0]:
            return
        part.add(key, text, vector)
        self._lru[key] = partition
        while len(self._lru) > self.max_entries:
            self.remove(next(iter(self._lru)))

    def remove(self, key: str) -> None:
        partition = self._lru.pop(key, None)
        if partition is None:
            return
        part = self._partitions[partition]
        part.remove(key)
        if not part.keys:
            del self._partitions[partition]

    def touch(self, key: str) -> None:
        if key in self._lru:
            self._lru.move_to_end(key)

    def snapshot(self, partition: str) -> Snapshot | None:
        part = self._partitions.get(partition)
        if part is None:
            return None
        used = len(part.keys)
        return Snapshot(part.matrix[:used], part.sketches[:, :used])

    @staticmethod
    def scores(snapshot: Snapshot, vector: Vector, threshold: float, limit: int) -> list[int]:
        """Rows at or above `threshold`, most similar first, at most `limit`."""
        vectors = snapshot.vectors
        if vectors.shape[1] != vector.shape[0]:
            return []
        if vectors.shape[0] < SKETCH_FROM_ROWS:
            rows = None
            similarities = vectors @ vector
        else:
            rows = _near_sketches(snapshot.sketches, sketch(vector), max_distance(threshold))
            similarities = vectors[rows] @ vector
        above = np.flatnonzero(similarities >= threshold)
        if above.size > limit:
            above = above[np.argpartition(-similarities[above], limit - 1)[:limit]]
        best = above[np.argsort(-similarities[above], kind="stable")]
        return [int(i) for i in (best if rows is None else rows[best])]

    def confirm(self, partition: str, found: list[int], vector: Vector, threshold: float) -> list[Candidate]:
        """The rows `scores` found, as entries now: rows that moved or went since are scored again or dropped."""
        part = self._partitions.get(partition)
        if part is None:
            return []
        candidates = []
        for row in found:
            if row < len(part.keys):
                similarity = float(part.matrix[row] @ vector)
                if similarity >= threshold:
                    candidates.append(Candidate(part.keys[row], part.texts[row], similarity))
        candidates.sort(key=lambda c: -c.similarity)
        return candidates


def _near_sketches(
    sketches: npt.NDArray[np.uint64], query: npt.NDArray[np.uint64], within: int
) -> npt.NDArray[np.intp]:
    """Rows whose sketch differs from `query` in at most `within` bits (the nearest SKETCH_MAX_KEPT if more)."""
    rows = sketches.shape[1]
    differing = np.empty(rows, dtype=np.uint64)
    distance = np.zeros(rows, dtype=np.uint16)
    counted = np.empty(rows, dtype=np.uint8)
    for word in range(_WORDS):
        np.bitwise_xor(sketches[word], query[word], out=differing)
        np.bitwise_count(differing, out=counted, casting="unsafe")
        distance += counted
    kept = np.flatnonzero(distance <= within)
    if kept.size > SKETCH_MAX_KEPT:
        kept = kept[np.argpartition(distance[kept], SKETCH_MAX_KEPT - 1)[:SKETCH_MAX_KEPT]]
    return kept
