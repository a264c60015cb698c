"""Asking OpenAI-style upstreams for stream usage, and removing it again byte for byte."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols import PROTOCOLS
from proxy.protocols.base import Usage
from proxy.protocols.sse import SSEEvent

OPENAI = PROTOCOLS["openai"]
ANTHROPIC = PROTOCOLS["anthropic"]


def frame(payload: dict) -> SSEEvent:
    return SSEEvent(b"data: " + orjson.dumps(payload) + b"\n\n")


def test_ask_only_for_streamed_chat_and_completions_that_did_not_ask():
    chat = {"model": "m", "messages": [], "stream": True}
    assert OPENAI.ask_stream_usage(chat) == {**chat, "stream_options": {"include_usage": True}}
    kept = {**chat, "stream_options": {"include_obfuscation": False, "include_usage": False}}
    assert OPENAI.ask_stream_usage(kept)["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert OPENAI.ask_stream_usage({"model": "m", "prompt": "p", "stream": True}) is not None
    assert OPENAI.ask_stream_usage({**chat, "stream_options": {"include_usage": True}}) is None
    assert OPENAI.ask_stream_usage({**chat, "stream": False}) is None
    assert OPENAI.ask_stream_usage({"model": "m", "input": "x", "stream": True}) is None  # Responses: always has it
    assert ANTHROPIC.ask_stream_usage({"model": "m", "messages": [], "stream": True}) is None


def test_strip_drops_the_usage_chunk_and_cuts_usage_null_from_the_raw_bytes():
    usage_chunk = frame({"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    assert OPENAI.strip_stream_usage(usage_chunk) is None
    chunk = SSEEvent(b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n')
    assert OPENAI.strip_stream_usage(chunk).raw == b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}]}\n\n'
    first = SSEEvent(b'data: {"usage": null, "id":"c"}\n\n')
    assert OPENAI.strip_stream_usage(first).raw == b'data: {"id":"c"}\n\n'
    done = SSEEvent(b"data: [DONE]\n\n")
    assert OPENAI.strip_stream_usage(done) is done


@given(st.text())
def test_usage_null_inside_a_string_is_never_touched(text):
    payload = {"id": "c", "choices": [{"delta": {"content": f'{text} "usage":null, {text}'}}], "usage": None}
    stripped = OPENAI.strip_stream_usage(frame(payload))
    expected = {k: v for k, v in payload.items() if k != "usage"}
    assert stripped.raw == frame(expected).raw


STREAM_EVENTS = [
    frame({"id": "c", "choices": [{"delta": {"content": "hi"}}], "usage": None}),
    frame({"id": "c", "choices": [{"delta": {"content": "hi"}}]}),
    frame({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
    frame({"id": "c", "choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 3}}),
    SSEEvent(b'data: {"usage" : null , "id":"c"}\n\n'),
    SSEEvent(b"data: [DONE]\n\n"),
    SSEEvent(
        b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
        b'{"input_tokens":6,"output_tokens":4},"model":"m"}}\n\n'
    ),
    SSEEvent(b'event: response.created\ndata: {"type":"response.created","response":{"usage":null}}\n\n'),
]


def test_stream_usage_settles_on_bytes_what_usage_and_strip_give_apart():
    for event in STREAM_EVENTS:
        for strip in (False, True):
            usage, kept = OPENAI.stream_usage(event, strip)
            expected = OPENAI.strip_stream_usage(event) if strip else event
            assert usage == OPENAI.event_usage(SSEEvent(event.raw)), event
            assert (kept.raw if kept else None) == (expected.raw if expected else None), event


def test_continuous_usage_on_content_chunks_is_removed_by_reserialising():
    chunk = frame({"id": "c", "choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 3}})
    assert orjson.loads(OPENAI.strip_stream_usage(chunk).data) == {"id": "c", "choices": [{"delta": {"content": "x"}}]}


def test_usage_is_normalised_to_disjoint_kinds():
    chat = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 5}}  # fmt: skip
    assert OPENAI.body_usage({"usage": chat}) == Usage(40, 20, 60, None, 5)
    responses = {"input_tokens": 10, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 4}}
    assert OPENAI.body_usage({"usage": responses}) == Usage(6, 3, 4, None, None)
    assert OPENAI.body_usage({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == Usage(7, 0)  # embeddings
    claude = {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50}
    usage = ANTHROPIC.body_usage({"usage": claude})
    assert usage == Usage(5, 9, 100, 50) and usage.total_tokens == 164


def test_served_model_comes_from_the_events_that_carry_it():
    assert OPENAI.event_model(frame({"model": "gpt-4o-2024-08-06", "choices": []})) == "gpt-4o-2024-08-06"
    created = frame({"type": "response.created", "response": {"model": "gpt-4.1"}})
    assert OPENAI.event_model(created) == "gpt-4.1"
    start = SSEEvent.from_json({"type": "message_start", "message": {"model": "claude-x"}}, event="message_start")
    assert ANTHROPIC.event_model(SSEEvent(start.raw)) == "claude-x"
