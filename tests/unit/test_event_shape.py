"""A stream's usual delta read from its bytes (proxy/safety/event_shape.py) reads exactly what a parse reads:
the same text, the same slot, nothing closed; anything else is left to the parse, and the events sent do not
change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEEvent
from proxy.safety.config import RedactionConfig
from proxy.safety.content import CompiledRedaction, ExchangeRedaction
from proxy.safety.event_shape import learn
from proxy.safety.events import StreamRewriter

OPENAI = PROTOCOLS["openai"]
ANTHROPIC = PROTOCOLS["anthropic"]
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
CONFIG = RedactionConfig(output=["email", "phone", "ssn", "credit_card", "iban", "api_key", "password"])


def _chunk(text: str, **extra: object) -> SSEEvent:
    choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    return SSEEvent(SSEEvent.from_json({**BASE, "choices": [choice], **extra}).raw)


def _anthropic(text: str) -> SSEEvent:
    payload = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return SSEEvent(SSEEvent.from_json(payload, event="content_block_delta").raw)


def _learned(protocol, event: SSEEvent):  # type: ignore[no-untyped-def]
    (slot,) = protocol.event_text_slots(event)
    return learn(protocol, event, slot, slot.get(event.json()))


@pytest.mark.parametrize("make", [_chunk, _anthropic])
@settings(max_examples=300, deadline=None)
@given(middle=st.binary(max_size=12) | st.text(max_size=12).map(str.encode))
def test_an_event_read_by_its_shape_reads_as_its_parse(make, middle):
    protocol = OPENAI if make is _chunk else ANTHROPIC
    shape = _learned(protocol, make("token "))
    assert shape is not None
    raw = make("token ").raw.replace(b'"token "', b'"' + middle + b'"')
    event = SSEEvent(raw)
    text = shape.text(raw)
    if text is None:
        return
    assert event.json() is not None
    assert protocol.event_text_slots(event) == [shape.slot]
    assert protocol.event_closes(event) == ()
    assert shape.slot.get(event.json()) == text


def test_what_the_shape_leaves_to_the_parse():
    shape = _learned(OPENAI, _chunk("token "))
    assert shape is not None
    for text in ['a "quoted" word', "back\\slash", "line\nbreak", "tab\there"]:
        assert shape.text(_chunk(text).raw) is None  # escaped in the literal
    assert shape.text(_chunk("é").raw) == "é"
    assert shape.text(_chunk("x", usage=None).raw) is None  # another member
    assert shape.text(_chunk("x").raw.replace(b"chatcmpl-1", b"chatcmpl-2")) is None
    assert shape.text(_chunk("x").raw.replace(b'"x"', b'"\xff"')) is None  # not UTF-8: orjson refuses the event
    assert shape.text(SSEEvent.build("[DONE]").raw) is None


def test_no_shape_where_the_literal_cannot_be_told_apart():
    # The same bytes elsewhere in the event, or the text only escaped (another string holds the bytes).
    assert _learned(OPENAI, _chunk("token ", note="token ")) is None
    escaped = _chunk("x").raw.replace(b'"content":"x"', b'"content":"\\u0074oken "')
    assert _learned(OPENAI, SSEEvent(escaped.replace(b'"model":"m"', b'"model":"token "'))) is None
    assert _learned(OPENAI, _chunk("")) is None
    assert _learned(OPENAI, _chunk('say "hi"')) is None


def _rewrite(events: list[SSEEvent], shapes: bool = True) -> list[bytes]:
    rewriter = StreamRewriter(OPENAI, ExchangeRedaction(CompiledRedaction.from_config(CONFIG), "tenant"))
    if not shapes:
        rewriter._learns = 0  # every event parsed, as before shapes
    out = [sent for event in events for sent in rewriter.event(SSEEvent(event.raw))]
    return [event.raw for event in out + rewriter.end()]


_PIECES = st.sampled_from(
    ["token ", "token", " is ", "password", "=", "Zq8vR2mK9wx", " 415", " 555 0132", "jane@corp.io", " the", "é",
     'a "q"', "\\", "\n", "sk-", "proj-", "A" * 20, " "]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=30), odd=st.sets(st.integers(0, 29), max_size=4))
def test_streams_send_the_same_events_read_by_shape_or_by_parse(pieces, odd):
    """Whatever the events carry, and with events of another shape among them (another id), the events sent are
    the same as when every event is parsed."""
    events = [_chunk(piece, id="other") if at in odd else _chunk(piece) for at, piece in enumerate(pieces)]
    finish = {**BASE, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    events += [SSEEvent.from_json(finish), SSEEvent.build("[DONE]")]
    assert _rewrite(events) == _rewrite(events, shapes=False)


def test_a_stream_of_one_shape_is_read_without_parsing():
    rewriter = StreamRewriter(OPENAI, ExchangeRedaction(CompiledRedaction.from_config(CONFIG), "tenant"))
    events = [_chunk(f"word{n} ") for n in range(6)]
    for event in events:
        rewriter.event(event)
    unparsed = SSEEvent(b"")._json
    assert events[1]._json is not unparsed  # the shape is learned from the second (the first opens the channel)
    assert all(event._json is unparsed for event in events[2:])
