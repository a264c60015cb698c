"""Streams assembled into whole answers and whole answers streamed again; anything not understood is not kept."""

from __future__ import annotations

import orjson
import pytest

from proxy.protocols import PROTOCOLS
from proxy.protocols.sse import SSEDecoder, SSEEvent

OPENAI, ANTHROPIC = PROTOCOLS["openai"], PROTOCOLS["anthropic"]


def events(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder(1 << 20)
    return [*decoder.feed(raw), *decoder.flush()]


def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return SSEEvent.from_json(payload).raw


CHAT_STREAM = (
    chunk({"role": "assistant", "content": ""})
    + chunk({"content": "Hel"})
    + chunk({"content": "lo"})
    + chunk(
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
    )
    + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
    + chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
    + chunk({}, "tool_calls")
    + b"data: [DONE]\n\n"
)


def assemble(protocol, raw: bytes, usage: dict | None = None):
    assembler = protocol.stream_assembler()
    for event in events(raw):
        assembler.feed(event)
    return assembler.body(usage or {"input_tokens": 5, "output_tokens": 3})


def test_openai_chat_stream_assembles_into_a_chat_completion():
    body = assemble(OPENAI, CHAT_STREAM)
    message = body["choices"][0]["message"]
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "Hello"
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_the_synthesised_stream_assembles_back_into_the_same_answer():
    body = assemble(OPENAI, CHAT_STREAM)
    again = assemble(OPENAI, OPENAI.cached_stream(body, include_usage=True), {})
    assert again["choices"] == body["choices"] and again["usage"] == body["usage"]
    assert again["id"] != body["id"]


@pytest.mark.parametrize(
    "raw",
    [
        CHAT_STREAM[: -len(b"data: [DONE]\n\n")],  # cut before the end
        CHAT_STREAM.replace(b"data: [DONE]", b'data: {"error": {"message": "broke"}}\n\ndata: [DONE]'),
        chunk({"content": "x"}, logprobs={"content": []}) + chunk({}, "stop") + b"data: [DONE]\n\n",
        chunk({"audio": {"id": "a"}}) + chunk({}, "stop") + b"data: [DONE]\n\n",
        chunk({"content": "x"}) + b"data: [DONE]\n\n",  # no finish reason
        b'data: {"type": "response.output_text.delta", "delta": "x"}\n\ndata: [DONE]\n\n',  # another endpoint
    ],
    ids=["cut", "error_event", "logprobs", "unknown_delta", "unfinished", "responses_api"],
)
def test_openai_streams_that_are_not_whole_answers_are_not_kept(raw):
    assert assemble(OPENAI, raw) is None


def anthropic_stream(*extra: dict) -> bytes:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": []}
    message.update(stop_reason=None, stop_sequence=None, usage={"input_tokens": 9, "output_tokens": 1})
    items = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "there"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
        {"type": "content_block_stop", "index": 1},
        *extra,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    ]
    return b"".join(SSEEvent.from_json(item, item["type"]).raw for item in items)


def test_anthropic_stream_assembles_and_streams_back():
    body = assemble(ANTHROPIC, anthropic_stream())
    assert body["content"] == [
        {"type": "text", "text": "Hi there"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Paris"}},
    ]
    assert body["stop_reason"] == "tool_use" and body["usage"] == {"input_tokens": 9, "output_tokens": 12}
    again = assemble(ANTHROPIC, ANTHROPIC.cached_stream(body, include_usage=True))
    assert again["content"] == body["content"] and again["usage"] == body["usage"]
    assert again["id"].startswith("msg_") and again["id"] != body["id"]


@pytest.mark.parametrize(
    "raw",
    [
        anthropic_stream()[: -len(SSEEvent.from_json({"type": "message_stop"}, "message_stop").raw)],
        anthropic_stream({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
        anthropic_stream({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}}),
    ],
    ids=["cut", "error_event", "unknown_delta"],
)
def test_anthropic_streams_that_are_not_whole_answers_are_not_kept(raw):
    assert assemble(ANTHROPIC, raw) is None


def test_bodies_that_cannot_be_streamed_are_not():
    assert OPENAI.cached_stream({"object": "list", "data": []}, include_usage=False) is None  # embeddings
    cited = {"type": "message", "content": [{"type": "text", "text": "x", "citations": [{"cited_text": "y"}]}]}
    assert ANTHROPIC.cached_stream(cited, include_usage=True) is None


def test_a_served_body_has_a_fresh_id_and_time_but_the_same_answer():
    body = {"id": "chatcmpl-abc", "created": 1, "object": "chat.completion", "choices": [{"index": 0}]}
    served = orjson.loads(OPENAI.cached_body(body))
    assert served["id"].startswith("chatcmpl-") and served["id"] != body["id"] and served["created"] > 1
    assert served["choices"] == body["choices"]


def test_cache_fields_leave_out_what_does_not_change_the_answer():
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {}, "user": "u", "temperature": 0}
    assert OPENAI.cache_fields(body) == {"model": "m", "messages": [], "temperature": 0}
    assert ANTHROPIC.cache_fields({"model": "m", "metadata": {"user_id": "u"}, "system": "s"}) == {
        "model": "m",
        "system": "s",
    }
    assert PROTOCOLS["http"].cache_fields({"a": 1}) is None


def test_the_question_is_the_final_user_turn_when_it_is_text_only():
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    assert OPENAI.cache_question(body) == ({"model": "m", "messages": [{"role": "user", "content": "a"}]}, "b")
    blocks = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]}
    assert ANTHROPIC.cache_question(blocks) == ({"messages": []}, "x\ny")
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}
    assert OPENAI.cache_question(image) is None
    assert OPENAI.cache_question({"messages": [{"role": "tool", "content": "r", "tool_call_id": "1"}]}) is None


@pytest.mark.parametrize(("body", "expected"), [({}, 1.0), ({"temperature": 0}, 0.0), ({"temperature": "hot"}, 1.0)])
def test_temperature_defaults_to_the_providers_default(body, expected):
    assert OPENAI.request_temperature(body) == expected
