"""What a rewritten or estimated stream copies: the rewrite leaves the upstream event's own parse as it was
(other stages read it), and the estimate counts its text in pieces to the same total."""

from __future__ import annotations

import copy
from itertools import accumulate

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.accounting.tokens import count_tokens
from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.events import StreamRewriter
from proxy.stages.usage import _chunks
from tests.fixtures.hostile_upstream import EMAIL, PROSE


def _chunk(delta: dict, index: int = 0) -> SSEEvent:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return SSEEvent.from_json({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})


def test_a_rewritten_event_leaves_the_upstream_events_parse_as_it_was():
    compiled = CompiledRedaction.from_config(RedactionConfig(output=["email"]))
    rewriter = StreamRewriter(PROTOCOLS["openai"], ExchangeRedaction(compiled, "test"))
    events = [
        _chunk({"role": "assistant", "content": f"Write to {EMAIL} "}),
        _chunk({"content": "today, or to "}),
        _chunk({"content": f"{EMAIL} now."}),
    ]
    parses = [copy.deepcopy(event.json()) for event in events]
    out = [*rewriter.event(events[0]), *rewriter.event(events[1]), *rewriter.event(events[2]), *rewriter.end()]
    text = "".join(orjson.loads(e.raw[6:-2])["choices"][0]["delta"].get("content", "") for e in out)
    assert text == "Write to [EMAIL] today, or to [EMAIL] now."
    assert [event.json() for event in events] == parses  # no stage sees the rewrite in the upstream's event
    assert all(event.event is None for event in out)


def test_an_event_name_is_read_with_or_without_a_data_line_first():
    assert SSEEvent(b'data: {"a": 1}\n\n').event is None
    assert SSEEvent(b'event: delta\ndata: {"a": 1}\n\n').event == "delta"
    named_last = SSEEvent(b'data: {"a": 1}\nevent: delta\n\n')
    assert named_last.event == "delta" and named_last.data == '{"a": 1}'


def test_the_estimate_text_counted_in_pieces_is_the_whole_texts_count():
    text = (PROSE * (300_000 // len(PROSE) + 1))[:300_000]
    pieces = list(_chunks(text, 64 * 1024))
    assert "".join(pieces) == text and len(pieces) == 5 and all(len(piece) <= 64 * 1024 for piece in pieces)
    assert sum(count_tokens(piece, "m") for piece in pieces) == count_tokens(text, "m")
    unbroken = "x" * 200_000  # no space to cut before: cut at the size
    assert [len(piece) for piece in _chunks(unbroken, 64 * 1024)] == [65536, 65536, 65536, 3392]


def _cuts_before_a_space_after_a_word(text: str, pieces: list[str]) -> bool:
    cuts = list(accumulate(len(piece) for piece in pieces))[:-1]
    return all(text[cut] == " " and not text[cut - 1].isspace() for cut in cuts)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["word", " ", "  ", "\n", "\t", "42", "'s", "?!", "Über", "日本", "😀", " \n "]), max_size=80
    ),
    st.integers(min_value=4, max_value=40),
    st.sampled_from(["m", "gpt-4"]),  # o200k_base and cl100k_base
)
def test_the_estimate_text_cut_before_a_space_after_a_word_counts_as_the_whole(parts, size, model):
    text = "".join(parts)
    pieces = list(_chunks(text, size))
    assert "".join(pieces) == text and all(len(piece) <= size for piece in pieces)
    if _cuts_before_a_space_after_a_word(text, pieces):
        assert sum(count_tokens(piece, model) for piece in pieces) == count_tokens(text, model)


def test_the_estimate_text_is_never_cut_between_two_spaces():
    text = "ab  cd \n  ef   " * 40
    pieces = list(_chunks(text, 16))  # a space after a word at most 6 characters apart: one in each window
    assert len(pieces) > 30 and _cuts_before_a_space_after_a_word(text, pieces)
    for model in ("m", "gpt-4"):
        assert sum(count_tokens(piece, model) for piece in pieces) == count_tokens(text, model)
