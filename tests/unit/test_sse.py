"""SSE framing: whole events out of arbitrarily split bytes, and events built back."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocols.sse import SSEDecoder, SSEEvent, encode

# Recorded shapes of real streams (ids shortened): OpenAI chat completions with usage, then Anthropic messages.
OPENAI_STREAM = (
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06",'
    b'"service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06",'
    b'"choices":[{"index":0,"delta":{"content":"Hello \xe2\x80\x94 na\xc3\xafve \xf0\x9f\x98\x80"},"logprobs":null,'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06",'
    b'"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,'
    b'"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],'
    b'"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,'
    b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"! \xc3\xa9\xf0\x9f\x91\x8b"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":15}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)
STREAMS = {"openai": OPENAI_STREAM, "anthropic": ANTHROPIC_STREAM}


def decode(*chunks: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    events += decoder.flush()
    return [e.raw for e in events]


def crlf(stream: bytes) -> bytes:
    return stream.replace(b"\n", b"\r\n")


def cr(stream: bytes) -> bytes:
    return stream.replace(b"\n", b"\r")


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("endings", [bytes, crlf, cr], ids=["lf", "crlf", "cr"])
def test_split_at_every_byte_gives_the_same_events(name, endings):
    stream = endings(STREAMS[name])
    whole = decode(stream)
    assert whole == [e.raw for e in SSEDecoder().feed(STREAMS[name])]  # normalised to the LF form
    for cut in range(len(stream) + 1):
        assert decode(stream[:cut], stream[cut:]) == whole, cut


@pytest.mark.parametrize("name", STREAMS)
def test_byte_by_byte(name):
    stream = crlf(STREAMS[name])
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == decode(STREAMS[name])


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(STREAMS)),
    endings=st.sampled_from([bytes, crlf, cr]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_random_splits_give_the_same_events(name, endings, cuts):
    stream = endings(STREAMS[name])
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode(*chunks) == decode(STREAMS[name])


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("endings", [bytes, crlf, cr], ids=["lf", "crlf", "cr"])
def test_a_limited_feed_keeps_the_rest_for_an_empty_feed(name, endings):
    """How the handler sends the first event before decoding the rest of its chunk."""
    stream = endings(STREAMS[name])
    decoder = SSEDecoder()
    first = decoder.feed(stream, limit=1)
    rest = decoder.feed(b"")
    assert len(first) == 1
    assert [e.raw for e in first + rest + decoder.flush()] == decode(STREAMS[name])
    assert decoder.feed(b"") == []


def test_the_raw_bytes_of_an_lf_stream_pass_unchanged():
    for stream in STREAMS.values():
        assert encode([SSEEvent(raw) for raw in decode(stream)]) == stream


def test_events_are_parsed_only_into_what_they_carry():
    events = [SSEEvent(raw) for raw in decode(ANTHROPIC_STREAM)]
    assert [e.event for e in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[3].json()["delta"]["text"] == "Hello"
    assert events[4].json()["delta"]["text"] == "! \u00e9\U0001f44b"
    openai = [SSEEvent(raw) for raw in decode(OPENAI_STREAM)]
    assert all(e.event is None for e in openai)
    assert openai[-1].data == "[DONE]" and openai[-1].json() is None
    assert openai[-2].json()["usage"]["total_tokens"] == 29


def test_cr_at_a_chunk_end_then_lf_is_one_line_ending():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    [event] = decoder.feed(b"\n\r")  # CR LF, then a CR: the blank line is already complete
    assert event.raw == b"data: a\n\n"
    assert decoder.feed(b"\ndata: b\r\n") == []
    assert decoder.pending
    [last] = decoder.feed(b"\r\n")
    assert last.raw == b"data: b\n\n" and not decoder.pending


def test_an_event_ended_by_lone_crs_is_emitted_without_waiting_for_more_bytes():
    decoder = SSEDecoder()
    [event] = decoder.feed(b"data: a\r\r")
    assert event.data == "a"
    # A LF right after the CR that ended the event belongs to that CR, not to the next event.
    [following] = decoder.feed(b"\ndata: b\r\n\r\n")
    assert following.raw == b"data: b\n\n"
    assert decoder.flush() == []


def test_mixed_line_endings_in_one_stream():
    assert decode(b"data: a\r\n\ndata: b\r\rdata: c\n\r\n") == [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n"]


def test_comments_and_pings_are_events_without_data():
    events = [SSEEvent(raw) for raw in decode(b": ping\n\ndata: x\n: note inside\n\n")]
    assert events[0].raw == b": ping\n\n" and events[0].data is None and events[0].event is None
    assert events[0].json() is None
    assert events[1].data == "x"


def test_multi_line_data_joins_with_newlines():
    [event] = [SSEEvent(raw) for raw in decode(b'event: delta\ndata: {"a":\ndata:  1}\ndata\n\n')]
    assert event.event == "delta"
    assert event.data == '{"a":\n 1}\n'  # one leading space is dropped; a bare `data` field adds an empty line
    assert event.json() == {"a": 1}


def test_field_without_space_and_unknown_fields():
    event = SSEEvent(b"event:message_stop\nid: 7\nretry: 100\ndata:{}\n\n")
    assert event.event == "message_stop" and event.data == "{}" and event.json() == {}


def test_flush_returns_an_unterminated_final_event():
    decoder = SSEDecoder()
    assert [e.raw for e in decoder.feed(b"data: 1\n\ndata: [DONE]")] == [b"data: 1\n\n"]
    assert decoder.pending
    [last] = decoder.flush()
    assert last.raw == b"data: [DONE]\n\n" and last.data == "[DONE]"
    assert not decoder.pending and decoder.flush() == []


@pytest.mark.parametrize("tail", [b"data: x\n", b"data: x\r", b"data: x\r\n", b"data: x"])
def test_flush_after_a_partial_terminator(tail):
    decoder = SSEDecoder()
    assert decoder.feed(tail) == []
    assert decoder.pending
    assert [e.raw for e in decoder.flush()] == [b"data: x\n\n"]


@pytest.mark.parametrize("rest", [b"", b"\n", b"\r", b"\r\n", b"\n\n\n"])
def test_nothing_pending_after_blank_lines(rest):
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\n" + rest)
    assert not decoder.pending
    assert decoder.flush() == []


def test_build_and_from_json_round_trip():
    built = SSEEvent.build("line one\nline two", event="note")
    assert built.raw == b"event: note\ndata: line one\ndata: line two\n\n"
    parsed = SSEEvent(built.raw)
    assert (parsed.event, parsed.data) == ("note", "line one\nline two")
    assert SSEEvent.build(b"[DONE]").raw == b"data: [DONE]\n\n"
    payload = {"type": "error", "error": {"type": "api_error", "message": "a\nb \u00e9"}}
    event = SSEEvent.from_json(payload, event="error")
    assert event.json() is payload
    reparsed = SSEEvent(event.raw)
    assert reparsed.event == "error" and reparsed.json() == payload
    assert decode(event.raw) == [event.raw]


def test_json_is_none_for_done_and_for_non_json():
    assert SSEEvent(b"data: [DONE]\n\n").json() is None
    assert SSEEvent(b"data: not json {\n\n").json() is None
    assert SSEEvent(b"data: \n\n").json() is None
    assert SSEEvent(b"event: ping\n\n").json() is None
    assert SSEEvent(b"data: [1, 2]\n\n").json() == [1, 2]


def test_invalid_utf8_does_not_raise():
    event = SSEEvent(b"data: \xff\xfe\n\n")
    assert event.data == "\ufffd\ufffd" and event.json() is None


def test_a_large_event_split_into_many_chunks():
    payload = {"choices": [{"delta": {"content": "x" * 200_000}}]}
    raw = b"data: " + orjson.dumps(payload) + b"\n\n"
    chunks = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
    [event] = [SSEEvent(r) for r in decode(*chunks)]
    assert event.json() == payload


def test_an_event_past_its_bound_is_refused_however_it_is_cut():
    from proxy.errors import UpstreamLimitExceeded

    for piece in (1, 7, 1024):
        decoder = SSEDecoder(max_event_bytes=4096)
        stream = b"data: " + b"x" * 5000
        with pytest.raises(UpstreamLimitExceeded) as caught:
            for at in range(0, len(stream), piece):
                decoder.feed(stream[at : at + piece])
        assert caught.value.code == "upstream_event_too_large"


def test_events_up_to_the_bound_pass_and_the_bound_is_per_event():
    decoder = SSEDecoder(max_event_bytes=64)
    event = b"data: " + b"y" * 50 + b"\n\n"
    events = [e for _ in range(100) for e in decoder.feed(event[:30]) + decoder.feed(event[30:])]
    assert [e.raw for e in events] == [event] * 100


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(payload=JSON_VALUES, name=st.sampled_from([None, "message", "content_block_delta"]))
def test_an_event_from_json_is_framed_as_built_and_reads_back(payload, name):
    event = SSEEvent.from_json(payload, event=name)
    assert event.raw == SSEEvent.build(orjson.dumps(payload), name).raw
    parsed = SSEEvent(event.raw)
    assert parsed.event == name and parsed.json() == payload


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        st.builds(lambda v: orjson.dumps(v), st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3)),
        st.sampled_from([b'{"a":"\xff"}', b"{", b"{}x", b"[DONE]", b"", b'{"a":1} ']),
    )
)
def test_a_one_line_event_reads_as_the_same_event_read_line_by_line(data):
    raw = b"data: " + data + b"\n\n"
    fast, slow = SSEEvent(raw), SSEEvent(b": a comment first\n" + raw)  # the comment takes the line-by-line way
    assert (fast.json(), fast.data, fast.event) == (slow.json(), slow.data, slow.event)
    again = SSEEvent(raw)  # data first, then the parse
    assert (again.data, again.json()) == (slow.data, slow.json())
