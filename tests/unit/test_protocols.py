"""Protocol adapters: error shapes SDKs understand, and what stages read from bodies and events."""

from __future__ import annotations

import orjson
import pytest

from proxy import errors
from proxy.protocols import PROTOCOLS
from proxy.protocols.base import MAX_REPORTED_TOKENS, Usage
from proxy.protocols.sse import SSEDecoder, SSEEvent

OPENAI = PROTOCOLS["openai"]
ANTHROPIC = PROTOCOLS["anthropic"]
HTTP = PROTOCOLS["http"]
MCP = PROTOCOLS["mcp"]

# (class, status, OpenAI type, OpenAI default code, Anthropic type)
ERRORS = [
    (errors.BadRequest, 400, "invalid_request_error", None, "invalid_request_error"),
    (errors.MalformedRequest, 400, "invalid_request_error", None, "invalid_request_error"),
    (errors.RequestTimeout, 408, "invalid_request_error", None, "invalid_request_error"),
    (errors.Unauthorized, 401, "invalid_request_error", "invalid_api_key", "authentication_error"),
    (errors.Forbidden, 403, "invalid_request_error", "permission_denied", "permission_error"),
    (errors.NotFound, 404, "invalid_request_error", "not_found", "not_found_error"),
    (errors.PayloadTooLarge, 413, "invalid_request_error", "request_too_large", "request_too_large"),
    (errors.UnsupportedMediaType, 415, "invalid_request_error", None, "invalid_request_error"),
    (errors.RateLimited, 429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    (errors.QuotaExceeded, 429, "insufficient_quota", "insufficient_quota", "rate_limit_error"),
    (errors.InternalError, 500, "server_error", None, "api_error"),
    (errors.UpstreamUnreachable, 502, "server_error", "upstream_error", "api_error"),
    (errors.ServiceUnavailable, 503, "server_error", "service_unavailable", "overloaded_error"),
    (errors.UpstreamTimeout, 504, "server_error", "upstream_timeout", "timeout_error"),
    (errors.UpstreamStreamBroken, 502, "server_error", "upstream_error", "api_error"),
    (errors.UpstreamProtocolError, 502, "server_error", "upstream_bad_response", "api_error"),
    (errors.UpstreamLimitExceeded, 502, "server_error", "upstream_response_too_large", "api_error"),
    (errors.ShuttingDown, 503, "server_error", "service_unavailable", "overloaded_error"),
    (errors.ProxyError, 500, "server_error", None, "api_error"),
]


def test_every_error_class_is_covered():
    def subclasses(cls):
        return {cls}.union(*(subclasses(c) for c in cls.__subclasses__()))

    assert subclasses(errors.ProxyError) == {row[0] for row in ERRORS}


@pytest.mark.parametrize(("cls", "status", "openai_type", "openai_code", "anthropic_type"), ERRORS)
def test_error_shapes(cls, status, openai_type, openai_code, anthropic_type):
    err = cls("something went wrong")
    assert err.status == status and str(err) == "something went wrong"
    assert orjson.loads(OPENAI.error_body(err)) == {
        "error": {"message": "something went wrong", "type": openai_type, "param": None, "code": openai_code}
    }
    assert orjson.loads(ANTHROPIC.error_body(err)) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "something went wrong"},
    }
    mcp = orjson.loads(MCP.error_body(err))
    assert mcp["jsonrpc"] == "2.0" and mcp["id"] is None and mcp["error"]["message"] == "something went wrong"
    assert isinstance(mcp["error"]["code"], int)
    assert orjson.loads(HTTP.error_body(err))["error"]["message"] == "something went wrong"


def test_an_explicit_code_wins_over_the_default():
    err = errors.Unauthorized("no key", code="missing_api_key")
    assert orjson.loads(OPENAI.error_body(err))["error"]["code"] == "missing_api_key"
    assert errors.RateLimited("slow down", headers={"retry-after": "3"}).headers == {"retry-after": "3"}


def test_sources_and_retryability():
    assert errors.BadRequest.source == "caller" and not errors.BadRequest.retryable
    assert errors.UpstreamUnreachable.retryable and errors.UpstreamTimeout.retryable
    assert errors.ServiceUnavailable.retryable
    assert not errors.UpstreamStreamBroken.retryable  # bytes already went to the caller


def _decoded(event: SSEEvent) -> SSEEvent:
    """The event as a client would see it on the wire."""
    [parsed] = SSEDecoder().feed(event.raw)
    return parsed


def test_openai_stream_error_is_a_data_event_with_an_error_key():
    event = _decoded(OPENAI.stream_error_event(errors.UpstreamStreamBroken("upstream went away")))
    assert event.event is None  # the SDKs only look for `error` in unnamed events
    assert event.json()["error"]["message"] == "upstream went away"
    assert event.json()["error"]["type"] == "server_error"


def test_anthropic_stream_error_is_an_error_event():
    event = _decoded(ANTHROPIC.stream_error_event(errors.UpstreamTimeout("too slow")))
    assert event.event == "error"
    assert event.json() == {"type": "error", "error": {"type": "timeout_error", "message": "too slow"}}


def test_http_stream_error_is_named():
    event = _decoded(HTTP.stream_error_event(errors.InternalError("x")))
    assert event.event == "error" and "error" in event.json()


# ---- requests ---------------------------------------------------------------------------

CHAT_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        "not a message",
    ],
    "stream": True,
    "temperature": 0.2,
}  # fmt: skip


def test_chat_completion_request():
    assert OPENAI.request_model(CHAT_REQUEST) == "gpt-4o-mini"
    messages = OPENAI.request_messages(CHAT_REQUEST)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert OPENAI.is_stream_request(CHAT_REQUEST)
    assert not OPENAI.is_stream_request({**CHAT_REQUEST, "stream": "yes"})
    assert OPENAI.system_prompt(CHAT_REQUEST) is None
    assert OPENAI.request_input_text(CHAT_REQUEST) == ""


def test_legacy_completion_and_embeddings_requests():
    legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}
    assert OPENAI.request_model(legacy) == "gpt-3.5-turbo-instruct"
    assert OPENAI.request_messages(legacy) == []
    assert OPENAI.request_input_text(legacy) == "Say this is a test"
    assert OPENAI.request_input_text({"prompt": ["one", "two", 3]}) == "one\ntwo"
    embeddings = {"model": "text-embedding-3-small", "input": ["alpha", "beta"], "encoding_format": "float"}
    assert OPENAI.request_input_text(embeddings) == "alpha\nbeta"
    assert OPENAI.request_input_text({"input": [[1, 2, 3]]}) == ""  # token arrays carry no text


def test_responses_api_request():
    simple = {"model": "gpt-4.1", "input": "Tell me a story", "instructions": "Talk like a pirate."}
    assert OPENAI.request_messages(simple) == [{"role": "user", "content": "Tell me a story"}]
    assert OPENAI.system_prompt(simple) == "Talk like a pirate."
    items = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call_output", "call_id": "c", "output": "1"},
        ],
    }
    assert len(OPENAI.request_messages(items)) == 2
    assert OPENAI.system_prompt({"instructions": None}) is None


def test_anthropic_request():
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        ],
        "stream": True,
    }
    assert ANTHROPIC.request_model(body) == "claude-sonnet-4-5"
    assert [m["role"] for m in ANTHROPIC.request_messages(body)] == ["user", "assistant", "user"]
    assert ANTHROPIC.system_prompt(body) == body["system"]
    assert ANTHROPIC.system_prompt({"system": "plain"}) == "plain"
    assert ANTHROPIC.is_stream_request(body)


@pytest.mark.parametrize("protocol", [OPENAI, ANTHROPIC, HTTP, MCP], ids=lambda p: p.name)
@pytest.mark.parametrize(
    "body",
    [None, [], "text", 3, {"model": 5, "messages": "x", "input": 7, "stream": 1}, {"choices": ["x"]},
     {"choices": "ab"}, {"choices": {"a": 1}}, {"choices": [{"message": "x"}]}, {"output": "abc"},
     {"output": [{"content": "xy"}]}, {"content": "abc"}, {"content": {"type": "text"}}],
)  # fmt: skip
def test_odd_bodies_never_raise(protocol, body):
    assert protocol.request_model(body) is None
    assert protocol.request_messages(body) == []
    assert protocol.request_input_text(body) == ""
    assert protocol.body_text(body) == ""
    assert protocol.body_usage(body) is None
    assert not protocol.is_stream_request(body)


# ---- whole responses ---------------------------------------------------------------------


def test_chat_completion_response():
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0}},
    }  # fmt: skip
    assert OPENAI.response_model(body) == "gpt-4o-mini-2024-07-18"
    assert OPENAI.body_text(body) == "Hello there"
    usage = OPENAI.body_usage(body)
    assert usage == Usage(input_tokens=176, output_tokens=30, cached_input_tokens=1024, reasoning_tokens=12)
    assert usage.total_tokens == 1230 and usage.known


def test_tool_call_response_has_no_text():
    body = {"choices": [{"message": {"role": "assistant", "content": None,
                                     "tool_calls": [{"id": "c", "function": {"name": "f"}}]}}]}  # fmt: skip
    assert OPENAI.body_text(body) == ""


def test_legacy_completion_response():
    body = {"object": "text_completion", "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "\n\nThis is a test", "index": 0, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}  # fmt: skip
    assert OPENAI.body_text(body) == "\n\nThis is a test"
    assert OPENAI.body_usage(body) == Usage(5, 7)


def test_responses_api_response():
    body = {
        "id": "resp_1", "object": "response", "model": "gpt-4.1-2025-04-14", "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Arr, ", "annotations": []},
                         {"type": "output_text", "text": "matey.", "annotations": []}]},
        ],
        "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
                  "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 123},
    }  # fmt: skip
    assert OPENAI.body_text(body) == "Arr, matey."
    expected = Usage(input_tokens=36, output_tokens=87, cached_input_tokens=0, reasoning_tokens=64)
    assert OPENAI.body_usage(body) == expected


def test_embeddings_usage_has_input_only():
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
            "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}  # fmt: skip
    assert OPENAI.body_usage(body) == Usage(input_tokens=8, output_tokens=0)
    assert OPENAI.body_text(body) == ""


def test_anthropic_message_response():
    body = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Hi! "},
                    {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}},
                    {"type": "text", "text": "Done."}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
                  "output_tokens": 40},
    }  # fmt: skip
    assert ANTHROPIC.response_model(body) == "claude-sonnet-4-5-20250929"
    assert ANTHROPIC.body_text(body) == "Hi! Done."
    assert ANTHROPIC.body_usage(body) == Usage(12, 40, 2000, 100)
    assert ANTHROPIC.body_usage(body).total_tokens == 2152


def test_missing_or_odd_usage():
    assert OPENAI.body_usage({"choices": []}) is None
    assert OPENAI.body_usage({"usage": None}) is None
    odd = OPENAI.body_usage({"usage": {"prompt_tokens": True, "completion_tokens": "3", "prompt_tokens_details": None}})
    assert odd == Usage(rejected=("input_tokens", "output_tokens")) and not odd.known
    assert ANTHROPIC.body_usage({"usage": "x"}) is None


@pytest.mark.parametrize("bad", [2**64 - 1, MAX_REPORTED_TOKENS + 1, -5, 12.5, 12.0, "12", float("nan"), [1], {}])
def test_unbelievable_counts_are_rejected_not_reported(bad):
    usage = OPENAI.body_usage({"usage": {"prompt_tokens": bad, "completion_tokens": 7}})
    assert usage == Usage(output_tokens=7, rejected=("input_tokens",))
    usage = ANTHROPIC.body_usage({"usage": {"input_tokens": 3, "output_tokens": bad, "cache_read_input_tokens": bad}})
    assert usage == Usage(input_tokens=3, rejected=("output_tokens", "cached_input_tokens"))


def test_a_rejected_later_report_clears_the_placeholder():
    usage = Usage(input_tokens=10, output_tokens=1)
    usage.update(Usage(rejected=("output_tokens",)))
    assert usage.output_tokens is None and usage.input_tokens == 10 and usage.rejected == ("output_tokens",)
    assert OPENAI.body_usage({"usage": {"prompt_tokens": MAX_REPORTED_TOKENS}}).input_tokens == MAX_REPORTED_TOKENS


# ---- streamed events -----------------------------------------------------------------------


def frame(payload: dict, event: str | None = None) -> SSEEvent:
    """A JSON event as it arrives from the wire (not pre-parsed)."""
    return SSEEvent(SSEEvent.from_json(payload, event).raw)


def test_chat_completion_stream_events():
    role = frame({"object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None})  # fmt: skip
    text = frame({"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}], "usage": None})
    tool = frame({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]})
    stop = frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = frame({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})
    done = SSEEvent(b"data: [DONE]\n\n")
    assert [OPENAI.event_text(e) for e in (role, text, tool, stop, usage, done)] == ["", "Hel", None, None, None, None]
    assert [OPENAI.event_usage(e) for e in (role, text, stop, done)] == [None, None, None, None]
    assert OPENAI.event_usage(usage) == Usage(10, 2)
    assert OPENAI.event_model(role) == "gpt-4o-mini-2024-07-18" and OPENAI.event_model(done) is None
    assert OPENAI.is_terminal_event(done) and not OPENAI.is_terminal_event(usage)


def test_legacy_completion_stream_events():
    chunk = frame({"object": "text_completion", "choices": [{"text": " world", "index": 0}]})
    assert OPENAI.event_text(chunk) == " world"


def test_responses_api_stream_events():
    created = frame({"type": "response.created", "response": {"model": "gpt-4.1", "usage": None}}, "response.created")
    delta = frame({"type": "response.output_text.delta", "item_id": "m", "delta": "Arr"}, "response.output_text.delta")
    done = frame({"type": "response.output_text.done", "text": "Arr"}, "response.output_text.done")
    completed = frame(
        {"type": "response.completed",
         "response": {"model": "gpt-4.1", "usage": {"input_tokens": 9, "output_tokens": 4,
                                                    "input_tokens_details": {"cached_tokens": 3}}}},
        "response.completed",
    )  # fmt: skip
    assert [OPENAI.event_text(e) for e in (created, delta, done, completed)] == [None, "Arr", None, None]
    assert OPENAI.event_usage(created) is None
    assert OPENAI.event_usage(completed) == Usage(6, 4, 3)
    assert OPENAI.event_model(created) == "gpt-4.1"
    assert OPENAI.is_terminal_event(completed) and not OPENAI.is_terminal_event(delta)


def test_anthropic_stream_usage_merges_start_and_delta():
    start = frame({"type": "message_start",
                   "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 472, "output_tokens": 2,
                                                                      "cache_read_input_tokens": 1000,
                                                                      "cache_creation_input_tokens": 0}}},
                  "message_start")  # fmt: skip
    text = frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}},
                 "content_block_delta")  # fmt: skip
    tool = frame({"type": "content_block_delta", "index": 1,
                  "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}, "content_block_delta")  # fmt: skip
    ping = frame({"type": "ping"}, "ping")
    delta = frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 89}},
                  "message_delta")  # fmt: skip
    stop = frame({"type": "message_stop"}, "message_stop")
    events = [start, text, tool, ping, delta, stop]
    assert [ANTHROPIC.event_text(e) for e in events] == [None, "Okay", None, None, None, None]
    total = Usage()
    for event in events:
        if (usage := ANTHROPIC.event_usage(event)) is not None:
            total.update(usage)
    assert total == Usage(input_tokens=472, output_tokens=89, cached_input_tokens=1000, cache_write_tokens=0)
    assert ANTHROPIC.event_model(start) == "claude-haiku-4-5" and ANTHROPIC.event_model(delta) is None
    assert [ANTHROPIC.is_terminal_event(e) for e in events] == [False] * 5 + [True]


def test_usage_update_keeps_what_later_reports_leave_out():
    usage = Usage(input_tokens=5, output_tokens=1)
    usage.update(Usage(output_tokens=9, reasoning_tokens=2))
    assert usage == Usage(input_tokens=5, output_tokens=9, reasoning_tokens=2)
    usage.update(Usage())
    assert usage == Usage(input_tokens=5, output_tokens=9, reasoning_tokens=2)


@pytest.mark.parametrize("protocol", [OPENAI, ANTHROPIC], ids=lambda p: p.name)
@pytest.mark.parametrize(
    "raw",
    [b": ping\n\n", b"data: [DONE]\n\n", b"data: not json\n\n", b"data: [1,2]\n\n", b'data: {"choices":"x"}\n\n',
     b'data: {"choices":[1]}\n\n', b"event: content_block_delta\ndata: [1]\n\n", b"event: message_start\ndata: 1\n\n",
     b'event: message_delta\ndata: {"usage": 5}\n\n', b'data: {"type":"response.completed","response":[]}\n\n',
     b'data: {"choices":{"a":1}}\n\n', b'data: {"choices":"ab"}\n\n',
     b'event: content_block_delta\ndata: {"delta":"x"}\n\n'],
)  # fmt: skip
def test_odd_events_never_raise(protocol, raw):
    event = SSEEvent(raw)
    assert protocol.event_text(event) is None
    assert protocol.event_usage(event) is None
    assert protocol.event_model(event) is None
