"""The in-process vector index of the semantic cache: one numpy matrix per partition, LRU-bounded overall.

Vectors are unit length, so cosine similarity is one matrix-vector product over a partition's
rows. Rows are kept dense: removing an entry moves the partition's last row into its place.
A partition's matrix doubles when full and halves when a quarter used, so memory follows the
entries (4 bytes per dimension per entry: 1.5 KB for the built-in 384-dimension model).

`scores` may run in a thread while the loop adds or removes entries: it only reads a matrix
that stays valid, and `confirm` re-checks the rows it found on the loop before they are used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxy.embed import Vector

MIN_ROWS = 16


@dataclass(slots=True)
class Candidate:
    key: str
    text: str
    similarity: float


class _Partition:
    __slots__ = ("keys", "matrix", "rows", "texts")

    def __init__(self, dim: int) -> None:
        self.matrix: npt.NDArray[np.float32] = np.empty((MIN_ROWS, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, key: str, text: str, vector: Vector) -> None:
        row = len(self.keys)
        if row == self.matrix.shape[0]:
            grown = np.empty((row * 2, self.matrix.shape[1]), dtype=np.float32)
            grown[:row] = self.matrix[:row]
            self.matrix = grown  # a search in a thread keeps reading the old matrix, which stays whole
        self.matrix[row] = vector
        self.keys.append(key)
        self.texts.append(text)
        self.rows[key] = row

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.matrix[row] = self.matrix[last]
            self.keys[row], self.texts[row] = moved, self.texts[last]
            self.rows[moved] = row
        self.keys.pop()
        self.texts.pop()
        size = self.matrix.shape[0]
        if size > MIN_ROWS and len(self.keys) <= size // 4:
            self.matrix = self.matrix[: size // 2].copy()


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

    def snapshot(self, partition: str) -> npt.NDArray[np.float32] | None:
        """The partition's rows as they are now, for `scores` (possibly in a thread)."""
        part = self._partitions.get(partition)
        if part is None or part.matrix.shape[1] == 0:
            return None
        return part.matrix[: len(part.keys)]

    @staticmethod
    def scores(rows: npt.NDArray[np.float32], vector: Vector, threshold: float, limit: int) -> list[int]:
        """Rows at or above `threshold`, most similar first, at most `limit`: one matrix-vector product."""
        if rows.shape[1] != vector.shape[0]:
            return []
        similarities = rows @ vector
        above = np.flatnonzero(similarities >= threshold)
        if above.size > limit:
            above = above[np.argpartition(-similarities[above], limit - 1)[:limit]]
        return [int(i) for i in above[np.argsort(-similarities[above], kind="stable")]]

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
