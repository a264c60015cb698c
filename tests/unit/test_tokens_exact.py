"""The compact counter (proxy/accounting/bpe.py) against tiktoken itself: the same ids, the same counts.

tiktoken is built here from the same shipped files, so any difference is the algorithm's.
"""

from __future__ import annotations

import functools
import time
import tracemalloc
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.accounting import bpe, tokens

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("o200k_base", "cl100k_base")


@functools.cache
def reference(name: str) -> tiktoken.Encoding:
    spec = tokens.ENCODINGS[name]
    ranks = {token: rank for rank, token in enumerate(bpe.read_tokens(name, spec["sha256"]))}
    return tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens={})


def compact(name: str) -> bpe.Encoding:
    encoding = tokens.get_encoding(name)
    assert encoding is not None
    return encoding


def assert_same(name: str, text: str) -> None:
    expected = reference(name).encode_ordinary(text)
    assert compact(name).encode_ordinary(text) == expected
    assert compact(name).count(text) == len(expected)


ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'",
    "digits": "0123456789.,",
    "space": " \t\n\r\x0b\x0c\u00a0\u2003\u3000",
    "code": "{}()[];:=<>+-*/&|!?#@$%^~`\"'\\_.,",
    "cjk": "人工智能代理通过网关调用大型语言模型エージェントはプロキシ한국어텍스트",
    "emoji": "😀👍🏽🇫🇷👨‍👩‍👧❤️✨",
    "accents": "éèêëçàñöüßøåÉÇ\u0301\u0308",
}
text_parts = st.one_of(
    st.text(min_size=1, max_size=40),  # any code point, surrogates included
    *(st.text(st.sampled_from(alphabet), min_size=1, max_size=60) for alphabet in ALPHABETS.values()),
    st.text(st.sampled_from(ALPHABETS["latin"][:26]), min_size=100, max_size=400),  # long words: the heap merge
    st.sampled_from(["<|endoftext|>", "<|endofprompt|>", "'s", "'LL", "\r\n", "  \n", "1234567"]),
)
texts = st.lists(text_parts, max_size=12).map("".join)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_generated_text_counts_as_tiktoken_does(name, text):
    assert_same(name, text)


@pytest.mark.parametrize("name", NAMES)
def test_the_repositorys_own_files_count_as_tiktoken_does(name):
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "proxy").rglob("*.py"))]
    for path in files:
        assert_same(name, path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "text",
    [
        "ab" * 3000,  # one piece, every pair a token
        "a" * 5000,
        "人工智能" * 700,  # CJK without punctuation: one long piece
        " " * 4000 + "x",
        "=" * 3000,
        "x" * 129,  # just past the short-piece merge
        "\ud800 lone surrogate \udfff",
    ],
)
def test_long_and_odd_pieces_count_as_tiktoken_does(name, text):
    assert_same(name, text)


def test_the_piece_cache_stays_bounded_and_does_not_change_counts():
    encoding = compact("o200k_base")
    words = " ".join(f"w{n:05x}zq" for n in range(bpe.CACHE_PIECES + 500))
    first = encoding.count(words)
    assert len(encoding._counts) <= bpe.CACHE_PIECES
    assert encoding.count(words) == first == len(reference("o200k_base").encode_ordinary(words))


def test_a_hostile_word_costs_memory_linear_in_its_length_and_finishes():
    """One 256 KiB "word": tiktoken's rule rescans every pair after each merge (minutes in Python); the heap takes
    about half a second (bench/tokens.py measures 1 MiB). The CPU bound below only guards against the quadratic."""
    encoding = compact("o200k_base")
    word = "ab" * 32768
    tracemalloc.start()
    try:
        assert encoding.count(word) == len(word) // 4
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 128 * len(word)  # the heap, its linked list and the piece: about 75 bytes a byte
    started = time.process_time()
    assert encoding.count(word * 4) == len(word)
    assert time.process_time() - started < 30
