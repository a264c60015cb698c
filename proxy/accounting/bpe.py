"""Exact byte-pair encoding for token counts, in a fraction of tiktoken's memory.

tiktoken's core keeps three copies of an encoding's tokens in hash maps (46-51 MB of RSS for
o200k_base once built, 70 MB at the peak of building it): more than the rest of the proxy.
This keeps one: the tokens as a byte-sorted list of `bytes` with an `array` of their ranks,
looked up with `bisect` (10.2 MB of objects for o200k_base, 5.3 for cl100k_base; 14 and 8 MB of
RSS once loaded, at the peak too). Text is split into pieces with the encoding's own pattern
(the `regex` module, which tiktoken's reference implementation uses too); a piece that is a
token whole is one token (the common case, one lookup); any other piece is merged by
tiktoken's rule: the adjacent pair whose concatenation has the lowest rank merges first, the
leftmost of equals first, until no pair is a token (`_byte_pair_merge` in tiktoken's
src/lib.rs). Up to SHORT_PIECE bytes the merge runs over plain lists as tiktoken's does; it
rescans every pair after each merge, quadratic in the piece, so a longer piece goes through a
heap ordered by (rank, start), which picks the same pair (a part's start never moves when it
merges with its right neighbour, and a stale entry is recognised by its rank): a hostile piece
(a 1 Mi-character "word") costs O(n log n) and about 80 bytes of memory per byte while it is
merged. Counting runs in Python and holds the GIL: 3-4 times tiktoken's CPU per KB of prose,
more on CJK text (bench/tokens.py); the counts of recent short pieces are kept per encoding.

The result is the same token ids as tiktoken's `encode_ordinary`: tests/unit/test_tokens_exact.py
checks it on generated text and on the repository's files for both shipped encodings.
"""

from __future__ import annotations

import binascii
import hashlib
import lzma
import sys
from array import array
from bisect import bisect_left
from heapq import heapify, heappop, heappush
from importlib import resources
from itertools import pairwise

NOT_A_TOKEN = 0xFFFF_FFFF  # above every rank, so min() over ranks finds the next merge
SHORT_PIECE = 128  # bytes: pieces up to this long merge over plain lists, longer ones through a heap
CACHE_PIECES = 8192  # counts of recent pieces (up to CACHED_CHARS each) kept per encoding
CACHED_CHARS = 32


class RankTable:
    """Token bytes -> rank (the token id), held as sorted bytes and an array of ranks."""

    __slots__ = ("pairs", "ranks", "size", "tokens")

    def __init__(self, tokens_by_rank: list[bytes]) -> None:
        self.tokens = sorted(tokens_by_rank)  # the same bytes objects, no copies
        self.size = len(self.tokens)
        self.ranks = array("I", bytes(4 * self.size))
        for rank, token in enumerate(tokens_by_rank):  # not a sort of ranks: no list of 200,000 ints at the peak
            self.ranks[bisect_left(self.tokens, token)] = rank
        # Every merge starts from byte pairs: their ranks by (first << 8 | second), 256 KiB.
        self.pairs = array("I", [NOT_A_TOKEN]) * 65536
        for rank, token in enumerate(tokens_by_rank):
            if len(token) == 2:
                self.pairs[token[0] << 8 | token[1]] = rank

    def __len__(self) -> int:
        return self.size

    def rank(self, piece: bytes) -> int:
        """The token's rank, or NOT_A_TOKEN."""
        i = bisect_left(self.tokens, piece)
        return self.ranks[i] if i < self.size and self.tokens[i] == piece else NOT_A_TOKEN

    def nbytes(self) -> int:
        """Bytes held: the list, its token objects, the ranks and the pair ranks."""
        return (
            sys.getsizeof(self.tokens)
            + sum(map(sys.getsizeof, self.tokens))
            + self.ranks.buffer_info()[1] * self.ranks.itemsize
            + self.pairs.buffer_info()[1] * self.pairs.itemsize
        )


def merge(table: RankTable, piece: bytes) -> list[int]:
    """Where the parts of `piece` (two bytes or more) start once merged by tiktoken's rule, ascending."""
    if len(piece) > SHORT_PIECE:
        nxt = _merge_long(table, piece)
        starts = []
        i = 0
        while i < len(piece):
            starts.append(i)
            i = nxt[i]
        return starts
    rank = table.rank
    starts = list(range(len(piece) + 1))  # part k is piece[starts[k]:starts[k + 1]]
    pairs = table.pairs
    ranks = [pairs[a << 8 | b] for a, b in pairwise(piece)]  # ranks[k]: parts k and k + 1 joined
    while ranks:
        lowest = min(ranks)
        if lowest == NOT_A_TOKEN:
            break
        i = ranks.index(lowest)  # the leftmost of equals
        del starts[i + 1]
        del ranks[i]
        if i < len(ranks):
            ranks[i] = rank(piece[starts[i] : starts[i + 2]])
        if i > 0:
            ranks[i - 1] = rank(piece[starts[i - 1] : starts[i + 1]])
    starts.pop()
    return starts


def count_parts(table: RankTable, piece: bytes) -> int:
    """len(merge(table, piece)), without the list for a long piece."""
    if len(piece) <= SHORT_PIECE:
        return len(merge(table, piece))
    nxt = _merge_long(table, piece)
    parts = 0
    i = 0
    while i < len(piece):
        parts += 1
        i = nxt[i]
    return parts


def _merge_long(table: RankTable, piece: bytes) -> array[int]:
    """The same merges in O(n log n): a heap of (rank, start), stale entries skipped.

    Returns the parts as a linked list: nxt[i] is where the part starting at i ends.
    """
    n = len(piece)
    rank = table.rank
    pairs = table.pairs
    nxt = array("i", range(1, n + 1))
    prv = array("i", range(-1, n - 1))
    # pair[i]: rank of the part at i joined with the next, NOT_A_TOKEN if none or if i no longer starts a part.
    pair = array("I", (pairs[a << 8 | b] for a, b in pairwise(piece)))
    pair.append(NOT_A_TOKEN)
    heap = [r << 32 | i for i, r in enumerate(pair) if r != NOT_A_TOKEN]  # one int per entry: (rank, start)
    heapify(heap)
    while heap:
        entry = heappop(heap)
        r, i = entry >> 32, entry & 0xFFFF_FFFF
        if pair[i] != r:  # stale: i merged into its left neighbour, or its right neighbour grew
            continue
        j = nxt[i]
        k = nxt[j]  # the merged part spans [i, k)
        nxt[i] = k
        pair[j] = NOT_A_TOKEN
        if k < n:
            prv[k] = i
            r = pair[i] = rank(piece[i : nxt[k]])
            if r != NOT_A_TOKEN:
                heappush(heap, r << 32 | i)
        else:
            pair[i] = NOT_A_TOKEN
        p = prv[i]
        if p >= 0:
            r = pair[p] = rank(piece[p:k])
            if r != NOT_A_TOKEN:
                heappush(heap, r << 32 | p)
    return nxt


class Encoding:
    """One encoding: its split pattern and rank table. Thread-safe (the cache's dict operations are atomic)."""

    def __init__(self, name: str, pat_str: str, table: RankTable) -> None:
        import regex  # here: a proxy that never counts does not import it

        self.name = name
        self._split = regex.compile(pat_str).findall
        self._table = table
        self._counts: dict[str, int] = {}  # piece -> tokens, for recent short pieces

    def __len__(self) -> int:
        return len(self._table)

    def _pieces(self, text: str) -> list[str]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: replaced as tiktoken's encode_ordinary does before it splits.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return self._split(text)

    def count(self, text: str) -> int:
        """len(encode_ordinary(text)), without building the list of ids."""
        table = self._table
        tokens, size = table.tokens, table.size
        counts = self._counts
        known = counts.get
        total = 0
        for piece in self._pieces(text):
            n = known(piece)
            if n is None:
                data = piece.encode("utf-8")
                i = bisect_left(tokens, data)
                n = 1 if i < size and tokens[i] == data else count_parts(table, data)
                if len(piece) <= CACHED_CHARS:
                    if len(counts) >= CACHE_PIECES:
                        counts.clear()
                    counts[piece] = n
            total += n
        return total

    def encode_ordinary(self, text: str) -> list[int]:
        """The token ids, special-token strings taken as plain text (tiktoken's `encode_ordinary`)."""
        rank = self._table.rank
        ids: list[int] = []
        for piece in self._pieces(text):
            data = piece.encode("utf-8")
            whole = rank(data)
            if whole != NOT_A_TOKEN:
                ids.append(whole)
                continue
            starts = merge(self._table, data)
            ids.extend(rank(data[a:b]) for a, b in zip(starts, [*starts[1:], len(data)], strict=True))
        return ids


def read_tokens(name: str, sha256: str) -> list[bytes]:
    """The tokens of proxy/data/<name>.tiktoken.xz in rank order, after checking the file's published hash."""
    digest = hashlib.sha256()
    tokens: list[bytes] = []
    decode = binascii.a2b_base64
    with lzma.open(resources.files("proxy").joinpath("data", f"{name}.tiktoken.xz").open("rb")) as lines:
        for number, line in enumerate(lines):  # line by line: neither the file nor a list of lines at once
            digest.update(line)
            token, rank = line.split()
            if int(rank) != number:  # the published files list ranks 0, 1, 2, ... in order
                raise ValueError(f"{name}.tiktoken: rank {int(rank)} on line {number + 1}")
            tokens.append(decode(token))
    if digest.hexdigest() != sha256:
        raise ValueError(f"{name}.tiktoken does not match the published hash")
    return tokens


def load(name: str, pat_str: str, sha256: str) -> Encoding:
    return Encoding(name, pat_str, RankTable(read_tokens(name, sha256)))
